package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestUsersAndSessions(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	u := &User{Subject: "sub-1", Email: "ann@example.com", Name: "Ann", Groups: []string{"ops"}}
	if err := s.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Hour)
	again := &User{Subject: "sub-1", Email: "ann@new.example", Name: "Ann B"}
	if err := s.UpsertUser(ctx, again); err != nil {
		t.Fatal(err)
	}
	if again.ID != u.ID || !again.CreatedAt.Equal(u.CreatedAt) || !again.LastLogin.Equal(c.t) {
		t.Fatalf("second sign-in: %+v, first %+v", again, u)
	}
	got, err := s.UserByID(ctx, u.ID)
	if err != nil || got.Email != "ann@new.example" || got.Name != "Ann B" || !reflect.DeepEqual(got.Groups, []string{}) {
		t.Fatalf("UserByID = %+v, %v", got, err)
	}

	se, plain, err := s.CreateSession(ctx, u.ID, 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	if err := s.db.QueryRowContext(ctx, `SELECT hash FROM sessions WHERE id = ?`, se.ID).Scan(&hash); err != nil || hash == plain || hash != hashToken(plain) {
		t.Fatalf("stored %q (%v): want the token's hash only", hash, err)
	}
	got2, user, err := s.SessionByToken(ctx, plain)
	if err != nil || got2.ID != se.ID || got2.CSRF == "" || got2.CSRF != se.CSRF || user.Subject != "sub-1" {
		t.Fatalf("SessionByToken = %+v, %+v, %v", got2, user, err)
	}
	if _, _, err := s.SessionByToken(ctx, plain+"x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a wrong token: %v", err)
	}
	c.advance(12 * time.Hour)
	if _, _, err := s.SessionByToken(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an expired session: %v", err)
	}
	_, plain2, err := s.CreateSession(ctx, u.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, s, "sessions"); n != 1 {
		t.Errorf("%d sessions: the expired one is kept", n)
	}
	if err := s.DeleteSession(ctx, plain2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionByToken(ctx, plain2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted session: %v", err)
	}
	if err := s.DeleteSession(ctx, plain2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted twice: %v", err)
	}
	if _, _, err := s.CreateSession(ctx, u.ID, 0); err == nil {
		t.Error("a session of no lifetime: no error")
	}
}

func TestLoginCodesAreOneTime(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	u := &User{Subject: "sub-1"}
	if err := s.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	code, err := s.CreateLoginCode(ctx, u.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s.TakeLoginCode(ctx, code); err != nil || id != u.ID {
		t.Fatalf("TakeLoginCode = %d, %v", id, err)
	}
	if _, err := s.TakeLoginCode(ctx, code); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a code traded twice: %v", err)
	}
	late, err := s.CreateLoginCode(ctx, u.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.advance(time.Minute)
	if _, err := s.TakeLoginCode(ctx, late); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an expired code: %v", err)
	}
}

func TestRoleBindings(t *testing.T) {
	s, _ := newStore(t)
	web := mkProject(t, s, "web", false)
	mkProject(t, s, "api", false)
	for _, b := range []*RoleBinding{
		{Project: "web", Kind: BindUser, Subject: "ann@example.com", Role: "viewer"},
		{Project: "web", Kind: BindUser, Subject: "ann@example.com", Role: "maintainer"}, // replaces
		{Project: "*", Kind: BindGroup, Subject: "ops", Role: "viewer"},
		{Project: "api", Kind: BindGroup, Subject: "ops", Role: "admin"},
		{Project: "*", Kind: BindGroup, Subject: "ops", Role: "maintainer"}, // replaces, on *
	} {
		if err := s.SetRoleBinding(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []string {
		bs, err := s.ListRoleBindings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range bs {
			out = append(out, b.Project+" "+b.Kind+" "+b.Subject+" "+b.Role)
		}
		return out
	}
	want := []string{"* group ops maintainer", "api group ops admin", "web user ann@example.com maintainer"}
	if got := list(); !reflect.DeepEqual(got, want) {
		t.Fatalf("bindings %q, want %q", got, want)
	}
	if err := s.SetRoleBinding(ctx, &RoleBinding{Project: "nope", Kind: BindUser, Subject: "x", Role: "viewer"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a binding on no project: %v", err)
	}
	if err := s.SetRoleBinding(ctx, &RoleBinding{Project: "web", Kind: "team", Subject: "x", Role: "viewer"}); err == nil {
		t.Fatal("a binding of kind team: no error")
	}
	if err := s.RemoveRoleBinding(ctx, "api", BindGroup, "ops"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveRoleBinding(ctx, "api", BindGroup, "ops"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed twice: %v", err)
	}
	// A deleted project's bindings go with it: a new project of its name
	// does not inherit them.
	if err := s.DeleteProject(ctx, web.ID); err != nil {
		t.Fatal(err)
	}
	mkProject(t, s, "web", false)
	if got := list(); !reflect.DeepEqual(got, []string{"* group ops maintainer"}) {
		t.Fatalf("after deleting web: %q", got)
	}
	if err := s.RemoveRoleBinding(ctx, "*", BindGroup, "ops"); err != nil {
		t.Fatal(err)
	}
}

func TestListBuildsOnlyProjects(t *testing.T) {
	s, _ := newStore(t)
	web, api := mkProject(t, s, "web", false), mkProject(t, s, "api", false)
	bw, _ := mkBuild(t, s, web, "main"), mkBuild(t, s, api, "main")
	got, err := s.ListBuilds(ctx, BuildFilter{OnlyProjects: true, ProjectIDs: []int64{web.ID}})
	if err != nil || len(got) != 1 || got[0].ID != bw.ID {
		t.Fatalf("builds of web only: %v, %v", got, err)
	}
	if got, err := s.ListBuilds(ctx, BuildFilter{OnlyProjects: true}); err != nil || len(got) != 0 {
		t.Fatalf("builds of no project: %v, %v", got, err)
	}
}
