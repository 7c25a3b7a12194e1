package store

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mkAudit(action, target string) *AuditEvent {
	return &AuditEvent{ActorKind: "admin_token", ActorID: "1", ActorName: "admin", Action: action, Target: target,
		Detail: `{"k":"v"}`, RemoteAddr: "192.0.2.7", UserAgent: "kiln-cli/test"}
}

func TestAuditAppendAndList(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	var evs []*AuditEvent
	for _, a := range []struct{ action, target string }{
		{"project.create", "project:web"}, {"build.cancel", "build:1"}, {"build.retry", "build:1"}, {"secret.set", "secret:web/API_KEY"}, {"build_x.odd", "build:2"},
	} {
		ev := mkAudit(a.action, a.target)
		if err := s.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if ev.ID == 0 || !ev.At.Equal(c.t) {
			t.Fatalf("appended event: id %d at %v, want an id and the store's time %v", ev.ID, ev.At, c.t)
		}
		evs = append(evs, ev)
		c.advance(time.Minute)
	}
	other := mkAudit("token.create", "token:9")
	other.ActorID, other.ActorName, other.Detail = "2", "ops", ""
	if err := s.AppendAudit(ctx, other); err != nil {
		t.Fatal(err)
	}

	all, err := s.ListAudit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 || all[0].ID != other.ID || all[5].ID != evs[0].ID {
		t.Fatalf("all: %d events, want 6 newest first", len(all))
	}
	got := all[5]
	want := *evs[0]
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("stored event\n got %+v\nwant %+v", *got, want)
	}
	if all[0].Detail != "{}" {
		t.Errorf("empty detail stored as %q, want {}", all[0].Detail)
	}

	for _, tc := range []struct {
		name string
		f    AuditFilter
		want []int64
	}{
		{"action prefix", AuditFilter{ActionPrefix: "build."}, []int64{evs[2].ID, evs[1].ID}},
		{"prefix is literal (no LIKE wildcards, case kept)", AuditFilter{ActionPrefix: "build_"}, []int64{evs[4].ID}},
		{"prefix case", AuditFilter{ActionPrefix: "BUILD."}, nil},
		{"whole action", AuditFilter{ActionPrefix: "build.cancel"}, []int64{evs[1].ID}},
		{"target", AuditFilter{Target: "build:1"}, []int64{evs[2].ID, evs[1].ID}},
		{"target is exact", AuditFilter{Target: "build:"}, nil},
		{"actor", AuditFilter{ActorKind: "admin_token", ActorID: "2"}, []int64{other.ID}},
		{"since", AuditFilter{Since: evs[3].At}, []int64{other.ID, evs[4].ID, evs[3].ID}},
		{"before", AuditFilter{Before: evs[1].At}, []int64{evs[0].ID}},
		{"cursor", AuditFilter{BeforeID: evs[2].ID, Limit: 1}, []int64{evs[1].ID}},
		{"limit", AuditFilter{Limit: 2}, []int64{other.ID, evs[4].ID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListAudit(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for _, ev := range got {
				ids = append(ids, ev.ID)
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("ids %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestAuditRefusesBadEvents(t *testing.T) {
	s, _ := newStore(t)
	for _, ev := range []*AuditEvent{
		{ActorKind: "admin_token", Detail: "{}"},
		{Action: "x.y", Detail: "{}"},
		{ActorKind: "admin_token", Action: "x.y", Detail: "not json"},
	} {
		if err := s.AppendAudit(ctx, ev); err == nil {
			t.Errorf("%+v: appended, want an error", ev)
		}
	}
	if got, _ := s.ListAudit(ctx, AuditFilter{}); len(got) != 0 {
		t.Fatalf("%d events stored, want none", len(got))
	}
}

// The audited changes write their event in the change's transaction: a
// change that fails writes no event, and an event that cannot be
// written undoes the change.
func TestAuditedChangesShareTheTransaction(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")

	// A new build's event may name it: audit runs after the insert.
	nb := &Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := s.Audited(func() *AuditEvent {
		ev := mkAudit("build.trigger", "project:web")
		ev.Detail = `{"build":` + itoa(nb.ID) + `}`
		return ev
	}).CreateBuild(ctx, nb); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.ListAudit(ctx, AuditFilter{}); len(evs) != 1 || evs[0].Detail != `{"build":`+itoa(nb.ID)+`}` {
		t.Fatalf("after an audited trigger: %+v", evs)
	}

	if err := s.Audited(func() *AuditEvent { return mkAudit("build.cancel", "build:999") }).CancelBuild(ctx, 999, "no such build"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancel of a missing build: %v, want ErrNotFound", err)
	}
	bad := func() *AuditEvent { ev := mkAudit("build.cancel", "build:1"); ev.Detail = "{"; return ev }
	if err := s.Audited(bad).CancelBuild(ctx, b.ID, "by test"); err == nil {
		t.Fatal("cancel with an unwritable event succeeded")
	}
	if st := buildStatus(t, s, b.ID); st.Terminal() {
		t.Fatalf("build %s after a cancel whose event failed: want it untouched", st)
	}
	if evs, _ := s.ListAudit(ctx, AuditFilter{ActionPrefix: "build.cancel"}); len(evs) != 0 {
		t.Fatalf("%d cancel events after failed cancels, want 0", len(evs))
	}
	if err := s.Audited(func() *AuditEvent { return mkAudit("build.cancel", "build:1") }).CancelBuild(ctx, b.ID, "by test"); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.ListAudit(ctx, AuditFilter{ActionPrefix: "build.cancel"}); len(evs) != 1 {
		t.Fatalf("%d cancel events, want 1", len(evs))
	}

	if _, err := s.Audited(func() *AuditEvent { return mkAudit("pool.delete", "pool:none") }).DeletePool(ctx, "none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a missing pool: %v", err)
	}
	if err := s.Audited(func() *AuditEvent { return mkAudit("build.approve", "build:1") }).ApproveBuild(ctx, b.ID, "x"); !errors.Is(err, ErrNotWaiting) {
		t.Fatalf("approve of a build that waits for nothing: %v", err)
	}
	if evs, _ := s.ListAudit(ctx, AuditFilter{}); len(evs) != 2 {
		t.Fatalf("%d events, want 2 (the trigger and the one cancel that happened)", len(evs))
	}
}

// The log is append only through Kiln: the store offers no way to change
// or remove an event.
func TestAuditHasNoUpdateOrDelete(t *testing.T) {
	st := reflect.TypeOf(&Store{})
	for i := 0; i < st.NumMethod(); i++ {
		name := st.Method(i).Name
		if strings.Contains(name, "Audit") && name != "AppendAudit" && name != "ListAudit" && name != "Audited" {
			t.Errorf("Store.%s: the audit log has only AppendAudit, ListAudit and Audited", name)
		}
	}
	at := reflect.TypeOf(Audited{})
	for i := 0; i < at.NumMethod(); i++ {
		if name := at.Method(i).Name; strings.Contains(name, "Audit") {
			t.Errorf("Audited.%s: audited changes must not touch the log but to append", name)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
