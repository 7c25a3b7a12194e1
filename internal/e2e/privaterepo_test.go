package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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

const (
	privateAppID   = 5150
	privateInstall = 8080
	privatePAT     = "ghp_privateRepoE2EToken0123456789"
)

// snoopPipeline's one step shows, reversed (the log's masker would hide
// a token shown as is, and the test must see a leak), everything of the
// checkout's git config and the job's environment.
var snoopPipeline = pipelineFile("", `echo "config:"; rev .git/config; echo "env:"; env | rev; echo "built $KILN_EVENT"`)

func reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}

// A repository that fake GitHub serves only to a live token, built end to
// end on each engine by a project connected with a personal access token
// and by one connected through the server's GitHub App (installation
// tokens minted by the fake, which git accepts only while they live); a
// fork's pull request of the App's project builds too, fetched from the
// base repository's refs/pull/N/head with the project's credentials. No
// token reaches the sandbox (the checkout's git config, the job's
// environment) or the log; a wrong token is a build error that says what
// was refused and with what.
func TestPrivateRepository(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gh := fakegithub.New()
		defer gh.Close()
		gh.RegisterApp(privateAppID, &key.PublicKey, privateInstall)
		gh.AddToken(privatePAT)
		h := startServerWith(t, e, func(cfg *server.Config) {
			cfg.Actions.GitHub = actions.Connection{BaseURL: gh.URL(), AppID: privateAppID, PrivateKeyPEM: keyPEM}
			cfg.Actions.ReconcileInterval = time.Hour
			// The revoked token's job is retried on its one agent at once.
			cfg.Scheduler.RetryElsewhere = time.Millisecond
		})
		h.startAgent("a1", nil)
		api := strings.TrimSuffix(gh.URL(), "/")

		repo, _ := newRepo(t, map[string]string{".kiln.yml": snoopPipeline})
		gh.ServeRepository("acme", "private", repo)
		url := gh.GitRemote("acme", "private")
		connect := func(project string, conn map[string]any) {
			t.Helper()
			h.addProject(project, url, projectOpts{})
			conn["forge"], conn["forge_repo"], conn["forge_url"] = "github", "acme/private", api
			if code := h.do("PATCH", "/api/v1/projects/"+project, conn, nil); code != http.StatusOK {
				t.Fatalf("connect %s: HTTP %d", project, code)
			}
		}
		// What the sandbox must never see, in the reversed forms the step
		// prints: a token, an installation token's prefix, the basic
		// credentials git is given, the header that carries them.
		leaks := func(log string) []string {
			var found []string
			for _, s := range []string{privatePAT, "ghs_", "x-access-token", base64.StdEncoding.EncodeToString([]byte("x-access-token:" + privatePAT)), "extraheader", "Authorization"} {
				if strings.Contains(strings.ToLower(log), strings.ToLower(reverse(s))) || strings.Contains(log, s) {
					found = append(found, s)
				}
			}
			return found
		}
		green := func(id int64, event string) {
			t.Helper()
			b := h.waitDone(id)
			log := h.logText(id)
			if b.Status != store.StatusSuccess || !strings.Contains(log, "built "+event) || !strings.Contains(log, reverse(url)) || !strings.Contains(log, reverse("KILN_EVENT=")) {
				t.Fatalf("build %d: %s\n%s", id, dump(b), log)
			}
			if l := leaks(log); len(l) > 0 {
				t.Errorf("build %d: the sandbox or the log saw %v:\n%s", id, l, log)
			}
		}

		connect("pat", map[string]any{"forge_token": privatePAT})
		green(h.trigger("pat", "main"), "api")

		connect("app", map[string]any{"forge_installation_id": privateInstall})
		green(h.trigger("app", "main"), "api")
		if gh.TokensIssued() == 0 {
			t.Error("no installation token was minted")
		}

		// A fork's request: its head only under refs/pull/3/head of the
		// base repository.
		if code := h.do("PATCH", "/api/v1/projects/app", map[string]any{"fork_pull_requests": "run"}, nil); code != http.StatusOK {
			t.Fatalf("fork_pull_requests: HTTP %d", code)
		}
		git(t, repo, "checkout", "-q", "-b", "fork")
		head := commit(t, repo, map[string]string{"fork.txt": "from a fork\n"})
		git(t, repo, "update-ref", "refs/pull/3/head", head)
		git(t, repo, "checkout", "-q", "main")
		git(t, repo, "branch", "-q", "-D", "fork")
		var m map[string]any
		if err := json.Unmarshal(prEvent(t, "opened", 3, head, "mallory/private"), &m); err != nil {
			t.Fatal(err)
		}
		m["repository"].(map[string]any)["clone_url"] = url
		body, _ := json.Marshal(m)
		code, resp := h.postGitHub("app", "pull_request", "fork-3", "webhook-secret-app", body)
		id, ok := resp["build_id"].(float64)
		if code != http.StatusCreated || !ok {
			t.Fatalf("fork's request: HTTP %d %v", code, resp)
		}
		green(int64(id), "pull_request")

		// A token revoked between planning and the checkout: the agent's
		// fetch is refused; the job ends in error (retried, then given
		// up), its log saying so, without the token. Its job waits for
		// an agent with label "late" until the token is changed.
		late, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("runs-on: [linux, late]\n", "echo never")})
		gh.ServeRepository("acme", "late", late)
		h.addProject("revoked", gh.GitRemote("acme", "late"), projectOpts{})
		if code := h.do("PATCH", "/api/v1/projects/revoked", map[string]any{"forge": "github", "forge_repo": "acme/late", "forge_url": api, "forge_token": privatePAT}, nil); code != http.StatusOK {
			t.Fatalf("connect revoked: HTTP %d", code)
		}
		rid := h.trigger("revoked", "main")
		h.waitFor(rid, "planned", func(b *store.Build) bool { return b.Planned && len(b.Jobs) > 0 })
		if code := h.do("PATCH", "/api/v1/projects/revoked", map[string]any{"forge_token": "ghp_revokedToken777"}, nil); code != http.StatusOK {
			t.Fatalf("change token: HTTP %d", code)
		}
		h.startAgent("a2", nil, "late")
		b := h.waitDone(rid)
		log := h.logText(rid) + b.Error
		if b.Status != store.StatusError || !strings.Contains(log, "checkout failed") || !strings.Contains(log, "refused the credentials") ||
			strings.Contains(log, "ghp_revokedToken777") || strings.Contains(log, base64.StdEncoding.EncodeToString([]byte("x-access-token:ghp_revokedToken777"))) {
			t.Errorf("revoked token: %s\n%s", dump(b), log)
		}

		// A wrong token: an error at planning, saying so, without it.
		connect("wrong", map[string]any{"forge_token": "ghp_wrongToken999"})
		wid := h.trigger("wrong", "main")
		b = h.waitDone(wid)
		log = h.logText(wid) + b.Error
		if b.Status != store.StatusError || !strings.Contains(log, "refused the fetch") || !strings.Contains(log, "forge_token") || strings.Contains(log, "ghp_wrongToken999") {
			t.Errorf("wrong token: %s\n%s", dump(b), log)
		}
	})
}
