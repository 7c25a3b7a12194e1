package forgeapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/forgeapi"
	"github.com/kilnci/kiln/internal/forgestatus/fakeforge"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

const (
	token    = "forge_token_never_shown"
	readOnly = "forge_token_read_only"
	hookURL  = "https://kiln.example.com/hooks/github/web"
	secret   = "first-secret-0123456789"
	secret2  = "second-secret-0123456789"
)

var ctx = context.Background()

func newClient(t *testing.T, cfg forgeapi.Config) forgeapi.Client {
	t.Helper()
	c, err := forgeapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refused checks that err is a refusal of kind with status, whose message
// says what to do and never holds a token.
func refused(t *testing.T, what string, err error, kind error, status int, says string) {
	t.Helper()
	var fe *forgeapi.Error
	switch {
	case err == nil:
		t.Errorf("%s: no error", what)
	case !errors.Is(err, kind) || !errors.As(err, &fe) || fe.Status != status:
		t.Errorf("%s: %v: want %v, status %d", what, err, kind, status)
	case !strings.Contains(err.Error(), says):
		t.Errorf("%s: %q does not say %q", what, err, says)
	case strings.Contains(err.Error(), token) || strings.Contains(err.Error(), readOnly) || strings.Contains(err.Error(), secret):
		t.Errorf("%s: a credential in the error: %q", what, err)
	}
}

func TestGitHub(t *testing.T) {
	for _, prefix := range []string{"", "/api/v3"} { // github.com, GitHub Enterprise Server
		t.Run("prefix="+prefix, func(t *testing.T) {
			gh := fakegithub.New(fakegithub.WithPathPrefix(prefix))
			defer gh.Close()
			gh.AddToken(token)
			gh.AddToken(readOnly)
			gh.ReadOnly(readOnly)
			gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: "https://github.example/acme/web.git", DefaultBranch: "trunk", Private: true})
			api := strings.TrimSuffix(gh.URL(), "/")
			c := newClient(t, forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/web", Token: token})

			r, err := c.Repository(ctx)
			if err != nil || r.CloneURL != "https://github.example/acme/web.git" || r.DefaultBranch != "trunk" {
				t.Fatalf("Repository: %+v, %v", r, err)
			}
			h, err := c.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents)
			if err != nil || h.Action != "created" {
				t.Fatalf("EnsureWebhook: %+v, %v", h, err)
			}
			hooks := gh.Hooks("acme/web")
			if len(hooks) != 1 || hooks[0].URL != hookURL || hooks[0].Secret != secret || hooks[0].ContentType != "json" ||
				!slices.Equal(hooks[0].Events, []string{"push", "pull_request"}) || !hooks[0].Active || hooks[0].ID != h.ID {
				t.Fatalf("hooks %+v", hooks)
			}
			// Again, with another secret: the same hook, updated.
			h2, err := c.EnsureWebhook(ctx, hookURL, secret2, forgeapi.KilnEvents)
			if err != nil || h2.Action != "updated" || h2.ID != h.ID {
				t.Fatalf("EnsureWebhook again: %+v, %v", h2, err)
			}
			if hooks := gh.Hooks("acme/web"); len(hooks) != 1 || hooks[0].Secret != secret2 || hooks[0].ContentType != "json" {
				t.Fatalf("hooks after the update %+v", hooks)
			}

			_, err = newClient(t, forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/web", Token: "wrong"}).Repository(ctx)
			refused(t, "a bad token", err, forgeapi.ErrUnauthorized, 401, "Bad credentials")
			_, err = newClient(t, forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/nope", Token: token}).Repository(ctx)
			refused(t, "no such repository", err, forgeapi.ErrNotFound, 404, "no such repository")
			ro := newClient(t, forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/web", Token: readOnly})
			if _, err := ro.Repository(ctx); err != nil {
				t.Errorf("a read-only token's lookup: %v", err)
			}
			_, err = ro.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents)
			refused(t, "no admin rights", err, forgeapi.ErrForbidden, 403, "admin:repo_hook")
			_, err = c.EnsureWebhook(ctx, "ftp://kiln.example.com/hooks", secret, forgeapi.KilnEvents)
			refused(t, "a URL GitHub refuses", err, forgeapi.ErrInvalid, 422, "Validation Failed: url is not a valid URL")
			if n := len(gh.Hooks("acme/web")); n != 1 {
				t.Errorf("%d hooks after the refusals", n)
			}
		})
	}
}

func TestGitHubApp(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	gh.RegisterApp(7, &key.PublicKey, 99)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web"})
	api := strings.TrimSuffix(gh.URL(), "/")
	c := newClient(t, forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/web", AppID: 7, AppKey: keyPEM, InstallationID: 99})
	if r, err := c.Repository(ctx); err != nil || r.CloneURL != "https://github.com/acme/web.git" || r.DefaultBranch != "main" {
		t.Fatalf("Repository: %+v, %v", r, err)
	}
	if _, err := c.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents); err != nil {
		t.Fatal(err)
	}
	if gh.TokensIssued() == 0 || len(gh.Hooks("acme/web")) != 1 {
		t.Fatalf("tokens issued %d, hooks %+v", gh.TokensIssued(), gh.Hooks("acme/web"))
	}
	_, err = newClient(t, forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/web", AppID: 7, AppKey: keyPEM, InstallationID: 100}).Repository(ctx)
	refused(t, "another installation", err, forgeapi.ErrUnauthorized, 404, "installation token")
	if _, err := forgeapi.New(forgeapi.Config{Forge: forgeapi.GitHub, APIURL: api, Repo: "acme/web", AppID: 7, AppKey: []byte("not a key"), InstallationID: 99}); err == nil {
		t.Error("a bad App key accepted")
	}
}

func TestGitLab(t *testing.T) {
	fg := fakeforge.New(fakeforge.GitLab, "group/sub/web", token)
	defer fg.Close()
	fg.AddReadOnlyToken(readOnly)
	fg.SetRepository("https://gitlab.example.com/group/sub/web.git", "develop")
	c := newClient(t, forgeapi.Config{Forge: forgeapi.GitLab, APIURL: fg.URL(), Repo: "group/sub/web", Token: token})
	r, err := c.Repository(ctx)
	if err != nil || r.CloneURL != "https://gitlab.example.com/group/sub/web.git" || r.DefaultBranch != "develop" {
		t.Fatalf("Repository: %+v, %v", r, err)
	}
	h, err := c.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents)
	if err != nil || h.Action != "created" {
		t.Fatalf("EnsureWebhook: %+v, %v", h, err)
	}
	hooks := fg.Hooks()
	if len(hooks) != 1 || hooks[0].URL != hookURL || hooks[0].Secret != secret || !hooks[0].PushEvents || !hooks[0].TagPushEvents ||
		!hooks[0].MergeRequestsEvents || !hooks[0].EnableSSLVerification {
		t.Fatalf("hooks %+v", hooks)
	}
	if h2, err := c.EnsureWebhook(ctx, hookURL, secret2, forgeapi.KilnEvents); err != nil || h2.Action != "updated" || h2.ID != h.ID {
		t.Fatalf("EnsureWebhook again: %+v, %v", h2, err)
	}
	if hooks := fg.Hooks(); len(hooks) != 1 || hooks[0].Secret != secret2 || !hooks[0].MergeRequestsEvents {
		t.Fatalf("hooks after the update %+v", hooks)
	}

	_, err = newClient(t, forgeapi.Config{Forge: forgeapi.GitLab, APIURL: fg.URL(), Repo: "group/sub/web", Token: "wrong"}).Repository(ctx)
	refused(t, "a bad token", err, forgeapi.ErrUnauthorized, 401, "401 Unauthorized")
	_, err = newClient(t, forgeapi.Config{Forge: forgeapi.GitLab, APIURL: fg.URL(), Repo: "group/other", Token: token}).Repository(ctx)
	refused(t, "no such project", err, forgeapi.ErrNotFound, 404, "Project Not Found")
	ro := newClient(t, forgeapi.Config{Forge: forgeapi.GitLab, APIURL: fg.URL(), Repo: "group/sub/web", Token: readOnly})
	if _, err := ro.Repository(ctx); err != nil {
		t.Errorf("a developer's lookup: %v", err)
	}
	_, err = ro.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents)
	refused(t, "not a maintainer", err, forgeapi.ErrForbidden, 403, "Maintainer")
	_, err = c.EnsureWebhook(ctx, "ftp://kiln.example.com/hooks", secret, forgeapi.KilnEvents)
	refused(t, "a URL GitLab refuses", err, forgeapi.ErrInvalid, 422, "url is blocked")
}

