package api_test

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
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/forgestatus/fakeforge"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// publicURL is the -public-url of the onboarding tests' server.
const publicURL = "https://kiln.example.com"

func withPublicURL(c *server.Config) { c.PublicURL = publicURL }

// onboardGitHub is the request of `kiln project add NAME -github acme/web`.
func onboardGitHub(name string, gh *fakegithub.Server, token string) map[string]any {
	return map[string]any{"name": name, "forge": "github", "forge_repo": "acme/web",
		"forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": token, "forge_webhook": true}
}

// A repository onboarded in one request: the clone URL and default branch
// come from GitHub, the webhook is created there with a generated secret
// and the right events, and a push GitHub signs with that secret builds.
// Run again, the same hook is updated (with a new secret when one is
// given); a name taken is refused before GitHub is asked.
func TestOnboardGitHub(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	const token = "ghp_onboard_token_never_shown"
	gh.AddToken(token)
	dir, head := newRepo(t)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: dir, DefaultBranch: "main"})
	e := newEnv(t, withPublicURL)

	var p api.ProjectView
	r := e.api("POST", "/api/v1/projects", onboardGitHub("web", gh, token))
	r.want(t, http.StatusCreated, &p)
	if p.CloneURL != dir || p.DefaultBranch != "main" || !p.HasWebhookSecret || p.Forge == nil || p.Forge.Repo != "acme/web" || !p.HasForgeToken {
		t.Fatalf("created %s", r.body)
	}
	if p.Webhook == nil || p.Webhook.URL != publicURL+"/hooks/github/web" || p.Webhook.Action != "created" {
		t.Fatalf("webhook %s", r.body)
	}
	hooks := gh.Hooks("acme/web")
	if len(hooks) != 1 || hooks[0].URL != p.Webhook.URL || len(hooks[0].Secret) < 16 || hooks[0].ContentType != "json" ||
		strings.Join(hooks[0].Events, ",") != "push,pull_request" || !hooks[0].Active {
		t.Fatalf("hooks on GitHub: %+v", hooks)
	}
	secret := hooks[0].Secret
	if strings.Contains(string(r.body), secret) || strings.Contains(string(r.body), token) {
		t.Fatalf("the answer shows a secret: %s", r.body)
	}
	// GitHub delivers a push signed with the secret it was given.
	body := githubPush(t, "main", head)
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	e.hook("github", "web", githubHeader("push", "d-1", secret, body), body).want(t, http.StatusCreated, &out)
	wantQueued(t, e.waitPlanned(out.BuildID), head)

	// Again, through PATCH with a new secret: the same hook, updated.
	const rotated = "rotated-secret-0123456789"
	r = e.api("PATCH", "/api/v1/projects/web", map[string]any{"forge_webhook": true, "webhook_secret": rotated})
	r.want(t, http.StatusOK, &p)
	if hooks := gh.Hooks("acme/web"); p.Webhook == nil || p.Webhook.Action != "updated" || len(hooks) != 1 || hooks[0].Secret != rotated {
		t.Fatalf("re-run: %s; hooks %+v", r.body, hooks)
	}
	e.hook("github", "web", githubHeader("push", "d-old", secret, body), body).wantError(t, http.StatusUnauthorized, "bad_signature")
	// (The same push again: verified, and a duplicate.)
	e.hook("github", "web", githubHeader("push", "d-2", rotated, body), body).want(t, http.StatusOK, nil)

	// A name taken: refused, and GitHub not asked.
	lookups := gh.Calls(fakegithub.EndpointGetRepo)
	e.api("POST", "/api/v1/projects", onboardGitHub("web", gh, token)).wantError(t, http.StatusConflict, "conflict", "web")
	if gh.Calls(fakegithub.EndpointGetRepo) != lookups {
		t.Error("GitHub asked for a project whose name is taken")
	}
	// -url and -branch given win over the forge's.
	r = e.api("POST", "/api/v1/projects", withFields(onboardGitHub("mirror", gh, token), map[string]any{"clone_url": dir + "/.git", "default_branch": "dev"}))
	r.want(t, http.StatusCreated, &p)
	if p.CloneURL != dir+"/.git" || p.DefaultBranch != "dev" || len(gh.Hooks("acme/web")) != 2 {
		t.Fatalf("given url and branch: %s", r.body)
	}
	// Removed and added again: the hook Kiln left on GitHub is updated, with the new secret.
	e.api("DELETE", "/api/v1/projects/web", nil).want(t, http.StatusNoContent, nil)
	r = e.api("POST", "/api/v1/projects", onboardGitHub("web", gh, token))
	r.want(t, http.StatusCreated, &p)
	if hooks := gh.Hooks("acme/web"); p.Webhook.Action != "updated" || len(hooks) != 2 || hooks[0].Secret == rotated || len(hooks[0].Secret) < 16 {
		t.Fatalf("added again: %s; hooks %+v", r.body, hooks)
	}
}

