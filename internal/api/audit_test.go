package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// auditLog reads the audit log through the API, newest first.
func (e *env) auditLog(query string) api.AuditPage {
	e.t.Helper()
	var page api.AuditPage
	e.api("GET", "/api/v1/audit?"+query, nil).want(e.t, http.StatusOK, &page)
	return page
}

// auditCount counts every event in the log.
func (e *env) auditCount() int {
	e.t.Helper()
	return len(e.auditLog("limit=1000").Events)
}

// adminID is the id of the env's admin token.
func (e *env) adminID() string {
	e.t.Helper()
	var ts []store.Token
	e.api("GET", "/api/v1/tokens", nil).want(e.t, http.StatusOK, &ts)
	for _, tok := range ts {
		if tok.Kind == store.TokenAdmin {
			return strconv.FormatInt(tok.ID, 10)
		}
	}
	e.t.Fatal("no admin token")
	return ""
}

const auditUA = "kiln-audit-test/1"

// change sends an admin request with the test's User-Agent, checks its
// answer's status, and returns the one event it added to the log.
func (e *env) change(method, path string, body any, code int, out any) api.AuditEventView {
	e.t.Helper()
	before := e.auditLog("limit=1")
	e.do(e.admin, method, path, body, http.Header{"User-Agent": {auditUA}}).want(e.t, code, out)
	page := e.auditLog("limit=10")
	var added []api.AuditEventView
	for _, ev := range page.Events {
		if len(before.Events) == 0 || ev.ID > before.Events[0].ID {
			added = append(added, ev)
		}
	}
	if len(added) != 1 {
		e.t.Fatalf("%s %s added %d audit events, want 1: %s", method, path, len(added), dump(added))
	}
	return added[0]
}

