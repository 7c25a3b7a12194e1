package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
)

// A build's page, where forge statuses link: with the admin token it
// shows the build; without one (a browser following the link), or with an
// agent's token, it is 401 and shows nothing of the build, only how to
// see it from a terminal.
func TestBuildPage(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("secret-project", dir, nil)
	b := e.trigger("secret-project", "main")
	path := api.BuildPagePath(b.ID)

	r := e.do(e.admin, "GET", path, nil, nil)
	if r.code != http.StatusOK || !strings.Contains(string(r.body), "secret-project") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("with the admin token: HTTP %d %s", r.code, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, tok := range []string{"", "not-a-token", e.agent} {
		r := e.do(tok, "GET", path, nil, nil)
		if r.code != http.StatusUnauthorized || strings.Contains(string(r.body), "secret-project") || !strings.Contains(string(r.body), "kiln logs") {
			t.Errorf("token %q: HTTP %d %s", tok, r.code, r.body)
		}
	}
	// A signed-in browser: a viewer of the project sees it, a user of no
	// role there sees nothing of it.
	e.setRole("secret-project", "viewer@example.com", "", "viewer")
	for _, c := range []struct {
		email string
		code  int
	}{{"viewer@example.com", http.StatusOK}, {"nobody@example.com", http.StatusForbidden}} {
		cookie := http.Header{"Cookie": {api.SessionCookie + "=" + e.signIn("sub-"+c.email, c.email)}}
		r := e.do("", "GET", path, nil, cookie)
		if r.code != c.code || strings.Contains(string(r.body), "secret-project") != (c.code == http.StatusOK) {
			t.Errorf("%s's session: HTTP %d %s", c.email, r.code, r.body)
		}
	}
	if r := e.do(e.admin, "GET", "/builds/x", nil, nil); r.code != http.StatusNotFound {
		t.Errorf("/builds/x: HTTP %d", r.code)
	}
	if r := e.do(e.admin, "GET", api.BuildPagePath(b.ID+100), nil, nil); r.code != http.StatusNotFound {
		t.Errorf("a build that is not there: HTTP %d", r.code)
	}
}
