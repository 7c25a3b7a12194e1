package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// wantBadge checks a badge's answer: an SVG saying text in colour.
func wantBadge(t *testing.T, r *response, text, colour string) {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("badge: HTTP %d: %s", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "image/svg+xml") {
		t.Errorf("Content-Type %q", ct)
	}
	svg := string(r.body)
	if !strings.Contains(svg, ">build</text>") || !strings.Contains(svg, ">"+text+"</text>") || !strings.Contains(svg, `fill="`+colour+`"`) {
		t.Errorf("badge does not say %q in %s: %s", text, colour, svg)
	}
}

// A project's status badge: each state's text and colour from the
// branch's newest finished build, private by default (the same 404 as an
// unknown project to those who may not view it), public on request,
// cacheable only by revalidation, its text escaped.
func TestBadge(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Scheduler.MaxAttempts = 1 })
	dir, _ := newRepo(t)
	p := e.project("web", dir, nil)
	if p.Badge != store.BadgePrivate {
		t.Errorf("a new project's badge is %q", p.Badge)
	}
	e.register("a1")
	badge := "/badge/web.svg"

	// Private: the anonymous, and a user who may not view the project, get
	// what an unknown project gets.
	unknown := e.do("", "GET", "/badge/nope.svg", nil, nil)
	unknown.wantError(t, http.StatusNotFound, "not_found")
	nobody := e.signIn("sub-n", "n@example.com")
	for _, token := range []string{"", nobody} {
		r := e.do(token, "GET", badge, nil, nil)
		r.wantError(t, http.StatusNotFound, "not_found")
		if string(r.body) != string(unknown.body) {
			t.Errorf("private badge's 404 %s differs from an unknown project's %s", r.body, unknown.body)
		}
	}
	e.do("", "GET", "/badge/web.png", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	r := e.api("GET", badge, nil)
	wantBadge(t, r, "no builds", "#9f9f9f")
	if r.header.Get("Cache-Control") != "private, no-cache, max-age=0" {
		t.Errorf("private badge's Cache-Control %q", r.header.Get("Cache-Control"))
	}
	// A viewer's session cookie is enough (the dashboard's page).
	e.setRole("web", "sub-v", "", "viewer")
	viewer := e.signIn("sub-v", "v@example.com")
	wantBadge(t, e.do("", "GET", badge, nil, http.Header{"Cookie": {api.SessionCookie + "=" + viewer}}), "no builds", "#9f9f9f")

	e.api("PATCH", "/api/v1/projects/web", map[string]any{"badge": "public"}).want(t, http.StatusOK, &p)
	if p.Badge != store.BadgePublic {
		t.Fatalf("badge after PATCH: %q", p.Badge)
	}
	e.api("PATCH", "/api/v1/projects/web", map[string]any{"badge": "secret"}).wantError(t, http.StatusBadRequest, "invalid", "badge", "private or public")

	states := []struct {
		status       store.Status // the build's job's end; "" for none (in progress), canceled through the API
		text, colour string
	}{
		{"", "running", "#007ec6"},
		{store.StatusFailure, "failing", "#e05d44"},
		{store.StatusSuccess, "passing", "#4c1"},
		{store.StatusError, "error", "#fe7d37"},
		{store.StatusTimedOut, "timed out", "#e05d44"},
		{store.StatusCanceled, "canceled", "#9f9f9f"},
	}
	for _, st := range states {
		b := e.trigger("web", "main")
		e.waitPlanned(b.ID)
		switch st.status {
		case "":
		case store.StatusCanceled:
			e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), nil).want(t, http.StatusAccepted, nil)
		default:
			a := e.mustClaim("a1")
			e.finish(a.JobID, a.Attempt, st.status).want(t, http.StatusNoContent, nil)
		}
		if st.status != "" {
			e.waitBuild(b.ID, "finished", func(b *store.Build) bool { return b.FinishedAt != nil })
		}
		wantBadge(t, e.do("", "GET", badge, nil, nil), st.text, st.colour)
		if st.status == "" {
			a := e.mustClaim("a1") // out of the way: it fails
			e.finish(a.JobID, a.Attempt, store.StatusFailure).want(t, http.StatusNoContent, nil)
		}
	}
	// A build in progress does not hide the newest finished one.
	b := e.trigger("web", "main")
	e.waitPlanned(b.ID)
	r = e.do("", "GET", badge+"?branch=main", nil, nil)
	wantBadge(t, r, "canceled", "#9f9f9f")
	if cc := r.header.Get("Cache-Control"); cc != "no-cache, max-age=0" {
		t.Errorf("public badge's Cache-Control %q", cc)
	}
	etag := r.header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if r := e.do("", "GET", badge, nil, http.Header{"If-None-Match": {etag}}); r.code != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("revalidation: HTTP %d %s", r.code, r.body)
	}
	if r := e.do("", "GET", badge, nil, http.Header{"If-None-Match": {`"other"`}}); r.code != http.StatusOK {
		t.Errorf("another ETag: HTTP %d", r.code)
	}

	// Another branch, with a name git allows and SVG does not.
	odd := `x"><script>alert(1)</script>&`
	r = e.do("", "GET", badge+"?branch="+url.QueryEscape(odd), nil, nil)
	wantBadge(t, r, "no builds", "#9f9f9f")
	if strings.Contains(string(r.body), "<script>") || !strings.Contains(string(r.body), "x&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;") {
		t.Errorf("branch not escaped: %s", r.body)
	}
	if r.header.Get("ETag") == etag {
		t.Error("two badges, one ETag")
	}
	e.do("", "GET", badge+"?branch="+strings.Repeat("b", 300), nil, nil).wantError(t, http.StatusBadRequest, "invalid", "branch")
}