func TestGitea(t *testing.T) {
	fg := fakeforge.New(fakeforge.Gitea, "owner/web", token)
	defer fg.Close()
	fg.AddReadOnlyToken(readOnly)
	fg.SetRepository("https://gitea.example.com/owner/web.git", "main")
	c := newClient(t, forgeapi.Config{Forge: forgeapi.Gitea, APIURL: fg.URL(), Repo: "owner/web", Token: token})
	r, err := c.Repository(ctx)
	if err != nil || r.CloneURL != "https://gitea.example.com/owner/web.git" || r.DefaultBranch != "main" {
		t.Fatalf("Repository: %+v, %v", r, err)
	}
	h, err := c.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents)
	if err != nil || h.Action != "created" {
		t.Fatalf("EnsureWebhook: %+v, %v", h, err)
	}
	hooks := fg.Hooks()
	if len(hooks) != 1 || hooks[0].Type != "gitea" || hooks[0].URL != hookURL || hooks[0].Secret != secret || hooks[0].ContentType != "json" ||
		!slices.Equal(hooks[0].Events, []string{"push", "pull_request"}) || !hooks[0].Active {
		t.Fatalf("hooks %+v", hooks)
	}
	// Gitea cannot change a hook's secret: the hook is replaced.
	if h2, err := c.EnsureWebhook(ctx, hookURL, secret2, forgeapi.KilnEvents); err != nil || h2.Action != "replaced" {
		t.Fatalf("EnsureWebhook again: %+v, %v", h2, err)
	}
	if hooks := fg.Hooks(); len(hooks) != 1 || hooks[0].Secret != secret2 || !hooks[0].Active {
		t.Fatalf("hooks after the update %+v", hooks)
	}

	_, err = newClient(t, forgeapi.Config{Forge: forgeapi.Gitea, APIURL: fg.URL(), Repo: "owner/web", Token: "wrong"}).Repository(ctx)
	refused(t, "a bad token", err, forgeapi.ErrUnauthorized, 401, "token was refused")
	_, err = newClient(t, forgeapi.Config{Forge: forgeapi.Gitea, APIURL: fg.URL(), Repo: "owner/other", Token: token}).Repository(ctx)
	refused(t, "no such repository", err, forgeapi.ErrNotFound, 404, "no such repository")
	ro := newClient(t, forgeapi.Config{Forge: forgeapi.Gitea, APIURL: fg.URL(), Repo: "owner/web", Token: readOnly})
	if _, err := ro.Repository(ctx); err != nil {
		t.Errorf("a reader's lookup: %v", err)
	}
	_, err = ro.EnsureWebhook(ctx, hookURL, secret, forgeapi.KilnEvents)
	refused(t, "no admin rights", err, forgeapi.ErrForbidden, 403, "admin rights")
}

