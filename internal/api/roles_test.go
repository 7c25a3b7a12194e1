package api_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/store"
)

// signIn makes a user and a session the way the sign-in does (sso.go),
// returning the session's token.
func (e *env) signIn(subject, email string, groups ...string) string {
	e.t.Helper()
	ctx := context.Background()
	u := &store.User{Subject: subject, Email: email, Groups: groups}
	if err := e.srv.Store.UpsertUser(ctx, u); err != nil {
		e.t.Fatal(err)
	}
	_, plain, err := e.srv.Store.CreateSession(ctx, u.ID, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return plain
}

func (e *env) setRole(project, user, group, role string) {
	e.t.Helper()
	e.api("PUT", "/api/v1/roles", api.RoleRequest{Project: project, User: user, Group: group, Role: role}).want(e.t, http.StatusOK, nil)
}

// Per-project roles: a viewer reads and is refused changes, a maintainer
// operates builds but not secrets, a group's binding grants its role, the
// lists show only what one may view, and the global settings need the
// global admin.
func TestRoles(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("web", dir, nil)
	e.project("api", dir, nil)
	b := e.trigger("web", "main")
	e.waitPlanned(b.ID)
	other := e.trigger("api", "main")
	e.waitPlanned(other.ID)
	build := "/api/v1/builds/" + strconv.FormatInt(b.ID, 10)

	e.setRole("web", "viewer@example.com", "", "viewer")
	e.setRole("web", "sub-maint", "", "maintainer")
	e.setRole("*", "", "release", "maintainer")
	viewer := e.signIn("sub-viewer", "Viewer@Example.com")
	maint := e.signIn("sub-maint", "m@example.com")
	grouped := e.signIn("sub-g", "g@example.com", "release")
	nobody := e.signIn("sub-nobody", "n@example.com")

	e.do(viewer, "GET", build, nil, nil).want(t, http.StatusOK, nil)
	e.do(viewer, "GET", build+"/logs", nil, nil).want(t, http.StatusOK, nil)
	e.do(viewer, "GET", "/api/v1/agents", nil, nil).want(t, http.StatusOK, nil)
	e.do(viewer, "GET", "/api/v1/projects/web/caches", nil, nil).want(t, http.StatusOK, nil)
	for _, rt := range [][2]string{{"POST", build + "/cancel"}, {"POST", build + "/retry"}, {"POST", "/api/v1/projects/web/builds"}} {
		e.do(viewer, rt[0], rt[1], []byte(`{}`), nil).wantError(t, http.StatusForbidden, "forbidden", `needs the maintainer role on project "web"`)
	}
	e.do(viewer, "PUT", "/api/v1/projects/web/secrets/K", map[string]string{"value": "v"}, nil).wantError(t, http.StatusForbidden, "forbidden", `needs the admin role on project "web"`)
	e.do(viewer, "GET", "/api/v1/builds/"+strconv.FormatInt(other.ID, 10), nil, nil).wantError(t, http.StatusForbidden, "forbidden", `viewer role on project "api"`)

	var list []store.Build
	e.do(viewer, "GET", "/api/v1/builds", nil, nil).want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != b.ID {
		t.Errorf("a viewer of web lists %d builds: %+v", len(list), list)
	}
	e.do(viewer, "GET", "/api/v1/builds?project=api", nil, nil).wantError(t, http.StatusForbidden, "forbidden")
	var projects []api.ProjectView
	e.do(viewer, "GET", "/api/v1/projects", nil, nil).want(t, http.StatusOK, &projects)
	if len(projects) != 1 || projects[0].Name != "web" {
		t.Errorf("a viewer of web lists projects %+v", projects)
	}
	e.do(nobody, "GET", "/api/v1/projects", nil, nil).want(t, http.StatusOK, &projects)
	e.do(nobody, "GET", "/api/v1/builds", nil, nil).want(t, http.StatusOK, &list)
	if len(projects) != 0 || len(list) != 0 {
		t.Errorf("a user of no role lists %d projects, %d builds", len(projects), len(list))
	}
	e.do(nobody, "GET", "/api/v1/agents", nil, nil).wantError(t, http.StatusForbidden, "forbidden", "viewer role on some project")

	e.do(maint, "PUT", "/api/v1/projects/web/secrets/K", map[string]string{"value": "v"}, nil).wantError(t, http.StatusForbidden, "forbidden", "admin role")
	e.do(maint, "POST", build+"/cancel", nil, nil).want(t, http.StatusAccepted, nil)
	for _, rt := range [][2]string{{"GET", "/api/v1/tokens"}, {"POST", "/api/v1/tokens"}, {"GET", "/api/v1/pools"}, {"GET", "/api/v1/audit"}, {"POST", "/api/v1/projects"}, {"PUT", "/api/v1/roles"}} {
		e.do(maint, rt[0], rt[1], []byte(`{}`), nil).wantError(t, http.StatusForbidden, "forbidden", "global admin")
	}

	// The group's maintainer binding on every project.
	e.do(grouped, "POST", "/api/v1/builds/"+strconv.FormatInt(other.ID, 10)+"/cancel", nil, nil).want(t, http.StatusAccepted, nil)
	e.do(grouped, "GET", "/api/v1/builds", nil, nil).want(t, http.StatusOK, &list)
	if len(list) != 2 {
		t.Errorf("a maintainer of * lists %d builds", len(list))
	}

	// A binding removed applies at the next request.
	e.api("DELETE", "/api/v1/roles?project=web&user=viewer@example.com", nil).want(t, http.StatusNoContent, nil)
	e.do(viewer, "GET", build, nil, nil).wantError(t, http.StatusForbidden, "forbidden")
	e.api("DELETE", "/api/v1/roles?project=web&user=viewer@example.com", nil).wantError(t, http.StatusNotFound, "not_found")

	// Admin on * is the global admin.
	e.setRole("*", "root@example.com", "", "admin")
	root := e.signIn("sub-root", "root@example.com")
	e.do(root, "GET", "/api/v1/tokens", nil, nil).want(t, http.StatusOK, nil)

	var roles []api.RoleBindingView
	e.api("GET", "/api/v1/roles", nil).want(t, http.StatusOK, &roles)
	if len(roles) != 3 {
		t.Errorf("roles %+v", roles)
	}

	// Audited, with the user as the actor of what a user did.
	var page api.AuditPage
	e.api("GET", "/api/v1/audit?action=role.", nil).want(t, http.StatusOK, &page)
	if len(page.Events) != 5 || page.Events[0].Action != "role.set" || page.Events[1].Action != "role.remove" || page.Events[0].Target != "role:*/user:root@example.com" {
		t.Errorf("role events %+v", page.Events)
	}
	e.api("GET", "/api/v1/audit?action=build.cancel&target=build:"+strconv.FormatInt(b.ID, 10), nil).want(t, http.StatusOK, &page)
	if len(page.Events) != 1 || page.Events[0].Actor != (api.AuditActor{Kind: api.ActorUser, ID: "sub-maint", Name: "m@example.com"}) {
		t.Errorf("the cancel's event %+v", page.Events)
	}
	if got := e.build(b.ID); got.Error != `canceled by user "m@example.com"` {
		t.Errorf("the canceled build: %+v", got)
	}
}

func TestRoleRequestsRefused(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		body api.RoleRequest
		msg  string
	}{
		{api.RoleRequest{User: "u", Role: "viewer"}, "project: required"},
		{api.RoleRequest{Project: "*", Role: "viewer"}, "user or group: required"},
		{api.RoleRequest{Project: "*", User: "u", Group: "g", Role: "viewer"}, "not both"},
		{api.RoleRequest{Project: "*", User: "u", Role: "owner"}, `role "owner": want viewer, maintainer or admin`},
	} {
		e.api("PUT", "/api/v1/roles", c.body).wantError(t, http.StatusBadRequest, "invalid", c.msg)
	}
	e.api("PUT", "/api/v1/roles", api.RoleRequest{Project: "nope", User: "u", Role: "viewer"}).wantError(t, http.StatusNotFound, "not_found")
}

