package api_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// A project's forge connection: set, shown without its token, validated;
// the server's sender posts its builds' statuses to the forge.
func TestForgeStatusesThroughServer(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	const token = "ghp_secret_status_token"
	gh.AddToken(token)
	e := newEnv(t, func(c *server.Config) { c.ForgeStatuses.Poll = 20 * time.Millisecond })
	dir, head := newRepo(t)
	p := e.project("web", dir, map[string]any{"forge": "github", "forge_repo": "acme/web",
		"forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": token})
	if p.Forge == nil || p.Forge.Forge != "github" || p.Forge.Repo != "acme/web" || !p.HasForgeToken {
		t.Fatalf("created %s", dump(p))
	}
	for _, path := range []string{"/api/v1/projects/web", "/api/v1/projects"} {
		if r := e.api("GET", path, nil); strings.Contains(string(r.body), token) || !strings.Contains(string(r.body), `"has_forge_token":true`) {
			t.Errorf("GET %s shows the token or hides has_forge_token: %s", path, r.body)
		}
	}
	// github without a URL: GitHub's public API.
	var q api.ProjectView
	e.api("POST", "/api/v1/projects", map[string]any{"name": "other", "clone_url": dir, "forge": "github", "forge_repo": "a/b", "forge_token": "x"}).want(t, http.StatusCreated, &q)
	if q.Forge.APIURL != api.DefaultGitHubAPI {
		t.Errorf("default API URL %q", q.Forge.APIURL)
	}
	e.refuse(e.admin, []refusal{
		{"unknown forge", "PATCH", "/api/v1/projects/web", map[string]any{"forge": "bitbucket"}, 400, "invalid", `forge: "bitbucket": want github, gitlab or gitea`},
		{"gitlab without url", "PATCH", "/api/v1/projects/other", map[string]any{"forge": "gitlab", "forge_repo": "g/n"}, 400, "invalid", "forge_url: required for gitlab"},
		{"bad repo", "PATCH", "/api/v1/projects/web", map[string]any{"forge_repo": "acme"}, 400, "invalid", `forge_repo: "acme"`},
		{"repo with a dot segment", "PATCH", "/api/v1/projects/web", map[string]any{"forge_repo": "acme/.."}, 400, "invalid", "forge_repo"},
		{"github repo with a subgroup", "PATCH", "/api/v1/projects/web", map[string]any{"forge_repo": "a/b/c"}, 400, "invalid", "forge_repo"},
		{"url with credentials", "PATCH", "/api/v1/projects/web", map[string]any{"forge_url": "https://u:p@example.com"}, 400, "invalid", "forge_url"},
		{"url not http", "PATCH", "/api/v1/projects/web", map[string]any{"forge_url": "file:///etc"}, 400, "invalid", "forge_url"},
		{"empty token", "PATCH", "/api/v1/projects/web", map[string]any{"forge_token": ""}, 400, "invalid", "forge_token: required"},
	}, nil)

	b := e.trigger("web", "main")
	e.waitPlanned(b.ID)
	wait := func(what string, cond func([]fakegithub.CommitStatus) bool) {
		t.Helper()
		deadline := time.Now().Add(waitLimit)
		for !cond(gh.Statuses()) {
			if time.Now().After(deadline) {
				t.Fatalf("the fake never got %s: %+v", what, gh.Statuses())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	has := func(context, state string) func([]fakegithub.CommitStatus) bool {
		return func(ss []fakegithub.CommitStatus) bool {
			for _, s := range ss {
				if s.Context == context && s.State == state && s.SHA == head && s.Repo == "acme/web" {
					return true
				}
			}
			return false
		}
	}
	wait("the pending statuses", func(ss []fakegithub.CommitStatus) bool {
		return has("kiln", "pending")(ss) && has("kiln/test", "pending")(ss)
	})
	st := e.srv.Store
	j, err := st.ClaimJob(t.Context(), store.Claim{AgentID: "a", Lease: time.Minute, StepNames: func([]byte) []string { return nil }})
	if err != nil || j == nil {
		t.Fatalf("claim: %v, %v", j, err)
	}
	if _, err := st.FinishJob(t.Context(), j.ID, j.Attempt, store.StatusSuccess, nil, "", 0); err != nil {
		t.Fatal(err)
	}
	wait("the successes", func(ss []fakegithub.CommitStatus) bool {
		return has("kiln", "success")(ss) && has("kiln/test", "success")(ss)
	})
	for _, s := range gh.Statuses() {
		if !strings.HasSuffix(s.TargetURL, api.BuildPagePath(b.ID)) {
			t.Errorf("target_url %q", s.TargetURL)
		}
	}
	// Removing the connection: no more rows.
	var removed api.ProjectView
	e.api("PATCH", "/api/v1/projects/web", map[string]any{"forge": ""}).want(t, http.StatusOK, &removed)
	if removed.Forge != nil || removed.HasForgeToken {
		t.Errorf("connection not removed: %s", dump(removed))
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
