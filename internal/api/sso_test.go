package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/auth"
	"github.com/kilnci/kiln/internal/auth/oidctest"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// ssoEnv is a control plane signing users in at a real OpenID provider
// (oidctest), which knows ann (groups ops, release).
func ssoEnv(t *testing.T) (*env, *oidctest.Provider) {
	t.Helper()
	op := oidctest.Start(t)
	op.AddClient("kiln", "kiln-client-secret")
	op.AddUser(oidctest.User{Subject: "sub-ann", Username: "ann", Password: "pw", Email: "ann@example.com", Name: "Ann Example", Groups: []string{"ops", "release"}})
	e := newEnv(t, func(c *server.Config) {
		c.OIDC = auth.Config{Issuer: op.URL, ClientID: "kiln", ClientSecret: "kiln-client-secret", Scopes: []string{"email", "profile", "groups"}}
	})
	op.AllowRedirect(e.url + "/auth/callback")
	return e, op
}

// browser is an HTTP client with a cookie jar that stops before it
// would follow a redirect to stop (a URL; a prefix when it ends in *),
// returning that redirect.
func browser(t *testing.T, stop string) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if u := r.URL.String(); u == stop || strings.HasSuffix(stop, "*") && strings.HasPrefix(u, strings.TrimSuffix(stop, "*")) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
}

// browse sends a request with c's cookies (and the header).
func (e *env) browse(c *http.Client, method, path string, header http.Header) *response {
	e.t.Helper()
	var in io.Reader
	if method != "GET" {
		in = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, e.url+path, in)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return &response{code: resp.StatusCode, header: resp.Header, body: body}
}

func TestSignInSessionLogout(t *testing.T) {
	e, _ := ssoEnv(t)
	dir, _ := newRepo(t)
	e.project("web", dir, nil)
	e.setRole("web", "", "ops", "maintainer")

	// The browser signs in; the callback sets the session cookie and
	// sends it to the dashboard's root.
	b := browser(t, e.url+"/")
	resp, body, err := oidctest.SignIn(b, e.url+"/auth/login", "ann", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusFound || resp.Request.URL.Path != "/auth/callback" || resp.Header.Get("Location") != "/" {
		t.Fatalf("the sign-in ended at %s: HTTP %d, %s", resp.Request.URL, resp.StatusCode, body)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == api.SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.Secure || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || !strings.HasPrefix(session.Value, store.SessionPrefix) {
		t.Fatalf("session cookie %+v", session)
	}

	var who api.SessionView
	e.browse(b, "GET", "/auth/session", nil).want(t, http.StatusOK, &who)
	if who.Kind != api.ActorUser || who.User == nil || who.User.Subject != "sub-ann" || who.User.Email != "ann@example.com" || who.User.Name != "Ann Example" ||
		strings.Join(who.User.Groups, ",") != "ops,release" || who.Roles["web"] != "maintainer" || len(who.Roles) != 1 || who.GlobalAdmin || who.CSRFToken == "" || who.ExpiresAt == nil {
		t.Fatalf("session %+v (user %+v)", who, who.User)
	}

	// A change through the cookie needs the CSRF header.
	e.browse(b, "POST", "/api/v1/projects/web/builds", nil).wantError(t, http.StatusForbidden, "csrf")
	var built store.Build
	e.browse(b, "POST", "/api/v1/projects/web/builds", http.Header{api.CSRFHeader: {who.CSRFToken}, "Content-Type": {"application/json"}}).want(t, http.StatusCreated, &built)
	var page api.AuditPage
	e.api("GET", "/api/v1/audit?action=build.trigger", nil).want(t, http.StatusOK, &page)
	if len(page.Events) != 1 || page.Events[0].Actor != (api.AuditActor{Kind: api.ActorUser, ID: "sub-ann", Name: "ann@example.com"}) {
		t.Errorf("the trigger's audit event: %+v", page.Events)
	}
	e.browse(b, "GET", "/api/v1/builds", nil).want(t, http.StatusOK, nil)
	e.browse(b, "PUT", "/api/v1/projects/web/secrets/K", http.Header{api.CSRFHeader: {who.CSRFToken}}).wantError(t, http.StatusForbidden, "forbidden", "admin role")

	// Logout ends the session on the server: the cookie's value is dead
	// even to a client that kept it.
	e.browse(b, "POST", "/auth/logout", nil).wantError(t, http.StatusForbidden, "csrf")
	r := e.browse(b, "POST", "/auth/logout", http.Header{api.CSRFHeader: {who.CSRFToken}})
	r.want(t, http.StatusNoContent, nil)
	if !strings.Contains(r.header.Get("Set-Cookie"), api.SessionCookie+"=;") {
		t.Errorf("logout's Set-Cookie %q does not clear the cookie", r.header.Get("Set-Cookie"))
	}
	if _, _, err := e.srv.Store.SessionByToken(context.Background(), session.Value); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the session after logout: %v", err)
	}
	e.do("", "GET", "/auth/session", nil, http.Header{"Cookie": {api.SessionCookie + "=" + session.Value}}).wantError(t, http.StatusUnauthorized, "unauthorized", "signed out")
}

// A callback of another state, or one replayed, is refused.
func TestSignInBadStateRefused(t *testing.T) {
	e, _ := ssoEnv(t)
	b := browser(t, e.url+"/auth/callback*")
	resp, body, err := oidctest.SignIn(b, e.url+"/auth/login", "ann", "pw")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("sign-in: %v, HTTP %d %s", err, resp.StatusCode, body)
	}
	callback, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || callback.Query().Get("code") == "" {
		t.Fatalf("callback %q", resp.Header.Get("Location"))
	}
	forged := *callback
	q := forged.Query()
	q.Set("state", "forged")
	forged.RawQuery = q.Encode()
	e.browse(b, "GET", "/auth/callback?"+forged.RawQuery, nil).wantError(t, http.StatusBadRequest, "bad_state", "does not match")
	// The attempt is spent by the refusal: the real callback is refused too.
	e.browse(b, "GET", "/auth/callback?"+callback.RawQuery, nil).wantError(t, http.StatusBadRequest, "bad_state", "no sign-in in progress")
	// And a callback in a browser that never started one.
	e.browse(browser(t, e.url+"/"), "GET", "/auth/callback?"+callback.RawQuery, nil).wantError(t, http.StatusBadRequest, "bad_state")

	// A completed sign-in's callback replayed (its code used) is refused.
	b = browser(t, e.url+"/")
	resp, _, err = oidctest.SignIn(b, e.url+"/auth/login", "ann", "pw")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatal(err)
	}
	e.browse(b, "GET", "/auth/callback?"+resp.Request.URL.RawQuery, nil).wantError(t, http.StatusBadRequest, "bad_state")
	if n, err := countSessions(e); err != nil || n != 1 {
		t.Fatalf("%d sessions (%v), want the one sign-in's", n, err)
	}
}

