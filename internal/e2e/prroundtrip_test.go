package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// roundTripPipeline is one job, "build", whose step is slow in a commit
// that has a file named "slow" (so a test can catch its build running).
var roundTripPipeline = pipelineFile("", `if [ -f slow ]; then echo slow; sleep 300; fi; echo "built $KILN_EVENT #$KILN_PULL_REQUEST"`)

// prEvent is the real pull_request example of action for request number,
// at head, from headRepo ("" for the base repository).
func prEvent(t *testing.T, action string, number int, head, headRepo string) []byte {
	t.Helper()
	return []byte(strings.ReplaceAll(string(githubPR(t, action, head, headRepo)), `"number":2`, fmt.Sprintf(`"number":%d`, number)))
}

// statusesOf returns the states fakegithub accepted for commit, per
// context, in the order they arrived, with their descriptions.
func statusesOf(gh *fakegithub.Server, commit string) (states map[string][]string, descs map[string][]string) {
	states, descs = map[string][]string{}, map[string][]string{}
	for _, s := range gh.Statuses() {
		if s.SHA == commit {
			states[s.Context] = append(states[s.Context], s.State)
			descs[s.Context] = append(descs[s.Context], s.Description)
		}
	}
	return states, descs
}

// waitStatuses waits until the newest state of each context in final
// reached the fake for commit, and checks that each context's states came
// in order: any number of pending, then the one final state, once.
func waitStatuses(t *testing.T, gh *fakegithub.Server, commit string, final map[string]string) map[string][]string {
	t.Helper()
	var states map[string][]string
	waitUntil(t, fmt.Sprintf("statuses %v for %.7s", final, commit), func() bool {
		states, _ = statusesOf(gh, commit)
		for ctx, want := range final {
			got := states[ctx]
			if len(got) == 0 || got[len(got)-1] != want {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("statuses so far: %v", states) })
	for ctx, got := range states {
		for i, st := range got {
			if st != "pending" && i != len(got)-1 {
				t.Errorf("%.7s %s: states %v: a final state before others", commit, ctx, got)
			}
		}
	}
	return states
}

// A project's pull requests, end to end on each engine, with commit
// statuses back to (fake) GitHub: a same-repository request builds at
// once and reports pending then success; a push to it supersedes its
// running build (reported as an error, "canceled"); closing it cancels
// its running build; a fork's request shows "waiting for approval" until
// an admin approves it, then its result; and while the forge is down a
// request builds anyway, and once the forge is back only the newest state
// of each context is delivered, none lost.
func TestPullRequestRoundTrip(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gh := fakegithub.New()
		defer gh.Close()
		gh.AddToken("ghp_e2e")
		h := startServerWith(t, e, func(cfg *server.Config) {
			cfg.ForgeStatuses.Poll = 100 * time.Millisecond
			cfg.ForgeStatuses.Backoff = func(int) time.Duration { return 200 * time.Millisecond }
		})
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": roundTripPipeline})
		h.addProject("app", repo, projectOpts{cancelSuperseded: true})
		body := map[string]any{"forge": "github", "forge_repo": "acme/app", "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": "ghp_e2e"}
		if code := h.do("PATCH", "/api/v1/projects/app", body, nil); code != http.StatusOK {
			t.Fatalf("forge connection: HTTP %d", code)
		}
		// head makes a request's head commit, on no branch: only under
		// refs/pull/N/head, as the forge keeps it.
		head := func(number int, slow bool) string {
			files := map[string]string{"n": fmt.Sprint(time.Now().UnixNano())}
			if slow {
				files["slow"] = "yes"
			}
			git(t, repo, "checkout", "-q", "-b", "pr")
			sha := commit(t, repo, files)
			git(t, repo, "update-ref", fmt.Sprintf("refs/pull/%d/head", number), sha)
			git(t, repo, "checkout", "-q", "main")
			git(t, repo, "branch", "-q", "-D", "pr")
			return sha
		}
		deliveries := 0
		send := func(action string, number int, sha, headRepo string) map[string]any {
			t.Helper()
			deliveries++
			code, resp := h.postGitHub("app", "pull_request", fmt.Sprintf("d-%d", deliveries), "webhook-secret-app", prEvent(t, action, number, sha, headRepo))
			if code != http.StatusCreated && code != http.StatusAccepted && code != http.StatusOK {
				t.Fatalf("%s #%d: HTTP %d %v", action, number, code, resp)
			}
			return resp
		}
		buildOf := func(resp map[string]any) int64 {
			t.Helper()
			id, ok := resp["build_id"].(float64)
			if !ok {
				t.Fatalf("no build: %v", resp)
			}
			return int64(id)
		}
		done := map[string]string{"kiln": "success", "kiln/test": "success"}

		// A same-repository request builds at once and reports.
		a := head(2, true)
		first := buildOf(send("opened", 2, a, ""))
		h.waitFor(first, "the request's step running", stepRunning)
		waitUntil(t, "a pending status while it runs", func() bool {
			states, _ := statusesOf(gh, a)
			return len(states["kiln"]) > 0 && states["kiln"][0] == "pending"
		})
		// A push to it supersedes the running build.
		b := head(2, false)
		second := buildOf(send("synchronize", 2, b, ""))
		if got := h.waitDone(first); got.Status != store.StatusCanceled {
			t.Fatalf("the superseded build: %s", dump(got))
		}
		if got := h.waitDone(second); got.Status != store.StatusSuccess || !strings.Contains(h.logText(second), "built pull_request #2") {
			t.Fatalf("the request's new head: %s\n%s", dump(got), h.logText(second))
		}
		waitStatuses(t, gh, a, map[string]string{"kiln": "error", "kiln/test": "error"})
		waitStatuses(t, gh, b, done)

		// Closing the request cancels its running build.
		c := head(2, true)
		third := buildOf(send("synchronize", 2, c, ""))
		h.waitFor(third, "the request's step running", stepRunning)
		send("closed", 2, c, "")
		if got := h.waitDone(third); got.Status != store.StatusCanceled {
			t.Fatalf("the closed request's build: %s", dump(got))
		}
		waitStatuses(t, gh, c, map[string]string{"kiln": "error", "kiln/test": "error"})

		// A fork's request is pending, waiting for approval, then reports.
		d := head(3, false)
		resp := send("opened", 3, d, "mallory/app")
		fork := buildOf(resp)
		if resp["approval"] != store.ApprovalWaiting {
			t.Fatalf("the fork's request: %v", resp)
		}
		waitUntil(t, "the fork's build shown waiting for approval", func() bool {
			_, descs := statusesOf(gh, d)
			return len(descs["kiln"]) > 0 && strings.Contains(descs["kiln"][len(descs["kiln"])-1], "approval")
		})
		if states, _ := statusesOf(gh, d); states["kiln"][len(states["kiln"])-1] != "pending" {
			t.Fatalf("the fork's build before approval: %v", states)
		}
		if code := h.do("POST", fmt.Sprintf("/api/v1/builds/%d/approve", fork), nil, nil); code != http.StatusOK {
			t.Fatalf("approve: HTTP %d", code)
		}
		if got := h.waitDone(fork); got.Status != store.StatusSuccess {
			t.Fatalf("the fork's build: %s", dump(got))
		}
		waitStatuses(t, gh, d, done)

		// The forge is down while a request builds; back, it gets the
		// newest state of each context, and only that.
		gh.FailNext(fakegithub.EndpointCreateStatus, http.StatusServiceUnavailable, 1<<30)
		before := gh.Calls(fakegithub.EndpointCreateStatus)
		f := head(4, false)
		if got := h.waitDone(buildOf(send("opened", 4, f, ""))); got.Status != store.StatusSuccess {
			t.Fatalf("the request built while the forge is down: %s", dump(got))
		}
		waitUntil(t, "the sender trying the forge while it is down", func() bool { return gh.Calls(fakegithub.EndpointCreateStatus) > before })
		if states, _ := statusesOf(gh, f); len(states) != 0 {
			t.Fatalf("statuses accepted while the forge is down: %v", states)
		}
		gh.ClearFaults()
		states := waitStatuses(t, gh, f, done)
		for ctx, got := range states {
			if len(got) != 1 {
				t.Errorf("%s: after the forge came back, states %v: want only the newest", ctx, got)
			}
		}
	})
}