func withFields(m, extra map[string]any) map[string]any {
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// What the forge refuses, and bad requests, store nothing: no project.
func TestOnboardRefusals(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	const token, readOnly = "ghp_admin_token", "ghp_read_only_token"
	gh.AddToken(token)
	gh.AddToken(readOnly)
	gh.ReadOnly(readOnly)
	dir, _ := newRepo(t)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: dir})
	e := newEnv(t, withPublicURL)
	noProject := func(e *env) {
		e.api("GET", "/api/v1/projects/web", nil).wantError(e.t, http.StatusNotFound, "not_found")
	}
	other := onboardGitHub("web", gh, token)
	other["forge_repo"] = "acme/nope"
	noConn := map[string]any{"name": "web", "clone_url": dir, "forge_webhook": true}
	e.refuse(e.admin, []refusal{
		{"a bad token", "POST", "/api/v1/projects", onboardGitHub("web", gh, "ghp_wrong"), 422, "forge_unauthorized", "401 Bad credentials"},
		{"no such repository", "POST", "/api/v1/projects", other, 422, "forge_not_found", "no such repository, or the token may not see it"},
		{"no admin rights on hooks", "POST", "/api/v1/projects", onboardGitHub("web", gh, readOnly), 422, "forge_forbidden", "admin rights"},
		{"no forge connection", "POST", "/api/v1/projects", noConn, 400, "invalid", "forge_webhook: needs the project's forge connection"},
		{"a short secret", "POST", "/api/v1/projects", withFields(onboardGitHub("web", gh, token), map[string]any{"webhook_secret": "short"}), 400, "invalid", "webhook_secret"},
		{"a bad name", "POST", "/api/v1/projects", onboardGitHub("Web!", gh, token), 400, "invalid", "name"},
	}, noProject)
	if n := len(gh.Hooks("acme/web")); n != 0 {
		t.Fatalf("%d hooks after refusals", n)
	}
	t.Run("GitHub refuses the hook", func(t *testing.T) {
		e := e.sub(t)
		gh.FailNext(fakegithub.EndpointCreateHook, http.StatusUnprocessableEntity, 1)
		e.api("POST", "/api/v1/projects", onboardGitHub("web", gh, token)).wantError(t, 422, "forge_invalid", "422 Validation Failed")
		noProject(e)
	})
	t.Run("GitHub down", func(t *testing.T) {
		e := e.sub(t)
		gh.FailNext(fakegithub.EndpointGetRepo, http.StatusServiceUnavailable, 1)
		e.api("POST", "/api/v1/projects", onboardGitHub("web", gh, token)).wantError(t, http.StatusBadGateway, "forge_unavailable", "503", "try again later")
		noProject(e)
	})
	t.Run("no admin token", func(t *testing.T) {
		e := e.sub(t)
		e.do("", "POST", "/api/v1/projects", onboardGitHub("web", gh, token), nil).wantError(t, http.StatusUnauthorized, "unauthorized")
		e.do(e.agent, "POST", "/api/v1/projects", onboardGitHub("web", gh, token), nil).wantError(t, http.StatusForbidden, "forbidden")
		noProject(e)
	})
	// A server without -public-url cannot tell the forge where to deliver.
	t.Run("no public URL", func(t *testing.T) {
		e := newEnv(t)
		calls := gh.Calls(fakegithub.EndpointGetRepo)
		e.api("POST", "/api/v1/projects", onboardGitHub("web", gh, token)).wantError(t, http.StatusBadRequest, "no_public_url", "-public-url")
		noProject(e)
		if gh.Calls(fakegithub.EndpointGetRepo) != calls {
			t.Error("the forge was asked")
		}
	})
	// A refusal on PATCH changes nothing either.
	t.Run("update refused", func(t *testing.T) {
		e := e.sub(t)
		e.project("kept", dir, map[string]any{"forge": "github", "forge_repo": "acme/web", "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": readOnly})
		const secret = "a-new-secret-0123456789"
		e.api("PATCH", "/api/v1/projects/kept", map[string]any{"forge_webhook": true, "webhook_secret": secret}).wantError(t, 422, "forge_forbidden")
		body := githubPush(t, "main", "0123456789abcdef0123456789abcdef01234567")
		e.hook("github", "kept", githubHeader("push", "d-kept", hookSecret, body), body).want(t, http.StatusCreated, nil)
	})
}

