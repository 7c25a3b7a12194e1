package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// A project's registry credentials: sealed at rest, replaced by host,
// listed by host, removed; another project's are its own.
func TestRegistriesSealed(t *testing.T) {
	s, _ := newStore(t)
	web, api := mkProject(t, s, "web", false), mkProject(t, s, "api", false)
	if err := s.SetRegistry(ctx, web.ID, "registry.example.com", "ci", "first-password"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRegistry(ctx, web.ID, "registry.example.com", "ci2", "pull-password-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRegistry(ctx, web.ID, "a.example.com:5000", "bot", "pull-password-2"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Registries(ctx, web.ID)
	if err != nil || len(got) != 2 || got[0].Host != "a.example.com:5000" || got[1].Username != "ci2" || got[1].Password != "pull-password-1" {
		t.Fatalf("Registries = %+v, %v", got, err)
	}
	if other, err := s.Registries(ctx, api.ID); err != nil || len(other) != 0 {
		t.Fatalf("another project's registries: %+v, %v", other, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT password FROM registries`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("pull-password")) {
			t.Fatal("registry password stored in plaintext")
		}
	}
	rows.Close()
	if err := s.DeleteRegistry(ctx, web.ID, "registry.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistry(ctx, web.ID, "registry.example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if got, _ := s.Registries(ctx, web.ID); len(got) != 1 {
		t.Fatalf("after delete: %+v", got)
	}
}

// The image digest an agent reports is recorded on its running attempt
// only, fenced by attempt and token.
func TestImagePulledFenced(t *testing.T) {
	s, _ := newStore(t)
	web := mkProject(t, s, "web", false)
	planned(t, s, web, "main", "c1", "test")
	cl := claim("a1", nil, time.Minute)
	cl.Token = 7
	j, err := s.ClaimJob(ctx, cl)
	if err != nil || j == nil {
		t.Fatal(j, err)
	}
	for _, w := range []struct {
		token   int64
		attempt int
		want    bool
	}{{8, 1, false}, {7, 2, false}, {7, 1, true}} {
		if ok, err := s.AgentWrites(w.token).ImagePulled(ctx, j.ID, w.attempt, "sha256:abc"); err != nil || ok != w.want {
			t.Errorf("ImagePulled(token %d, attempt %d) = %v, %v; want %v", w.token, w.attempt, ok, err, w.want)
		}
	}
	got, err := s.Job(ctx, j.ID)
	if err != nil || got.ImageDigest != "sha256:abc" {
		t.Fatalf("job's digest %q, %v", got.ImageDigest, err)
	}
}