// Every change an admin makes through the API is one event, naming the
// token that made it, what it did to what, from which address and
// client; none holds a secret's value, a token or a webhook secret.
func TestAuditRecordsEveryChange(t *testing.T) {
	e := newEnv(t)
	admin := e.adminID()
	dir, head := prRepo(t, "refs/pull/2/head")
	const (
		secretValue = "audit-secret-value-hunter2"
		forgeToken  = "glpat-audit-forge-token-never-logged"
		// registryPassword is a registry's password, never logged either.
		registryPassword = "audit-registry-password-hunter3"
	)

	type check struct {
		name           string
		ev             api.AuditEventView
		action, target string
		detail         []string // parts of the detail's JSON
	}
	var checks []check
	add := func(name string, ev api.AuditEventView, action, target string, detail ...string) {
		checks = append(checks, check{name, ev, action, target, detail})
	}

	var p api.ProjectView
	add("project create", e.change("POST", "/api/v1/projects", map[string]any{"name": "hello", "clone_url": dir, "webhook_secret": hookSecret}, http.StatusCreated, &p),
		"project.create", "project:hello", `"clone_url":"`+dir+`"`, `"webhook_secret":"set"`)
	add("project settings", e.change("PATCH", "/api/v1/projects/hello", map[string]any{"weight": 3, "webhook_secret": hookSecret}, http.StatusOK, nil),
		"project.update", "project:hello", `"weight":3`, `"webhook_secret":"set"`)
	add("forge connection", e.change("PATCH", "/api/v1/projects/hello", map[string]any{"forge": "gitlab", "forge_repo": "acme/hello",
		"forge_url": "https://gitlab.example.com", "forge_token": forgeToken}, http.StatusOK, nil),
		"project.update", "project:hello", `"forge":"gitlab"`, `"forge_repo":"acme/hello"`, `"forge_token":"set"`)
	add("forge removed", e.change("PATCH", "/api/v1/projects/hello", map[string]any{"forge": ""}, http.StatusOK, nil),
		"project.update", "project:hello", `"forge":""`)
	add("secret set", e.change("PUT", "/api/v1/projects/hello/secrets/DEPLOY_KEY", map[string]string{"value": secretValue}, http.StatusNoContent, nil),
		"secret.set", "secret:hello/DEPLOY_KEY")
	e.api("PUT", "/api/v1/projects/hello/secrets/OTHER", map[string]string{"value": secretValue + "-2"}).want(t, http.StatusNoContent, nil)
	add("secret removed", e.change("DELETE", "/api/v1/projects/hello/secrets/OTHER", nil, http.StatusNoContent, nil),
		"secret.delete", "secret:hello/OTHER")
	add("registry set", e.change("PUT", "/api/v1/projects/hello/registries/registry.example.com", map[string]string{"username": "ci", "password": registryPassword}, http.StatusNoContent, nil),
		"registry.set", "registry:hello/registry.example.com", `"username":"ci"`, `"password":"set"`)
	add("registry removed", e.change("DELETE", "/api/v1/projects/hello/registries/registry.example.com", nil, http.StatusNoContent, nil),
		"registry.delete", "registry:hello/registry.example.com")

	var b store.Build
	ev := e.change("POST", "/api/v1/projects/hello/builds", map[string]string{"branch": "main"}, http.StatusCreated, &b)
	add("trigger", ev, "build.trigger", "project:hello", fmt.Sprintf(`"build":%d`, b.ID), `"branch":"main"`)
	e.waitPlanned(b.ID)
	add("cancel", e.change("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), nil, http.StatusAccepted, nil),
		"build.cancel", fmt.Sprintf("build:%d", b.ID))
	e.waitBuild(b.ID, "canceled", func(b *store.Build) bool { return b.Status.Terminal() })
	var retried store.Build
	ev = e.change("POST", fmt.Sprintf("/api/v1/builds/%d/retry", b.ID), nil, http.StatusCreated, &retried)
	add("retry", ev, "build.retry", fmt.Sprintf("build:%d", b.ID), fmt.Sprintf(`"build":%d`, retried.ID))

	fork := e.pullRequest("fork-1", githubPR(t, "opened", head, "mallory/Hello-World"), http.StatusCreated)
	add("approve", e.change("POST", fmt.Sprintf("/api/v1/builds/%d/approve", fork.BuildID), nil, http.StatusOK, nil),
		"build.approve", fmt.Sprintf("build:%d", fork.BuildID))
	fork2 := e.pullRequest("fork-2", githubPR(t, "synchronize", head, "mallory/Hello-World"), http.StatusCreated)
	add("reject", e.change("POST", fmt.Sprintf("/api/v1/builds/%d/reject", fork2.BuildID), nil, http.StatusOK, nil),
		"build.reject", fmt.Sprintf("build:%d", fork2.BuildID))

	var tok struct {
		Token  store.Token
		Secret string
	}
	ev = e.change("POST", "/api/v1/tokens", map[string]string{"name": "ci", "kind": "agent"}, http.StatusCreated, &tok)
	add("token create", ev, "token.create", fmt.Sprintf("token:%d", tok.Token.ID), `"name":"ci"`, `"kind":"agent"`)
	add("token revoke", e.change("DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.Token.ID), nil, http.StatusNoContent, nil),
		"token.revoke", fmt.Sprintf("token:%d", tok.Token.ID))

	var cacheID int64
	if err := e.srv.Store.DB().QueryRowContext(context.Background(), `INSERT INTO cache_entries (project, scope, cache_key, version, state, created_at, last_used)
		VALUES ('hello', 'refs/heads/main', 'k', 'v', 'ready', 1, 1) RETURNING id`).Scan(&cacheID); err != nil {
		t.Fatal(err)
	}
	add("cache delete", e.change("DELETE", fmt.Sprintf("/api/v1/projects/hello/caches/%d", cacheID), nil, http.StatusNoContent, nil),
		"cache.delete", fmt.Sprintf("cache:hello/%d", cacheID))
	add("cache prune", e.change("POST", "/api/v1/caches/prune", nil, http.StatusOK, nil), "cache.prune", "caches")
	add("project delete", e.change("DELETE", "/api/v1/projects/hello", nil, http.StatusNoContent, nil), "project.delete", "project:hello")

	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			ev := c.ev
			if ev.Action != c.action || ev.Target != c.target {
				t.Errorf("event %s %s, want %s %s", ev.Action, ev.Target, c.action, c.target)
			}
			if ev.Actor != (api.AuditActor{Kind: api.ActorAdminToken, ID: admin, Name: "admin"}) {
				t.Errorf("actor %+v, want the admin token (id %s)", ev.Actor, admin)
			}
			if ev.RemoteAddr != "127.0.0.1" || ev.UserAgent != auditUA || ev.At.IsZero() {
				t.Errorf("from %q, %q at %v: want 127.0.0.1, %q and a time", ev.RemoteAddr, ev.UserAgent, ev.At, auditUA)
			}
			for _, d := range c.detail {
				if !strings.Contains(string(ev.Detail), d) {
					t.Errorf("detail %s does not say %s", ev.Detail, d)
				}
			}
		})
	}

	// Nothing secret anywhere in the log, read whole.
	all := e.api("GET", "/api/v1/audit?limit=1000", nil)
	all.want(t, http.StatusOK, nil)
	for _, s := range []string{secretValue, forgeToken, registryPassword, hookSecret, tok.Secret, e.admin} {
		if strings.Contains(string(all.body), s) {
			t.Errorf("the audit log holds a secret (%.12s…): %s", s, all.body)
		}
	}
	if n := len(e.auditLog("limit=1000").Events); n != len(checks)+1 { // +1: the second secret set
		t.Errorf("%d events, want %d", n, len(checks)+1)
	}
}