// Statuses not yet delivered when the server is killed (kill -9; the
// forge was down) are delivered by the restarted server.
func TestForgeStatusesSurviveAServerKill(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gh := fakegithub.New()
		defer gh.Close()
		gh.AddToken("ghp_e2e")
		gh.FailNext(fakegithub.EndpointCreateStatus, http.StatusBadGateway, 1<<30)
		dataDir := t.TempDir()
		addr := freeAddr(t)
		env := []string{"KILN_HOME=" + dataDir}
		args := []string{"up", "-listen", addr, "-engine", e.Host, "-lease", "10s", "-retry-delay", "200ms", "-memory", "256m"}
		up := startProc(t, env, args...)
		h := &harness{t: t, url: "http://" + addr, dataDir: dataDir}
		h.admin = waitToken(t, up, dataDir)

		repo, sha := newRepo(t, map[string]string{".kiln.yml": roundTripPipeline})
		h.addProject("app", repo, projectOpts{})
		body := map[string]any{"forge": "github", "forge_repo": "acme/app", "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": "ghp_e2e"}
		if code := h.do("PATCH", "/api/v1/projects/app", body, nil); code != http.StatusOK {
			t.Fatalf("forge connection: HTTP %d", code)
		}
		code, resp := h.postGitHub("app", "push", "push-1", "webhook-secret-app", githubPush(t, "refs/heads/main", sha))
		if code != http.StatusCreated {
			t.Fatalf("push: HTTP %d %v", code, resp)
		}
		if b := h.waitDone(int64(resp["build_id"].(float64))); b.Status != store.StatusSuccess {
			t.Fatalf("build: %s\n%s", dump(b), up.output())
		}
		waitUntil(t, "the sender trying the forge while it is down", func() bool { return gh.Calls(fakegithub.EndpointCreateStatus) > 0 })
		up.kill()
		if states, _ := statusesOf(gh, sha); len(states) != 0 {
			t.Fatalf("statuses accepted while the forge is down: %v", states)
		}

		gh.ClearFaults()
		up2 := startProc(t, env, args...)
		waitToken(t, up2, dataDir)
		waitStatuses(t, gh, sha, map[string]string{"kiln": "success", "kiln/test": "success"})
	})
}
