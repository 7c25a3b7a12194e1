package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/forgestatus/fakeforge"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// deliverAsGitHub posts an event to a hook the fake GitHub recorded, as
// GitHub delivers it: to the hook's URL, JSON, with GitHub's headers and
// both signatures made with the hook's secret.
func deliverAsGitHub(t *testing.T, hook fakegithub.Hook, event, delivery string, body []byte) (int, map[string]any) {
	t.Helper()
	if hook.ContentType != "json" {
		t.Fatalf("hook content type %q: GitHub would send a form", hook.ContentType)
	}
	req, err := http.NewRequest("POST", hook.URL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sha1mac := hmac.New(sha1.New, []byte(hook.Secret))
	sha1mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/044aadd")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-GitHub-Hook-ID", fmt.Sprint(hook.ID))
	req.Header.Set("X-GitHub-Hook-Installation-Target-Type", "repository")
	req.Header.Set("X-Hub-Signature", "sha1="+hex.EncodeToString(sha1mac.Sum(nil)))
	req.Header.Set("X-Hub-Signature-256", sign(hook.Secret, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// One command onboards a GitHub repository, end to end on each engine:
// `kiln project add web -github acme/web` (the token in the environment)
// has the server look the repository up on (fake) GitHub, whose clone URL
// is a real local repository, and create the webhook there; GitHub's ping
// and then a push, delivered to the URL and signed with the secret GitHub
// recorded, build the repository, and the build succeeds. Run again, the
// command is refused (the name is taken) and GitHub keeps one hook.
func TestOnboardGitHubRepository(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gh := fakegithub.New()
		defer gh.Close()
		const token = "ghp_onboard_e2e_token"
		gh.AddToken(token)
		repo, head := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", `echo "onboarded $KILN_EVENT of $KILN_BRANCH"`)})
		gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: repo, DefaultBranch: "main"})
		// The public URL a forge delivers to: the server's own address here.
		addr := freeAddr(t)
		h := startServerWith(t, e, func(cfg *server.Config) {
			cfg.Listen = addr
			cfg.PublicURL = "http://" + addr
		})
		h.startAgent("a1", nil)

		add := func() (string, error) {
			cmd := exec.Command(kilnBin, "project", "add", "web", "-github", "acme/web", "-github-url", strings.TrimSuffix(gh.URL(), "/"))
			cmd.Env = append(os.Environ(), "KILN_SERVER="+h.url, "KILN_TOKEN="+h.admin, "KILN_FORGE_TOKEN="+token)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := add()
		if err != nil || !strings.Contains(out, "webhook created on github") || !strings.Contains(out, "http://"+addr+"/hooks/github/web") {
			t.Fatalf("kiln project add: %v\n%s", err, out)
		}
		hooks := gh.Hooks("acme/web")
		if len(hooks) != 1 {
			t.Fatalf("hooks on GitHub: %+v", hooks)
		}
		hook := hooks[0]
		if hook.URL != "http://"+addr+"/hooks/github/web" || strings.Join(hook.Events, ",") != "push,pull_request" || !hook.Active || len(hook.Secret) < 16 {
			t.Fatalf("the hook GitHub recorded: %+v", hook)
		}
		if strings.Contains(out, token) || strings.Contains(out, hook.Secret) {
			t.Fatalf("the command printed a secret:\n%s", out)
		}
		var p struct {
			CloneURL      string `json:"clone_url"`
			DefaultBranch string `json:"default_branch"`
		}
		if code := h.do("GET", "/api/v1/projects/web", nil, &p); code != http.StatusOK || p.CloneURL != repo || p.DefaultBranch != "main" {
			t.Fatalf("the project: HTTP %d %+v", code, p)
		}

		// GitHub pings a new hook, then delivers pushes.
		ping, err := os.ReadFile("../forge/testdata/github/ping.0.json")
		if err != nil {
			t.Fatal(err)
		}
		if code, resp := deliverAsGitHub(t, hook, "ping", "ping-1", ping); code != http.StatusOK {
			t.Fatalf("ping: HTTP %d %v", code, resp)
		}
		code, resp := deliverAsGitHub(t, hook, "push", "push-1", githubPush(t, "refs/heads/main", head))
		id, ok := resp["build_id"].(float64)
		if code != http.StatusCreated || !ok {
			t.Fatalf("push: HTTP %d %v", code, resp)
		}
		if b := h.waitDone(int64(id)); b.Status != store.StatusSuccess || b.Commit != head || !strings.Contains(h.logText(int64(id)), "onboarded push of main") {
			t.Fatalf("the push's build: %s\n%s", dump(b), h.logText(int64(id)))
		}
		// A delivery signed with another secret is refused.
		forged := hook
		forged.Secret = "not-the-secret-github-has"
		if code, _ := deliverAsGitHub(t, forged, "push", "push-2", githubPush(t, "refs/heads/main", head)); code != http.StatusUnauthorized {
			t.Fatalf("a forged push: HTTP %d", code)
		}

		// Again: the name is taken, nothing changes on GitHub.
		if out, err := add(); err == nil || !strings.Contains(out, "409") {
			t.Fatalf("kiln project add again: %v\n%s", err, out)
		}
		if hooks := gh.Hooks("acme/web"); len(hooks) != 1 || hooks[0].Secret != hook.Secret {
			t.Fatalf("hooks after the second add: %+v", hooks)
		}
	})
}