// Pools: created, their warm runners changed, deleted.
func TestAuditPools(t *testing.T) {
	a := newActionsEnv(t)
	ev := a.auditLog("action=pool.").Events
	if len(ev) != 1 || ev[0].Action != "pool.create" || ev[0].Target != "pool:linux" || !strings.Contains(string(ev[0].Detail), `"owner":"acme"`) {
		t.Fatalf("pool create: %s", dump(ev))
	}
	if ev := a.change("PATCH", "/api/v1/pools/linux", map[string]any{"warm": 0}, http.StatusOK, nil); ev.Action != "pool.update" || ev.Target != "pool:linux" || string(ev.Detail) != `{"warm":0}` {
		t.Errorf("pool update: %s", dump(ev))
	}
	if ev := a.change("DELETE", "/api/v1/pools/linux", nil, http.StatusOK, nil); ev.Action != "pool.delete" || ev.Target != "pool:linux" {
		t.Errorf("pool delete: %s", dump(ev))
	}
}

// A refused request changed nothing and writes nothing: no token, an
// unknown token, an agent token, invalid input, a missing build. An
// agent token cannot read the log.
func TestAuditRefusalsWriteNothing(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	n := e.auditCount()
	cases := []struct {
		token, method, path string
		body                any
		code                int
	}{
		{"", "PUT", "/api/v1/projects/hello/secrets/KEY", map[string]string{"value": "v"}, http.StatusUnauthorized},
		{"kiln_admin_000000", "PUT", "/api/v1/projects/hello/secrets/KEY", map[string]string{"value": "v"}, http.StatusUnauthorized},
		{e.agent, "PUT", "/api/v1/projects/hello/secrets/KEY", map[string]string{"value": "v"}, http.StatusForbidden},
		{e.agent, "DELETE", "/api/v1/projects/hello", nil, http.StatusForbidden},
		{e.admin, "PUT", "/api/v1/projects/hello/secrets/KILN_X", map[string]string{"value": "v"}, http.StatusBadRequest},
		{e.admin, "PUT", "/api/v1/projects/hello/secrets/KEY", map[string]string{"value": ""}, http.StatusBadRequest},
		{e.admin, "DELETE", "/api/v1/projects/hello/secrets/NONE", nil, http.StatusNotFound},
		{e.admin, "PATCH", "/api/v1/projects/hello", map[string]any{"weight": 1000}, http.StatusBadRequest},
		{e.admin, "POST", "/api/v1/projects", map[string]any{"name": "hello", "clone_url": dir}, http.StatusConflict},
		{e.admin, "POST", "/api/v1/builds/999/cancel", nil, http.StatusNotFound},
		{e.admin, "POST", "/api/v1/builds/999/retry", nil, http.StatusNotFound},
		{e.admin, "POST", "/api/v1/builds/999/approve", nil, http.StatusNotFound},
		{e.admin, "POST", "/api/v1/tokens", map[string]string{"name": ""}, http.StatusBadRequest},
		{e.admin, "DELETE", "/api/v1/tokens/999", nil, http.StatusNotFound},
		{e.admin, "DELETE", "/api/v1/pools/none", nil, http.StatusNotFound},
		{e.admin, "DELETE", "/api/v1/projects/hello/caches/999", nil, http.StatusNotFound},
	}
	for _, c := range cases {
		if r := e.do(c.token, c.method, c.path, c.body, nil); r.code != c.code {
			t.Errorf("%s %s: HTTP %d, want %d: %s", c.method, c.path, r.code, c.code, r.body)
		}
	}
	if got := e.auditCount(); got != n {
		t.Errorf("refused requests wrote %d audit events: %s", got-n, dump(e.auditLog("limit=20").Events))
	}
	e.do(e.agent, "GET", "/api/v1/audit", nil, nil).wantError(t, http.StatusForbidden, "forbidden")
	e.do("", "GET", "/api/v1/audit", nil, nil).wantError(t, http.StatusUnauthorized, "unauthorized")
}

