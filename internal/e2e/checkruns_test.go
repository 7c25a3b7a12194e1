package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// checkRunLife is what fakegithub saw of one check run: its states in
// order ("queued", "in_progress", "completed/success"), and how it ends.
type checkRunLife struct {
	states []string
	posts  int
	last   fakegithub.CheckRun
}

// checkRunsOf returns each check run name's life at commit.
func checkRunsOf(gh *fakegithub.Server, commit string) map[string]*checkRunLife {
	out := map[string]*checkRunLife{}
	for _, ev := range gh.CheckRunEvents() {
		if ev.Run.HeadSHA != commit {
			continue
		}
		l := out[ev.Run.Name]
		if l == nil {
			l = &checkRunLife{}
			out[ev.Run.Name] = l
		}
		st := ev.Run.Status
		if ev.Run.Conclusion != "" {
			st += "/" + ev.Run.Conclusion
		}
		l.states = append(l.states, st)
		if ev.Method == http.MethodPost {
			l.posts++
		}
		l.last = ev.Run
	}
	return out
}

func (l *checkRunLife) String() string { return fmt.Sprintf("%v (%d created)", l.states, l.posts) }

// waitCheckRuns waits until each name in final is completed with its
// conclusion at commit, and checks each one's life: created once, its
// states in order (queued, in_progress, completed), completed last.
func waitCheckRuns(t *testing.T, gh *fakegithub.Server, commit string, final map[string]string) map[string]*checkRunLife {
	t.Helper()
	var lives map[string]*checkRunLife
	waitUntil(t, fmt.Sprintf("check runs %v for %.7s", final, commit), func() bool {
		lives = checkRunsOf(gh, commit)
		for name, want := range final {
			if l := lives[name]; l == nil || l.states[len(l.states)-1] != "completed/"+want {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("check runs so far: %v", lives) })
	rank := map[string]int{"queued": 0, "in_progress": 1}
	for name, l := range lives {
		if l.posts != 1 {
			t.Errorf("%s: created %d times, want once then updated", name, l.posts)
		}
		for i, st := range l.states {
			r, ok := rank[st]
			if !ok {
				r = 2
			}
			if i > 0 {
				prev, ok := rank[l.states[i-1]]
				if !ok {
					prev = 2
				}
				if r < prev || r == 2 && prev == 2 {
					t.Errorf("%s: states %v out of order", name, l.states)
				}
			}
		}
	}
	return lives
}

// A project connected through a GitHub App installation, end to end on
// each engine: a push and a pull request build on a real agent, and the
// fake GitHub shows check runs kiln and kiln/test going from queued to
// completed success, linked to the build's page, and no commit status; a
// failing pipeline's check runs conclude failure, titled with the step,
// with its last log lines in the summary.
func TestCheckRunsRoundTrip(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const appID, installation = 123, 4567
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gh := fakegithub.New()
		defer gh.Close()
		gh.RegisterApp(appID, &key.PublicKey, installation)
		h := startServerWith(t, e, func(cfg *server.Config) {
			cfg.Actions.GitHub = actions.Connection{BaseURL: gh.URL(), AppID: appID,
				PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})}
			cfg.ForgeStatuses.Poll = 100 * time.Millisecond
			cfg.ForgeStatuses.Backoff = func(int) time.Duration { return 200 * time.Millisecond }
		})
		h.startAgent("a1", nil)
		repo, head := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", "echo checked")})
		h.addProject("app", repo, projectOpts{})
		body := map[string]any{"forge": "github", "forge_repo": "acme/app", "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_installation_id": installation}
		if code := h.do("PATCH", "/api/v1/projects/app", body, nil); code != http.StatusOK {
			t.Fatalf("forge connection: HTTP %d", code)
		}
		deliveries := 0
		build := func(event string, payload []byte) int64 {
			t.Helper()
			deliveries++
			code, resp := h.postGitHub("app", event, fmt.Sprintf("d-%d", deliveries), "webhook-secret-app", payload)
			id, ok := resp["build_id"].(float64)
			if code != http.StatusCreated || !ok {
				t.Fatalf("%s: HTTP %d %v", event, code, resp)
			}
			return int64(id)
		}
		done := map[string]string{"kiln": "success", "kiln/test": "success"}

		// A push.
		id := build("push", githubPush(t, "refs/heads/main", head))
		if b := h.waitDone(id); b.Status != store.StatusSuccess {
			t.Fatalf("the push's build: %s", dump(b))
		}
		lives := waitCheckRuns(t, gh, head, done)
		for name, l := range lives {
			if !strings.HasSuffix(l.last.DetailsURL, fmt.Sprintf("/builds/%d", id)) || l.last.Repo != "acme/app" || l.last.Title != "Succeeded" {
				t.Errorf("%s: %+v", name, l.last)
			}
		}

		// A pull request whose pipeline fails.
		git(t, repo, "checkout", "-q", "-b", "pr")
		failing := commit(t, repo, map[string]string{".kiln.yml": pipelineFile("", `for i in $(seq 1 30); do echo "out $i"; done; exit 3`)})
		git(t, repo, "update-ref", "refs/pull/5/head", failing)
		git(t, repo, "checkout", "-q", "main")
		id = build("pull_request", prEvent(t, "opened", 5, failing, ""))
		if b := h.waitDone(id); b.Status != store.StatusFailure {
			t.Fatalf("the request's build: %s", dump(b))
		}
		lives = waitCheckRuns(t, gh, failing, map[string]string{"kiln": "failure", "kiln/test": "failure"})
		job := lives["kiln/test"].last
		if !strings.HasPrefix(job.Title, "Failed at step '") || !strings.Contains(job.Summary, "exit code 3") ||
			!strings.Contains(job.Summary, "out 30") || !strings.Contains(job.Summary, "out 11") || strings.Contains(job.Summary, "out 10\n") {
			t.Errorf("the failed job's check run: %q\n%s", job.Title, job.Summary)
		}
		if b := lives["kiln"].last; !strings.Contains(b.Title, "'test'") || !strings.Contains(b.Summary, "out 30") {
			t.Errorf("the failed build's check run: %q\n%s", b.Title, b.Summary)
		}
		if n := len(gh.Statuses()); n != 0 {
			t.Errorf("%d commit statuses as well", n)
		}
	})
}