func countSessions(e *env) (int, error) {
	var n int
	err := e.srv.Store.DB().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM sessions`).Scan(&n)
	return n, err
}

func TestSignInNotConfigured(t *testing.T) {
	e := newEnv(t)
	e.do("", "GET", "/auth/login", nil, nil).wantError(t, http.StatusNotFound, "sso_disabled")
	e.do("", "GET", "/auth/session", nil, nil).wantError(t, http.StatusUnauthorized, "unauthorized")
	var who api.SessionView
	e.api("GET", "/auth/session", nil).want(t, http.StatusOK, &who)
	if who.Kind != api.ActorAdminToken || !who.GlobalAdmin || who.Roles["*"] != "admin" {
		t.Errorf("the admin token's session view %+v", who)
	}
}

func TestLoginLoopbackOnly(t *testing.T) {
	e, _ := ssoEnv(t)
	for _, bad := range []string{"https://127.0.0.1:9/cb", "http://evil.example:9/cb", "http://127.0.0.1/cb", "http://10.0.0.1:9/cb", "http://u:p@127.0.0.1:9/cb", "http://127.0.0.1.evil.example:9/"} {
		e.do("", "GET", "/auth/login?cli_redirect="+url.QueryEscape(bad), nil, nil).wantError(t, http.StatusBadRequest, "invalid", "cli_redirect")
	}
	for _, good := range []string{"http://127.0.0.1:9/cb", "http://localhost:9/", "http://[::1]:9/x"} {
		if _, err := api.LoopbackRedirect(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	e.do("", "POST", "/auth/cli/exchange", map[string]string{"code": "nope"}, nil).wantError(t, http.StatusUnauthorized, "bad_code")
}