// The log's filters and pages, and its refusals of bad ones.
func TestAuditList(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	for i := range 3 {
		e.api("PUT", fmt.Sprintf("/api/v1/projects/hello/secrets/K%d", i), map[string]string{"value": "v"}).want(t, http.StatusNoContent, nil)
	}
	b := e.trigger("hello", "main")
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), nil).want(t, http.StatusAccepted, nil)

	all := e.auditLog("").Events
	if len(all) != 6 || all[0].Action != "build.cancel" || all[5].Action != "project.create" {
		t.Fatalf("log: %s", dump(all))
	}
	if ev := e.auditLog("action=secret.").Events; len(ev) != 3 || ev[0].Target != "secret:hello/K2" {
		t.Errorf("action=secret.: %s", dump(ev))
	}
	if ev := e.auditLog("target=" + url.QueryEscape(fmt.Sprintf("build:%d", b.ID))).Events; len(ev) != 1 || ev[0].Action != "build.cancel" {
		t.Errorf("target: %s", dump(ev))
	}
	if ev := e.auditLog("actor_kind=admin_token&actor=" + e.adminID()).Events; len(ev) != 6 {
		t.Errorf("actor: %d events", len(ev))
	}
	if ev := e.auditLog("actor=999").Events; len(ev) != 0 {
		t.Errorf("another actor: %d events", len(ev))
	}
	since := all[2].At.Format("2006-01-02T15:04:05.000Z07:00")
	for _, ev := range e.auditLog("since=" + url.QueryEscape(since)).Events {
		if ev.At.Before(all[2].At) {
			t.Errorf("since %s: event at %v", since, ev.At)
		}
	}
	if ev := e.auditLog("before=" + url.QueryEscape(all[5].At.Format("2006-01-02T15:04:05.000Z07:00"))).Events; len(ev) != 0 {
		t.Errorf("before the first event: %s", dump(ev))
	}
	// Pages of two, newest first, each continuing from the last's cursor.
	var ids []int64
	page := e.auditLog("limit=2")
	for {
		for _, ev := range page.Events {
			ids = append(ids, ev.ID)
		}
		if page.NextCursor == 0 {
			break
		}
		page = e.auditLog(fmt.Sprintf("limit=2&cursor=%d", page.NextCursor))
	}
	if len(ids) != 6 || ids[0] != all[0].ID || ids[5] != all[5].ID {
		t.Errorf("paged ids %v", ids)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=-1", "since=yesterday", "before=24h"} {
		e.api("GET", "/api/v1/audit?"+q, nil).wantError(t, http.StatusBadRequest, "invalid")
	}
}