func TestForgeDown(t *testing.T) {
	fg := fakeforge.New(fakeforge.GitLab, "g/web", token)
	url := fg.URL()
	fg.Close()
	_, err := newClient(t, forgeapi.Config{Forge: forgeapi.GitLab, APIURL: url, Repo: "g/web", Token: token}).Repository(ctx)
	if !errors.Is(err, forgeapi.ErrUnavailable) || strings.Contains(err.Error(), token) {
		t.Fatalf("a forge down: %v", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []forgeapi.Config{
		{Forge: "bitbucket", APIURL: "https://x", Repo: "a/b", Token: "t"},
		{Forge: forgeapi.GitHub, APIURL: "https://x", Repo: "ab", Token: "t"},
		{Forge: forgeapi.GitLab, APIURL: "https://x", Repo: "a/b"},
		{Forge: forgeapi.Gitea, APIURL: "https://x", Repo: "a/b", InstallationID: 3},
	} {
		if _, err := forgeapi.New(cfg); err == nil {
			t.Errorf("%+v: accepted", cfg)
		}
	}
}

// The fakes refuse, as the forges do, a hook request Kiln's clients never
// make: so a client that drifts from the APIs fails its tests.
func TestFakesValidateHooks(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken(token)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web"})
	send := func(method, url string, hdr map[string]string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	ghHdr := map[string]string{"Authorization": "Bearer " + token, "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
	hooks := gh.URL() + "repos/acme/web/hooks"
	ok := `{"config":{"url":"https://k.example/h","content_type":"json","secret":"s"},"events":["push"]}`
	for _, c := range []struct {
		name, body string
		status     int
		says       string
	}{
		{"no config", `{"events":["push"]}`, 422, "Config is required"},
		{"no url", `{"config":{"content_type":"json"}}`, 422, "url is missing"},
		{"bad content type", `{"config":{"url":"https://k.example/h","content_type":"xml"}}`, 422, "content_type"},
		{"unknown event", `{"config":{"url":"https://k.example/h"},"events":["pushes"]}`, 422, "not a valid event"},
		{"bad JSON", `{`, 400, "Problems parsing JSON"},
		{"created", ok, 201, `"secret":"********"`},
		{"duplicate", ok, 422, "Hook already exists on this repository"},
	} {
		if code, body := send("POST", hooks, ghHdr, c.body); code != c.status || !strings.Contains(body, c.says) {
			t.Errorf("github %s: %d %s", c.name, code, body)
		}
	}
	noAuth := map[string]string{"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
	if code, _ := send("POST", hooks, noAuth, ok); code != 401 {
		t.Errorf("github without a token: %d", code)
	}

	gl := fakeforge.New(fakeforge.GitLab, "g/web", token)
	defer gl.Close()
	glHooks := gl.URL() + "/api/v4/projects/g%2Fweb/hooks"
	if code, body := send("POST", glHooks, map[string]string{"PRIVATE-TOKEN": token}, `{"push_events":true}`); code != 400 || !strings.Contains(body, "url is missing") {
		t.Errorf("gitlab without url: %d %s", code, body)
	}
	if code, _ := send("POST", glHooks, nil, `{"url":"https://k.example/h"}`); code != 401 {
		t.Errorf("gitlab without a token: %d", code)
	}
	if code, body := send("PUT", glHooks+"/77", map[string]string{"PRIVATE-TOKEN": token}, `{"url":"https://k.example/h"}`); code != 404 {
		t.Errorf("gitlab PUT of no hook: %d %s", code, body)
	}

	gt := fakeforge.New(fakeforge.Gitea, "o/web", token)
	defer gt.Close()
	gtHooks := gt.URL() + "/api/v1/repos/o/web/hooks"
	auth := map[string]string{"Authorization": "token " + token}
	for _, c := range []struct{ name, body, says string }{
		{"no type", `{"config":{"url":"https://k.example/h","content_type":"json"}}`, "Invalid hook type"},
		{"no url", `{"type":"gitea","config":{"content_type":"json"}}`, "Missing config option: url"},
		{"no content type", `{"type":"gitea","config":{"url":"https://k.example/h"}}`, "Missing config option: content_type"},
		{"bad content type", `{"type":"gitea","config":{"url":"https://k.example/h","content_type":"xml"}}`, "Invalid content type"},
	} {
		if code, body := send("POST", gtHooks, auth, c.body); code != 422 || !strings.Contains(body, c.says) {
			t.Errorf("gitea %s: %d %s", c.name, code, body)
		}
	}
	// Gitea's edit keeps the secret the hook was created with.
	code, body := send("POST", gtHooks, auth, `{"type":"gitea","config":{"url":"https://k.example/h","content_type":"json","secret":"one"},"active":true}`)
	var h struct{ ID int64 }
	if code != 201 || json.Unmarshal([]byte(body), &h) != nil {
		t.Fatalf("gitea create: %d %s", code, body)
	}
	if code, body := send("PATCH", gtHooks+"/"+jsonNumber(h.ID), auth, `{"config":{"url":"https://k.example/h","content_type":"json","secret":"two"},"events":["push"]}`); code != 200 {
		t.Fatalf("gitea edit: %d %s", code, body)
	}
	if hs := gt.Hooks(); len(hs) != 1 || hs[0].Secret != "one" {
		t.Errorf("gitea hooks after an edit: %+v", hs)
	}
}

func jsonNumber(n int64) string { b, _ := json.Marshal(n); return string(b) }
