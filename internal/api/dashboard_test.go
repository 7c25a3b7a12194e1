package api_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/auth/oidctest"
	"github.com/kilnci/kiln/internal/store"
)

// form posts a form with c's cookies; it does not follow redirects.
func (e *env) form(c *http.Client, path string, v url.Values) *response {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.url+path, strings.NewReader(v.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	noFollow := *c
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &response{code: resp.StatusCode, header: resp.Header, body: body}
}

var (
	csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	csrfMeta  = regexp.MustCompile(`<meta name="kiln-csrf" content="([^"]+)">`)
)

// tokenSignIn signs browser c in with the admin token through the
// sign-in form, and returns the session's CSRF token.
func (e *env) tokenSignIn(c *http.Client) string {
	e.t.Helper()
	page := e.browse(c, "GET", "/login", nil)
	m := csrfField.FindSubmatch(page.body)
	if page.code != http.StatusOK || m == nil {
		e.t.Fatalf("sign-in page: HTTP %d %s", page.code, page.body)
	}
	r := e.form(c, "/login", url.Values{"csrf": {string(m[1])}, "token": {e.admin}, "next": {"/builds"}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/builds" {
		e.t.Fatalf("sign-in: HTTP %d to %q, %s", r.code, r.header.Get("Location"), r.body)
	}
	home := e.browse(c, "GET", "/", nil)
	mm := csrfMeta.FindSubmatch(home.body)
	if home.code != http.StatusOK || mm == nil {
		e.t.Fatalf("home after sign-in: HTTP %d %s", home.code, home.body)
	}
	return string(mm[1])
}

func noRedirects(t *testing.T) *http.Client {
	c := browser(t, "")
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// A browser without a session is sent to sign in, and back after it; the
// token sign-in keeps a session of the token in an HttpOnly cookie, and
// signing out ends it on the server.
func TestDashboardTokenSignIn(t *testing.T) {
	e := newEnv(t)
	b := e.helloBuild()
	c := noRedirects(t)
	r := e.browse(c, "GET", fmt.Sprintf("/builds/%d", b.ID), nil)
	if r.code != http.StatusSeeOther || r.header.Get("Location") != fmt.Sprintf("/login?next=%%2Fbuilds%%2F%d", b.ID) {
		t.Fatalf("a page without a session: HTTP %d to %q", r.code, r.header.Get("Location"))
	}
	page := e.browse(c, "GET", "/login", nil)
	m := csrfField.FindSubmatch(page.body)
	if m == nil || !strings.Contains(page.body2(), `type="password"`) {
		t.Fatalf("sign-in page: %s", page.body)
	}
	csrf := string(m[1])
	// The form's CSRF token must match its cookie; the token must be an
	// admin token; the next page is on this server only.
	if r := e.form(noRedirects(t), "/login", url.Values{"csrf": {csrf}, "token": {e.admin}}); r.code != http.StatusForbidden {
		t.Errorf("sign-in without the form's cookie: HTTP %d", r.code)
	}
	if r := e.form(c, "/login", url.Values{"csrf": {csrf}, "token": {e.agent}}); r.code != http.StatusUnauthorized || !strings.Contains(string(r.body), "not a live admin token") {
		t.Errorf("sign-in with an agent token: HTTP %d %s", r.code, r.body)
	}
	page = e.browse(c, "GET", "/login", nil)
	csrf = string(csrfField.FindSubmatch(page.body)[1])
	r = e.form(c, "/login", url.Values{"csrf": {csrf}, "token": {e.admin}, "next": {"//evil.example/x"}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Fatalf("sign-in: HTTP %d to %q (want / for a next off this server)", r.code, r.header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == api.SessionCookie {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || !strings.HasPrefix(session.Value, store.TokenSessionPrefix) || strings.Contains(session.Value, e.admin) {
		t.Fatalf("session cookie %+v", session)
	}

	home := e.browse(c, "GET", "/", nil)
	if home.code != http.StatusOK || !strings.Contains(home.body2(), "hello") {
		t.Fatalf("projects page: HTTP %d %s", home.code, home.body)
	}
	for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(home.header.Get("Content-Security-Policy"), want) {
			t.Errorf("CSP %q lacks %q", home.header.Get("Content-Security-Policy"), want)
		}
	}
	if strings.Contains(home.body2(), "<script>") {
		t.Error("a page has an inline script")
	}
	csrf = string(csrfMeta.FindSubmatch(home.body)[1])
	// The session's CSRF token works for the API too (the buttons).
	e.browse(c, "POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), nil).wantError(t, http.StatusForbidden, "csrf")
	e.browse(c, "POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), http.Header{api.CSRFHeader: {csrf}}).want(t, http.StatusAccepted, nil)

	// Sign-out: a form from elsewhere (no CSRF token) is refused.
	if r := e.form(c, "/logout", url.Values{}); r.code != http.StatusForbidden {
		t.Errorf("sign-out without the CSRF token: HTTP %d", r.code)
	}
	if r := e.form(c, "/logout", url.Values{"csrf": {csrf}}); r.code != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("sign-out: HTTP %d to %q", r.code, r.header.Get("Location"))
	}
	if _, _, err := e.srv.Store.TokenSessionByToken(context.Background(), session.Value); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the session after sign-out: %v", err)
	}
	e.do("", "GET", "/api/v1/builds", nil, http.Header{"Cookie": {api.SessionCookie + "=" + session.Value}}).wantError(t, http.StatusUnauthorized, "unauthorized")
	// The token itself still works.
	e.api("GET", "/api/v1/builds", nil).want(t, http.StatusOK, nil)
}

func (r *response) body2() string { return string(r.body) }

// Each person sees what their role allows: a viewer sees the build and
// no buttons, and the API behind the buttons refuses them; a maintainer
// sees cancel.
func TestDashboardRoles(t *testing.T) {
	e, op := ssoEnv(t)
	op.AddUser(oidctest.User{Subject: "sub-vic", Username: "vic", Password: "pw", Email: "vic@example.com", Groups: []string{"readers"}})
	b := e.helloBuild()
	e.setRole("hello", "", "ops", "maintainer")
	e.setRole("hello", "", "readers", "viewer")

	signIn := func(user string) (*http.Client, string) {
		c := browser(t, e.url+"/")
		if _, body, err := oidctest.SignIn(c, e.url+"/auth/login", user, "pw"); err != nil {
			t.Fatalf("%s: %v %s", user, err, body)
		}
		page := e.browse(c, "GET", fmt.Sprintf("/builds/%d", b.ID), nil)
		if page.code != http.StatusOK || !strings.Contains(page.body2(), "hello #") {
			t.Fatalf("%s: build page HTTP %d %s", user, page.code, page.body)
		}
		return c, page.body2()
	}
	vic, page := signIn("vic")
	if strings.Contains(page, "data-action=") {
		t.Errorf("a viewer's build page has buttons:\n%s", page)
	}
	csrf := csrfMeta.FindStringSubmatch(page)[1]
	e.browse(vic, "POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), http.Header{api.CSRFHeader: {csrf}}).wantError(t, http.StatusForbidden, "forbidden")
	if r := e.browse(vic, "GET", "/projects/hello/caches", nil); r.code != http.StatusOK || strings.Contains(r.body2(), "data-action=") {
		t.Errorf("a viewer's caches page: HTTP %d", r.code)
	}
	if r := e.browse(vic, "GET", "/agents", nil); r.code != http.StatusOK || strings.Contains(r.body2(), "GitHub Actions pools") {
		t.Errorf("a viewer's agents page: HTTP %d, pools shown: %v", r.code, strings.Contains(r.body2(), "pools"))
	}
	_, page = signIn("ann")
	if !strings.Contains(page, fmt.Sprintf(`data-action="/api/v1/builds/%d/cancel"`, b.ID)) {
		t.Errorf("a maintainer's build page has no cancel button:\n%s", page)
	}
}

// A project one may not view is not shown, and its build's page is 403.
func TestDashboardHidesOtherProjects(t *testing.T) {
	e, op := ssoEnv(t)
	op.AddUser(oidctest.User{Subject: "sub-vic", Username: "vic", Password: "pw", Email: "vic@example.com"})
	b := e.helloBuild()
	dir, _ := newRepo(t)
	e.project("web", dir, nil)
	e.setRole("web", "vic@example.com", "", "viewer")
	c := browser(t, e.url+"/")
	if _, body, err := oidctest.SignIn(c, e.url+"/auth/login", "vic", "pw"); err != nil {
		t.Fatalf("%v %s", err, body)
	}
	home := e.browse(c, "GET", "/", nil)
	if !strings.Contains(home.body2(), "web") || strings.Contains(home.body2(), "hello") {
		t.Errorf("projects page shows the wrong projects:\n%s", home.body)
	}
	if r := e.browse(c, "GET", fmt.Sprintf("/builds/%d", b.ID), nil); r.code != http.StatusForbidden {
		t.Errorf("another project's build page: HTTP %d", r.code)
	}
	if r := e.browse(c, "GET", "/projects/hello/caches", nil); r.code != http.StatusNotFound {
		t.Errorf("another project's caches page: HTTP %d", r.code)
	}
	if r := e.browse(c, "GET", "/builds", nil); strings.Contains(r.body2(), "hello") {
		t.Errorf("builds page lists another project's build")
	}
}

// The pages escape what builds carry; the builds list filters and its
// rows come alone for the live refresh.
func TestDashboardBuildsList(t *testing.T) {
	e := newEnv(t)
	c := browser(t, "")
	e.tokenSignIn(c)
	dir, _ := newRepo(t)
	e.project("web", dir, nil)
	commit := commitFile(t, dir, "x", "y")
	push := e.pushGitHub("web", "d-1", "main", commit)
	api := e.trigger("web", "main")
	// A hostile message: shown as text.
	if _, err := e.srv.Store.DB().ExecContext(context.Background(), `UPDATE builds SET message = ? WHERE id = ?`, "<script>alert(1)</script>", push); err != nil {
		t.Fatal(err)
	}
	all := e.browse(c, "GET", "/builds", nil).body2()
	if strings.Contains(all, "<script>alert") || !strings.Contains(all, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the message is not escaped:\n%s", all)
	}
	rows := e.browse(c, "GET", "/builds?event=push&partial=rows", nil).body2()
	if !strings.HasPrefix(rows, "<tbody>") || !strings.Contains(rows, fmt.Sprintf(`href="/builds/%d"`, push)) || strings.Contains(rows, fmt.Sprintf(`href="/builds/%d"`, api.ID)) {
		t.Errorf("rows of push builds:\n%s", rows)
	}
	rows = e.browse(c, "GET", "/builds?trigger=api&partial=rows", nil).body2()
	if !strings.Contains(rows, fmt.Sprintf(`href="/builds/%d"`, api.ID)) || strings.Contains(rows, fmt.Sprintf(`href="/builds/%d"`, push)) {
		t.Errorf("rows of API builds:\n%s", rows)
	}
	if r := e.browse(c, "GET", "/builds?status=nope", nil); r.code != http.StatusBadRequest {
		t.Errorf("a bad status filter: HTTP %d", r.code)
	}
	// Paging: one per page here.
	first := e.browse(c, "GET", "/builds?limit=1", nil).body2()
	if !strings.Contains(first, fmt.Sprintf(`before=%d`, api.ID)) {
		t.Errorf("no link to older builds:\n%s", first)
	}
}

// The raw log is the job's lines as text, a download; the stream of one
// job starts after the lines the page already has.
func TestDashboardRawLogAndStreamFrom(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	e.sendLogs(a.JobID, a.Attempt, 1, 2, 3).want(t, http.StatusNoContent, nil)
	r := e.do(e.admin, "GET", fmt.Sprintf("/api/v1/builds/%d/logs?job=%d&format=text", b.ID, a.JobID), nil, nil)
	if r.code != http.StatusOK || r.body2() != "line 1\nline 2\nline 3\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(r.header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("raw log: HTTP %d %q %v", r.code, r.body, r.header)
	}
	e.do(e.admin, "GET", fmt.Sprintf("/api/v1/builds/%d/logs?format=text", b.ID), nil, nil).wantError(t, http.StatusBadRequest, "invalid", "job")
	e.do(e.admin, "GET", fmt.Sprintf("/api/v1/builds/%d/logs/stream?after=2", b.ID), nil, nil).wantError(t, http.StatusBadRequest, "invalid", "with job")
	e.do(e.admin, "GET", fmt.Sprintf("/api/v1/builds/%d/logs/stream?job=999999", b.ID), nil, nil).wantError(t, http.StatusNotFound, "not_found")

	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/builds/%d/logs/stream?job=%d&attempt=%d&after=2", e.url, b.ID, a.JobID, a.Attempt), nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	e.sendLogs(a.JobID, a.Attempt, 4).want(t, http.StatusNoContent, nil)
	sc := bufio.NewScanner(resp.Body)
	var got []string
	for sc.Scan() && len(got) < 2 {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok && strings.Contains(line, `"text":"line`) {
			got = append(got, line)
		}
	}
	if len(got) != 2 || !strings.Contains(got[0], `"seq":3`) || !strings.Contains(got[1], `"seq":4`) {
		t.Fatalf("stream after seq 2: %q", got)
	}
}

// A project's settings page and the tokens page are for admins: a
// maintainer is refused them (and sees no link), an admin sees the
// project's settings and secrets' names, never a value.
func TestDashboardSettingsAndTokens(t *testing.T) {
	e, op := ssoEnv(t)
	op.AddUser(oidctest.User{Subject: "sub-max", Username: "max", Password: "pw", Email: "max@example.com"})
	e.helloBuild()
	e.api("PUT", "/api/v1/projects/hello/secrets/API_KEY", map[string]string{"value": "s3cr3t-value"}).want(t, http.StatusNoContent, nil)
	e.setRole("hello", "max@example.com", "", "maintainer")

	c := browser(t, "")
	e.tokenSignIn(c)
	page := e.browse(c, "GET", "/projects/hello/settings", nil)
	for _, want := range []string{`data-api="/api/v1/projects/hello" data-method="PATCH"`, `<code>API_KEY</code>`, `<option selected>approve</option>`, `<option selected>private</option>`} {
		if page.code != http.StatusOK || !strings.Contains(page.body2(), want) {
			t.Errorf("settings page (HTTP %d) lacks %s", page.code, want)
		}
	}
	if strings.Contains(page.body2(), "s3cr3t-value") {
		t.Error("the settings page shows a secret's value")
	}
	tokens := e.browse(c, "GET", "/tokens", nil)
	if tokens.code != http.StatusOK || !strings.Contains(tokens.body2(), "this session's") || !strings.Contains(tokens.body2(), `href="/tokens"`) {
		t.Errorf("tokens page: HTTP %d\n%s", tokens.code, tokens.body)
	}
	if home := e.browse(c, "GET", "/", nil); !strings.Contains(home.body2(), `href="/projects/hello/settings"`) {
		t.Error("an admin's projects page has no settings link")
	}

	m := browser(t, e.url+"/")
	if _, body, err := oidctest.SignIn(m, e.url+"/auth/login", "max", "pw"); err != nil {
		t.Fatalf("%v %s", err, body)
	}
	if r := e.browse(m, "GET", "/projects/hello/settings", nil); r.code != http.StatusForbidden {
		t.Errorf("a maintainer's settings page: HTTP %d", r.code)
	}
	if r := e.browse(m, "GET", "/tokens", nil); r.code != http.StatusForbidden {
		t.Errorf("a maintainer's tokens page: HTTP %d", r.code)
	}
	if home := e.browse(m, "GET", "/", nil); strings.Contains(home.body2(), "/settings") || strings.Contains(home.body2(), `href="/tokens"`) {
		t.Error("a maintainer's projects page links to settings or tokens")
	}
}
