package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/server"
)

// TestProjectLifecycle: create, get, list, patch and delete a project; the
// webhook secret is never shown.
func TestProjectLifecycle(t *testing.T) {
	e := newEnv(t)
	p := e.project("web", "https://git.example.org/web.git", map[string]any{"default_branch": "trunk"})
	if p.DefaultBranch != "trunk" || p.CancelSuperseded || p.ID == 0 ||
		strings.Join(p.WebhookPaths, " ") != "/hooks/github/web /hooks/gitlab/web /hooks/gitea/web" {
		t.Errorf("created %s", dump(p))
	}
	e.project("api", "https://git.example.org/api.git", nil)

	r := e.api("GET", "/api/v1/projects/web", nil)
	var got api.ProjectView
	r.want(t, http.StatusOK, &got)
	if got.ID != p.ID || got.CloneURL != "https://git.example.org/web.git" || !got.HasWebhookSecret {
		t.Errorf("get %s", r.body)
	}
	var list []api.ProjectView
	rl := e.api("GET", "/api/v1/projects", nil)
	rl.want(t, http.StatusOK, &list)
	if len(list) != 2 || list[0].Name != "api" || list[1].Name != "web" {
		t.Errorf("list %s", rl.body)
	}
	for _, body := range [][]byte{r.body, rl.body} {
		if strings.Contains(string(body), hookSecret) || strings.Contains(string(body), `"webhook_secret"`) {
			t.Errorf("the webhook secret is shown: %s", body)
		}
	}

	// A patch changes the fields it names and keeps the others.
	var patched api.ProjectView
	e.api("PATCH", "/api/v1/projects/web", map[string]any{"cancel_superseded": true, "clone_url": "https://git.example.org/web2.git"}).want(t, http.StatusOK, &patched)
	e.api("GET", "/api/v1/projects/web", nil).want(t, http.StatusOK, &got)
	for _, v := range []api.ProjectView{patched, got} {
		if !v.CancelSuperseded || v.CloneURL != "https://git.example.org/web2.git" || v.DefaultBranch != "trunk" || !v.HasWebhookSecret || v.Name != "web" {
			t.Errorf("patched %s", dump(v))
		}
	}
	// An empty webhook secret removes it (and with it every webhook).
	e.api("PATCH", "/api/v1/projects/web", map[string]any{"webhook_secret": ""}).want(t, http.StatusOK, &patched)
	if patched.HasWebhookSecret {
		t.Errorf("secret not removed: %s", dump(patched))
	}

	e.api("DELETE", "/api/v1/projects/web", nil).want(t, http.StatusNoContent, nil)
	e.api("GET", "/api/v1/projects/web", nil).wantError(t, http.StatusNotFound, "not_found", `project "web"`)
	e.api("DELETE", "/api/v1/projects/web", nil).wantError(t, http.StatusNotFound, "not_found")
	e.api("PATCH", "/api/v1/projects/web", map[string]any{"cancel_superseded": true}).wantError(t, http.StatusNotFound, "not_found")
	e.api("GET", "/api/v1/projects", nil).want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].Name != "api" {
		t.Errorf("list after delete: %s", dump(list))
	}
}