// GitLab and Gitea onboard the same way, each with its own hook shape,
// and a push each forge signs its way with the secret it was given builds.
func TestOnboardGitLabAndGitea(t *testing.T) {
	const token = "forge_token_onboard"
	dir, head := newRepo(t)
	e := newEnv(t, withPublicURL)

	gl := fakeforge.New(fakeforge.GitLab, "group/sub/web", token)
	defer gl.Close()
	gl.SetRepository(dir, "main")
	var p api.ProjectView
	r := e.api("POST", "/api/v1/projects", map[string]any{"name": "gl", "forge": "gitlab", "forge_repo": "group/sub/web",
		"forge_url": gl.URL(), "forge_token": token, "forge_webhook": true})
	r.want(t, http.StatusCreated, &p)
	hooks := gl.Hooks()
	if p.CloneURL != dir || p.Webhook == nil || p.Webhook.URL != publicURL+"/hooks/gitlab/gl" || len(hooks) != 1 || hooks[0].URL != p.Webhook.URL ||
		!hooks[0].PushEvents || !hooks[0].TagPushEvents || !hooks[0].MergeRequestsEvents || len(hooks[0].Secret) < 16 {
		t.Fatalf("gitlab: %s; hooks %+v", r.body, hooks)
	}
	body := edit(t, fixture(t, "gitlab/push.json"), func(m map[string]any) {
		m["ref"], m["after"], m["checkout_sha"] = "refs/heads/main", head, head
	})
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	e.hook("gitlab", "gl", gitlabHeader("Push Hook", "gl-1", hooks[0].Secret), body).want(t, http.StatusCreated, &out)
	wantQueued(t, e.waitPlanned(out.BuildID), head)
	r = e.api("PATCH", "/api/v1/projects/gl", map[string]any{"forge_webhook": true})
	r.want(t, http.StatusOK, &p)
	if again := gl.Hooks(); p.Webhook.Action != "updated" || len(again) != 1 || again[0].Secret != hooks[0].Secret {
		t.Fatalf("gitlab re-run: %s; hooks %+v", r.body, again)
	}
	gl.AddReadOnlyToken("developer")
	e.api("POST", "/api/v1/projects", map[string]any{"name": "gl2", "forge": "gitlab", "forge_repo": "group/sub/web",
		"forge_url": gl.URL(), "forge_token": "developer", "forge_webhook": true}).wantError(t, 422, "forge_forbidden", "Maintainer")
	e.api("GET", "/api/v1/projects/gl2", nil).wantError(t, http.StatusNotFound, "not_found")

	gt := fakeforge.New(fakeforge.Gitea, "owner/web", token)
	defer gt.Close()
	gt.SetRepository(dir, "main")
	r = e.api("POST", "/api/v1/projects", map[string]any{"name": "gt", "forge": "gitea", "forge_repo": "owner/web",
		"forge_url": gt.URL(), "forge_token": token, "forge_webhook": true})
	r.want(t, http.StatusCreated, &p)
	ghooks := gt.Hooks()
	if p.CloneURL != dir || p.Webhook == nil || p.Webhook.URL != publicURL+"/hooks/gitea/gt" || len(ghooks) != 1 || ghooks[0].Type != "gitea" ||
		ghooks[0].ContentType != "json" || strings.Join(ghooks[0].Events, ",") != "push,pull_request" || !ghooks[0].Active {
		t.Fatalf("gitea: %s; hooks %+v", r.body, ghooks)
	}
	body = edit(t, fixture(t, "gitea/push.json"), func(m map[string]any) {
		m["ref"], m["after"] = "refs/heads/main", head
		m["head_commit"].(map[string]any)["id"] = head
	})
	e.hook("gitea", "gt", giteaHeader("gt-1", ghooks[0].Secret, body), body).want(t, http.StatusCreated, &out)
	wantQueued(t, e.waitPlanned(out.BuildID), head)
	// A new secret on Gitea: the hook is replaced (Gitea keeps a hook's
	// secret on an edit), and the new secret is the one that verifies.
	const rotated = "gitea-rotated-0123456789"
	r = e.api("PATCH", "/api/v1/projects/gt", map[string]any{"forge_webhook": true, "webhook_secret": rotated})
	r.want(t, http.StatusOK, &p)
	if again := gt.Hooks(); p.Webhook.Action != "replaced" || len(again) != 1 || again[0].Secret != rotated {
		t.Fatalf("gitea re-run: %s; hooks %+v", r.body, again)
	}
	e.hook("gitea", "gt", giteaHeader("gt-2", rotated, body), body).want(t, http.StatusOK, nil) // the same push: a duplicate
	e.api("POST", "/api/v1/projects", map[string]any{"name": "gt2", "forge": "gitea", "forge_repo": "owner/web",
		"forge_url": gt.URL(), "forge_token": "wrong", "forge_webhook": true}).wantError(t, 422, "forge_unauthorized", "401")
	if _, err := e.srv.Store.ProjectByName(t.Context(), "gt2"); err == nil {
		t.Fatal("a project stored after the forge refused")
	} else if !strings.Contains(err.Error(), store.ErrNotFound.Error()) {
		t.Fatal(err)
	}
}