// The same on Gitea, the token piped to the command: `kiln project add
// lib -gitea owner/lib -gitea-url … -forge-token-stdin`, then a push Gitea
// signs with the hook's secret builds, and succeeds.
func TestOnboardGiteaRepository(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		const token = "gitea_onboard_e2e_token"
		fg := fakeforge.New(fakeforge.Gitea, "owner/lib", token)
		defer fg.Close()
		repo, head := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", `echo "onboarded from gitea"`)})
		fg.SetRepository(repo, "main")
		addr := freeAddr(t)
		h := startServerWith(t, e, func(cfg *server.Config) {
			cfg.Listen = addr
			cfg.PublicURL = "http://" + addr
		})
		h.startAgent("a1", nil)

		cmd := exec.Command(kilnBin, "project", "add", "lib", "-gitea", "owner/lib", "-gitea-url", fg.URL(), "-forge-token-stdin")
		cmd.Env = append(os.Environ(), "KILN_SERVER="+h.url, "KILN_TOKEN="+h.admin, "KILN_FORGE_TOKEN=")
		cmd.Stdin = strings.NewReader(token + "\n")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "webhook created on gitea") {
			t.Fatalf("kiln project add: %v\n%s", err, out)
		}
		hooks := fg.Hooks()
		if len(hooks) != 1 || hooks[0].URL != "http://"+addr+"/hooks/gitea/lib" || hooks[0].Type != "gitea" || !hooks[0].Active {
			t.Fatalf("the hook Gitea recorded: %+v", hooks)
		}
		// Gitea delivers a push: its signature (hex HMAC-SHA256) and GitHub's.
		raw, err := os.ReadFile("../forge/testdata/gitea/push.json")
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["ref"], m["after"] = "refs/heads/main", head
		m["head_commit"].(map[string]any)["id"] = head
		body, _ := json.Marshal(m)
		sig := strings.TrimPrefix(sign(hooks[0].Secret, body), "sha256=")
		req, _ := http.NewRequest("POST", hooks[0].URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Event-Type", "push")
		req.Header.Set("X-Gitea-Delivery", "0b1c8a52-5f0e-4d4b-9d36-3d1f4f2f7e11")
		req.Header.Set("X-Gitea-Signature", sig)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256="+sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		id, ok := got["build_id"].(float64)
		if resp.StatusCode != http.StatusCreated || !ok {
			t.Fatalf("push: HTTP %d %v", resp.StatusCode, got)
		}
		if b := h.waitDone(int64(id)); b.Status != store.StatusSuccess || !strings.Contains(h.logText(int64(id)), "onboarded from gitea") {
			t.Fatalf("the push's build: %s\n%s", dump(b), h.logText(int64(id)))
		}
	})
}
