package api_test

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/store"
)

// giteaGit serves the repository at dir by git's http-backend as a
// private repository on Gitea: to basic credentials with token as the
// password (any user name) or as the user name (no password, or
// x-oauth-basic), as Gitea's services/auth/basic.go reads them; 401
// otherwise. Everything else (the statuses API) is 401 too.
func giteaGit(t *testing.T, dir, token string) *httptest.Server {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := &cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(dir), "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		tok := pass
		if pass == "" || pass == "x-oauth-basic" {
			tok = user
		}
		if !ok || tok != token || strings.HasPrefix(r.URL.Path, "/api/") {
			w.Header().Set("WWW-Authenticate", `Basic realm="Gitea"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A project connected to its forge plans from its private repository with
// the connection's token, and its jobs' assignments carry the token for
// the checkout (a fork's request's too: a read of the base repository),
// never among the job's secrets. A wrong token, no connection, or a
// connection to another host: the build ends in error at once, saying
// with what it fetched, without the token.
func TestPrivateRepositoryWithForgeConnection(t *testing.T) {
	const token = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
	e := newEnv(t)
	dir, head := prRepo(t, "refs/pull/2/head")
	main := git(t, dir, "rev-parse", "main")
	srv := giteaGit(t, dir, token)
	url := srv.URL + "/" + filepath.Base(dir)
	forge := map[string]any{"forge": "gitea", "forge_repo": "acme/web", "forge_url": srv.URL, "forge_token": token}
	e.project("hello", url, forge)

	b := e.trigger("hello", "main")
	wantQueued(t, e.waitPlanned(b.ID), main)
	e.register("a1")
	a := e.mustClaim("a1")
	if a.Git == nil || a.Git.Username != "oauth2" || a.Git.Password != token || a.CloneURL != url {
		t.Fatalf("assignment's git credentials: %+v (clone URL %s)", a.Git, a.CloneURL)
	}
	for k, v := range a.Secrets {
		if strings.Contains(v, token) {
			t.Errorf("secret %s holds the token", k)
		}
	}
	if s := fmt.Sprintf("%v %+v", a.Git, a); strings.Contains(s, token) {
		t.Errorf("the credentials print as %s", s)
	}
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)

	// A fork's request: planned from refs/pull/2/head with the token.
	e.api("PATCH", "/api/v1/projects/hello", map[string]any{"fork_pull_requests": "run"}).want(t, http.StatusOK, nil)
	body := edit(t, githubPR(t, "opened", head, "mallory/Hello-World"), func(m map[string]any) {
		m["repository"].(map[string]any)["clone_url"] = url
	})
	out := e.pullRequest("fork-1", body, http.StatusCreated)
	wantQueued(t, e.waitPlanned(out.BuildID), head)
	a = e.mustClaim("a1")
	if !a.Untrusted || a.Git == nil || a.Git.Password != token || len(a.Secrets) != 0 {
		t.Errorf("fork's assignment: untrusted %v, git %v, secrets %d", a.Untrusted, a.Git != nil, len(a.Secrets))
	}
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)

	refused := func(project string, want ...string) {
		t.Helper()
		id := e.trigger(project, "main").ID
		b := e.waitBuild(id, "finished", func(b *store.Build) bool { return b.Status.Terminal() })
		text := b.Error
		for _, l := range e.logs(id) {
			for _, line := range l.Lines {
				text += "\n" + line.Text
			}
		}
		if b.Status != store.StatusError || b.PlanAttempts != 1 {
			t.Errorf("%s: build %s, want an error at the first planning", project, dump(b))
		}
		for _, w := range append(want, "refused the fetch") {
			if !strings.Contains(text, w) {
				t.Errorf("%s: the build's error and log lack %q:\n%s", project, w, text)
			}
		}
		if strings.Contains(text, token) || strings.Contains(text, "wrong-token-123") {
			t.Errorf("%s: the token shows:\n%s", project, text)
		}
	}
	e.api("PATCH", "/api/v1/projects/hello", map[string]any{"forge_token": "wrong-token-123"}).want(t, http.StatusOK, nil)
	refused("hello", "forge_token", "gitea connection")

	e.project("nocreds", url, nil)
	refused("nocreds", "no forge connection")

	// The same loopback server under another name is another host: the
	// token is not sent there.
	other := map[string]any{"forge": "gitea", "forge_repo": "acme/web", "forge_url": strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), "forge_token": token}
	e.project("elsewhere", url, other)
	refused("elsewhere", "goes to its forge only")
}