// TestProjectInvalid: a request that is not valid is refused with the
// reason, and leaves the projects as they were.
func TestProjectInvalid(t *testing.T) {
	e := newEnv(t)
	before := e.project("web", "https://git.example.org/web.git", nil)
	url := "https://git.example.org/x.git"
	e.refuse(e.admin, []refusal{
		{"upper case name", "POST", "/api/v1/projects", map[string]any{"name": "Web", "clone_url": url}, 400, "invalid", `name "Web": want lower-case letters`},
		{"name starting with a dash", "POST", "/api/v1/projects", map[string]any{"name": "-web", "clone_url": url}, 400, "invalid", `name "-web"`},
		{"name with a slash", "POST", "/api/v1/projects", map[string]any{"name": "a/b", "clone_url": url}, 400, "invalid", `name "a/b"`},
		{"name too long", "POST", "/api/v1/projects", map[string]any{"name": strings.Repeat("a", 64), "clone_url": url}, 400, "invalid", "at most 63"},
		{"no name", "POST", "/api/v1/projects", map[string]any{"clone_url": url}, 400, "invalid", `name ""`},
		{"no clone URL", "POST", "/api/v1/projects", map[string]any{"name": "x"}, 400, "invalid", "clone_url: required"},
		{"empty clone URL", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": ""}, 400, "invalid", "clone_url: must not be empty"},
		{"empty default branch", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": url, "default_branch": ""}, 400, "invalid", "default_branch: must not be empty"},
		{"short webhook secret", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": url, "webhook_secret": "fifteen-chars!!"}, 400, "invalid", "webhook_secret: at least 16 characters"},
		{"unknown field", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": url, "secret": "s"}, 400, "bad_request", `unknown field "secret"`},
		{"not JSON", "POST", "/api/v1/projects", []byte(`{"name": "x",`), 400, "bad_request", "invalid JSON body"},
		{"wrong type", "POST", "/api/v1/projects", []byte(`{"name": "x", "clone_url": 7}`), 400, "bad_request", "invalid JSON body"},
		{"duplicate", "POST", "/api/v1/projects", map[string]any{"name": "web", "clone_url": url}, 409, "conflict", `project "web": already exists`},
		{"patch: short webhook secret", "PATCH", "/api/v1/projects/web", map[string]any{"webhook_secret": "short"}, 400, "invalid", "webhook_secret: at least 16 characters"},
		{"patch: rename", "PATCH", "/api/v1/projects/web", map[string]any{"name": "web2"}, 400, "invalid", "cannot be renamed"},
		{"patch: empty clone URL", "PATCH", "/api/v1/projects/web", map[string]any{"clone_url": "", "cancel_superseded": true}, 400, "invalid", "clone_url: must not be empty"},
		{"fd:: clone URL", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": "fd::3"}, 400, "invalid", `clone_url: repository URL "fd::3" uses git's remote helper "fd::", which Kiln does not allow`},
		{"ext:: clone URL", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": "ext::sh -c id"}, 400, "invalid", `remote helper "ext::"`},
		{"file:// clone URL", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": "file:///srv/git/x.git"}, 400, "invalid", "-allow-file-remotes"},
		{"ftp clone URL", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": "ftp://git.example.org/x.git"}, 400, "invalid", `transport "ftp" is not allowed`},
		{"patch: ext:: clone URL", "PATCH", "/api/v1/projects/web", map[string]any{"clone_url": "ext::sh -c id"}, 400, "invalid", `clone_url: repository URL "ext::sh -c id" uses git's remote helper "ext::"`},
		{"patch: unknown field", "PATCH", "/api/v1/projects/web", map[string]any{"cancel_superseded": true, "branch": "x"}, 400, "bad_request", `unknown field "branch"`},
		{"body over 1 MiB", "POST", "/api/v1/projects", map[string]any{"name": "x", "clone_url": strings.Repeat("u", 1<<20)}, 413, "too_large", "over 1 MiB"},
	}, func(e *env) {
		var list []api.ProjectView
		e.api("GET", "/api/v1/projects", nil).want(e.t, http.StatusOK, &list)
		if len(list) != 1 || dump(list[0]) != dump(before) {
			e.t.Errorf("projects changed: %s", dump(list))
		}
	})
}

// TestFileRemotesAllowed: with the admin's -allow-file-remotes, a file://
// clone URL is accepted and its builds are planned.
func TestFileRemotesAllowed(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Git.AllowFileRemotes = true })
	dir, head := newRepo(t)
	e.project("hello", "file://"+dir, nil)
	wantQueued(t, e.waitPlanned(e.trigger("hello", "main").ID), head)
}

// TestSecrets: secrets are set by name and listed by name only; their values
// never leave the server except in a job's assignment (see TestAgentClaim).
func TestSecrets(t *testing.T) {
	e := newEnv(t)
	e.project("web", "https://git.example.org/web.git", nil)
	const value = "s3cr3t-value-that-must-not-leak"

	var names struct {
		Names []string `json:"names"`
	}
	e.api("GET", "/api/v1/projects/web/secrets", nil).want(t, http.StatusOK, &names)
	if names.Names == nil || len(names.Names) != 0 {
		t.Errorf("secrets of a new project: %#v, want an empty list", names.Names)
	}
	e.api("PUT", "/api/v1/projects/web/secrets/DEPLOY_KEY", map[string]string{"value": value}).want(t, http.StatusNoContent, nil)
	e.api("PUT", "/api/v1/projects/web/secrets/api_token", map[string]string{"value": value + "2"}).want(t, http.StatusNoContent, nil)
	e.api("PUT", "/api/v1/projects/web/secrets/DEPLOY_KEY", map[string]string{"value": value + "3"}).want(t, http.StatusNoContent, nil) // replaced

	for _, path := range []string{"/api/v1/projects/web/secrets", "/api/v1/projects/web", "/api/v1/projects"} {
		r := e.api("GET", path, nil)
		r.want(t, http.StatusOK, nil)
		if strings.Contains(string(r.body), value) {
			t.Errorf("GET %s shows a secret value: %s", path, r.body)
		}
	}
	e.api("GET", "/api/v1/projects/web/secrets", nil).want(t, http.StatusOK, &names)
	if strings.Join(names.Names, ",") != "DEPLOY_KEY,api_token" {
		t.Errorf("names %v", names.Names)
	}

	e.refuse(e.admin, []refusal{
		{"name with a dash", "PUT", "/api/v1/projects/web/secrets/DEPLOY-KEY", map[string]string{"value": "v"}, 400, "invalid", `secret name "DEPLOY-KEY"`},
		{"name starting with a digit", "PUT", "/api/v1/projects/web/secrets/1KEY", map[string]string{"value": "v"}, 400, "invalid", `secret name "1KEY"`},
		{"KILN_ prefix", "PUT", "/api/v1/projects/web/secrets/KILN_TOKEN", map[string]string{"value": "v"}, 400, "invalid", "not starting with KILN_"},
		{"name too long", "PUT", "/api/v1/projects/web/secrets/" + strings.Repeat("A", 129), map[string]string{"value": "v"}, 400, "invalid", "secret name"},
		{"empty value", "PUT", "/api/v1/projects/web/secrets/OTHER", map[string]string{"value": ""}, 400, "invalid", "value: required"},
		{"unknown field", "PUT", "/api/v1/projects/web/secrets/OTHER", map[string]string{"value": "v", "name": "OTHER"}, 400, "bad_request", `unknown field "name"`},
		{"unknown project", "PUT", "/api/v1/projects/nope/secrets/OTHER", map[string]string{"value": "v"}, 404, "not_found", `project "nope"`},
		{"list: unknown project", "GET", "/api/v1/projects/nope/secrets", nil, 404, "not_found", `project "nope"`},
		{"delete: unknown secret", "DELETE", "/api/v1/projects/web/secrets/OTHER", nil, 404, "not_found", "secret"},
	}, func(e *env) {
		e.api("GET", "/api/v1/projects/web/secrets", nil).want(e.t, http.StatusOK, &names)
		if strings.Join(names.Names, ",") != "DEPLOY_KEY,api_token" {
			e.t.Errorf("names %v", names.Names)
		}
	})

	e.api("DELETE", "/api/v1/projects/web/secrets/api_token", nil).want(t, http.StatusNoContent, nil)
	e.api("GET", "/api/v1/projects/web/secrets", nil).want(t, http.StatusOK, &names)
	if strings.Join(names.Names, ",") != "DEPLOY_KEY" {
		t.Errorf("names after delete %v", names.Names)
	}
}

// A clone URL may carry a token (https://x-access-token:TOKEN@host/…):
// the project's view shows it without, in every answer that shows the
// project, while fetches still use it.
func TestProjectViewHidesCloneURLCredentials(t *testing.T) {
	e := newEnv(t)
	const token = "ghp_CloneURLTokenNeverShown"
	created := e.api("POST", "/api/v1/projects", map[string]any{"name": "private", "clone_url": "https://x-access-token:" + token + "@git.example.com/acme/private.git", "default_branch": "main"})
	if created.code != http.StatusCreated {
		t.Fatalf("create: HTTP %d %s", created.code, created.body)
	}
	one := e.api("GET", "/api/v1/projects/private", nil)
	all := e.api("GET", "/api/v1/projects", nil)
	for what, r := range map[string]*response{"create": created, "get": one, "list": all} {
		if strings.Contains(string(r.body), token) {
			t.Errorf("%s shows the clone URL's token: %s", what, r.body)
		}
	}
	var v struct {
		CloneURL string `json:"clone_url"`
	}
	if err := json.Unmarshal(one.body, &v); err != nil || v.CloneURL != "https://x-access-token:***@git.example.com/acme/private.git" {
		t.Errorf("clone_url %q, %v", v.CloneURL, err)
	}
	p, err := e.srv.Store.ProjectByName(context.Background(), "private")
	if err != nil || !strings.Contains(p.CloneURL, token) {
		t.Fatalf("the stored clone URL lost its credentials: %v %v", p, err)
	}
}