// A session in the cookie authenticates; a change needs the CSRF header.
func TestSessionCookieNeedsCSRF(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("web", dir, nil)
	e.setRole("web", "sub-m", "", "maintainer")
	tok := e.signIn("sub-m", "")
	se, _, err := e.srv.Store.SessionByToken(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	cookie := http.Header{"Cookie": {api.SessionCookie + "=" + tok}}
	e.do("", "GET", "/api/v1/projects/web", nil, cookie).want(t, http.StatusOK, nil)
	e.do("", "POST", "/api/v1/projects/web/builds", map[string]string{}, cookie).wantError(t, http.StatusForbidden, "csrf", api.CSRFHeader)
	cookie.Set(api.CSRFHeader, "wrong")
	e.do("", "POST", "/api/v1/projects/web/builds", map[string]string{}, cookie).wantError(t, http.StatusForbidden, "csrf")
	cookie.Set(api.CSRFHeader, se.CSRF)
	e.do("", "POST", "/api/v1/projects/web/builds", map[string]string{}, cookie).want(t, http.StatusCreated, nil)
	// The same session as a bearer token (the CLI's) needs no CSRF header.
	e.do(tok, "POST", "/api/v1/projects/web/builds", map[string]string{}, nil).want(t, http.StatusCreated, nil)
	e.do("", "GET", "/api/v1/projects/web", nil, http.Header{"Cookie": {api.SessionCookie + "=kiln_admin_nope"}}).wantError(t, http.StatusUnauthorized, "unauthorized")
}