// The client's address: the TCP peer, unless it is a trusted proxy; then
// the nearest untrusted address in X-Forwarded-For.
func TestAuditRemoteAddress(t *testing.T) {
	xff := http.Header{"X-Forwarded-For": {"203.0.113.9, 198.51.100.3"}}
	t.Run("no trusted proxies", func(t *testing.T) {
		e := newEnv(t)
		dir, _ := newRepo(t)
		e.do(e.admin, "POST", "/api/v1/projects", map[string]any{"name": "hello", "clone_url": dir}, xff).want(t, http.StatusCreated, nil)
		if ev := e.auditLog("").Events; len(ev) != 1 || ev[0].RemoteAddr != "127.0.0.1" {
			t.Errorf("X-Forwarded-For from an untrusted peer believed: %s", dump(ev))
		}
	})
	t.Run("behind a trusted proxy", func(t *testing.T) {
		e := newEnv(t, func(c *server.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
		dir, _ := newRepo(t)
		e.do(e.admin, "POST", "/api/v1/projects", map[string]any{"name": "hello", "clone_url": dir}, xff).want(t, http.StatusCreated, nil)
		e.do(e.admin, "DELETE", "/api/v1/projects/hello", nil, nil).want(t, http.StatusNoContent, nil)
		ev := e.auditLog("").Events
		if len(ev) != 2 || ev[1].RemoteAddr != "198.51.100.3" || ev[0].RemoteAddr != "127.0.0.1" {
			t.Errorf("want the proxy's client, 198.51.100.3 (not the forgeable 203.0.113.9), then the peer without a header: %s", dump(ev))
		}
	})
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := api.ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.1,fd00::/8 ,")
	if err != nil || fmt.Sprint(got) != "[10.0.0.0/8 192.0.2.1/32 fd00::/8]" {
		t.Errorf("parsed %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example.com", "10.0.0.0/8,x"} {
		if _, err := api.ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), "want a CIDR") {
			t.Errorf("%q: %v, want a clear error", bad, err)
		}
	}
}

// Onboarding (forge_webhook) is a project's create or update whose
// detail names the webhook made sure of on the forge; neither the forge
// token nor the webhook secret it generated is in the log.
func TestAuditOnboarding(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	const token = "ghp_audit_onboard_token_never_logged"
	gh.AddToken(token)
	dir, _ := newRepo(t)
	gh.AddRepo(fakegithub.Repo{FullName: "acme/web", CloneURL: dir, DefaultBranch: "main"})
	e := newEnv(t, withPublicURL)
	ev := e.change("POST", "/api/v1/projects", onboardGitHub("web", gh, token), http.StatusCreated, nil)
	if ev.Action != "project.create" || ev.Target != "project:web" ||
		!strings.Contains(string(ev.Detail), `"forge_webhook":{"url":"`+publicURL+`/hooks/github/web"`) || !strings.Contains(string(ev.Detail), `"action":"created"`) ||
		!strings.Contains(string(ev.Detail), `"forge_token":"set"`) {
		t.Errorf("onboarding's event: %s", dump(ev))
	}
	ev = e.change("PATCH", "/api/v1/projects/web", map[string]any{"forge_webhook": true}, http.StatusOK, nil)
	if ev.Action != "project.update" || !strings.Contains(string(ev.Detail), `"action":"updated"`) {
		t.Errorf("re-onboarding's event: %s", dump(ev))
	}
	log := e.api("GET", "/api/v1/audit", nil).body
	if hooks := gh.Hooks("acme/web"); len(hooks) != 1 || strings.Contains(string(log), hooks[0].Secret) || strings.Contains(string(log), token) {
		t.Errorf("the log holds the webhook secret or the forge token: %s", log)
	}
	// A forge's refusal stores nothing, and audits nothing.
	n := e.auditCount()
	e.api("POST", "/api/v1/projects", onboardGitHub("web2", gh, "ghp_unknown_token")).wantError(t, http.StatusUnprocessableEntity, "forge_unauthorized")
	if got := e.auditCount(); got != n {
		t.Errorf("a refused onboarding wrote %d events", got-n)
	}
}