// Through the server's GitHub App: the installation's token, minted by
// the server, looks the repository up and creates the hook.
func TestOnboardGitHubApp(t *testing.T) {
	ghKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		ghKey = k
	})
	gh := fakegithub.New()
	defer gh.Close()
	gh.RegisterApp(ghAppID, &ghKey.PublicKey, ghInstallation)
	dir, _ := newRepo(t)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: dir})
	e := newEnv(t, withPublicURL, func(c *server.Config) {
		c.Actions.GitHub = actions.Connection{BaseURL: gh.URL(), AppID: ghAppID, WebhookSecret: ghSecret,
			PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(ghKey)})}
		c.Actions.ReconcileInterval, c.Actions.ReapInterval = time.Hour, time.Hour
	})
	req := onboardGitHub("web", gh, "")
	delete(req, "forge_token")
	req["forge_installation_id"] = ghInstallation
	var p api.ProjectView
	e.api("POST", "/api/v1/projects", req).want(t, http.StatusCreated, &p)
	if p.CloneURL != dir || p.Forge.InstallationID != ghInstallation || p.HasForgeToken || len(gh.Hooks("acme/web")) != 1 || gh.TokensIssued() == 0 {
		t.Fatalf("created %s; hooks %+v", dump(p), gh.Hooks("acme/web"))
	}
	req["name"], req["forge_installation_id"] = "other", ghInstallation+1
	e.api("POST", "/api/v1/projects", req).wantError(t, 422, "forge_unauthorized", "installation token")
	e.api("GET", "/api/v1/projects/other", nil).wantError(t, http.StatusNotFound, "not_found")
}

// Two onboardings of one name at once: one is refused, and the secret
// GitHub's hook has is the one the project kept.
func TestOnboardAtOnce(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	const token = "ghp_at_once"
	gh.AddToken(token)
	dir, head := newRepo(t)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: dir})
	e := newEnv(t, withPublicURL)
	rs := e.sendAll(8, func(i int) (string, string, string, any, http.Header) {
		return e.admin, "POST", "/api/v1/projects", withFields(onboardGitHub("web", gh, token), map[string]any{"webhook_secret": fmt.Sprintf("secret-number-%d-0123456789", i)}), nil
	})
	created := 0
	for _, r := range rs {
		switch r.code {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Errorf("HTTP %d %s", r.code, r.body)
		}
	}
	hooks := gh.Hooks("acme/web")
	if created != 1 || len(hooks) != 1 {
		t.Fatalf("%d created, hooks %+v", created, hooks)
	}
	body := githubPush(t, "main", head)
	e.hook("github", "web", githubHeader("push", "d-1", hooks[0].Secret, body), body).want(t, http.StatusCreated, nil)
}
