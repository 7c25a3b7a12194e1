package store

import (
	"errors"
	"testing"
	"time"
)

func TestArtifacts(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")
	cl := claim("a", nil, time.Minute)
	cl.Token = 7
	j, err := s.ClaimJob(ctx, cl)
	if err != nil || j == nil {
		t.Fatalf("claim: %+v %v", j, err)
	}
	mine, theirs := s.AgentWrites(7), s.AgentWrites(8)
	if err := mine.CheckLease(ctx, j.ID, 1); err != nil {
		t.Fatalf("check lease: %v", err)
	}
	if err := theirs.CheckLease(ctx, j.ID, 1); !errors.Is(err, ErrNotYourLease) {
		t.Fatalf("another token's lease check: %v, want ErrNotYourLease", err)
	}
	if err := mine.CheckLease(ctx, j.ID, 2); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("another attempt's lease check: %v, want ErrStaleAttempt", err)
	}
	a := &Artifact{JobID: j.ID, Attempt: 1, Blob: "b/1", Size: 10, SHA256: "ab", Files: 2, ExpiresAt: c.now().Add(time.Hour)}
	if _, err := theirs.RecordArtifact(ctx, a); !errors.Is(err, ErrNotYourLease) {
		t.Fatalf("another token's record: %v", err)
	}
	if got, _ := s.Artifacts(ctx, b.ID); len(got) != 0 {
		t.Fatalf("a refused record was stored: %+v", got)
	}
	replaced, err := mine.RecordArtifact(ctx, a)
	if err != nil || replaced != "" || a.BuildID != b.ID || a.Job != "test" || a.ID == 0 {
		t.Fatalf("record: %q %v %+v", replaced, err, a)
	}
	// The same attempt uploading again (a retried request) replaces it.
	again := *a
	again.Blob, again.Size = "b/2", 11
	if replaced, err := mine.RecordArtifact(ctx, &again); err != nil || replaced != "b/1" {
		t.Fatalf("record again: %q %v, want b/1 replaced", replaced, err)
	}
	got, err := s.Artifact(ctx, b.ID, "test")
	if err != nil || got.Blob != "b/2" || got.Size != 11 || got.Files != 2 || got.SHA256 != "ab" || got.Attempt != 1 || !got.ExpiresAt.Equal(c.now().Add(time.Hour)) || !got.CreatedAt.Equal(c.now()) {
		t.Fatalf("artifact: %+v %v", got, err)
	}
	if _, err := s.Artifact(ctx, b.ID, "other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("artifact of no job: %v", err)
	}
	if list, err := s.Artifacts(ctx, b.ID); err != nil || len(list) != 1 {
		t.Fatalf("list: %+v %v", list, err)
	}
	zero := 0
	if _, err := s.FinishJob(ctx, j.ID, 1, StatusSuccess, &zero, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := mine.RecordArtifact(ctx, &Artifact{JobID: j.ID, Attempt: 1, Blob: "b/3"}); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("record after finish: %v, want ErrStaleAttempt", err)
	}

	if exp, err := s.ExpiredArtifacts(ctx, c.now(), 10); err != nil || len(exp) != 0 {
		t.Fatalf("expired now: %+v %v", exp, err)
	}
	c.advance(time.Hour)
	exp, err := s.ExpiredArtifacts(ctx, c.now(), 10)
	if err != nil || len(exp) != 1 || exp[0].Blob != "b/2" {
		t.Fatalf("expired in an hour: %+v %v", exp, err)
	}
	if of, err := s.ProjectArtifacts(ctx, p.ID); err != nil || len(of) != 1 || of[0].ID != exp[0].ID {
		t.Fatalf("project's: %+v %v", of, err)
	}
	if ok, err := s.DeleteArtifact(ctx, exp[0].ID, "b/1"); err != nil || ok {
		t.Fatalf("delete under a replaced blob: %v %v, want not deleted", ok, err)
	}
	if ok, err := s.DeleteArtifact(ctx, exp[0].ID, "b/2"); err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if list, _ := s.Artifacts(ctx, b.ID); len(list) != 0 {
		t.Fatalf("after delete: %+v", list)
	}
}

// TestArtifactsGoWithTheProject: a project's deletion takes its artifacts'
// records (the server deletes their blobs, listed before).
func TestArtifactsGoWithTheProject(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	mkBuild(t, s, p, "main")
	j, err := s.ClaimJob(ctx, claim("a", nil, time.Minute))
	if err != nil || j == nil {
		t.Fatalf("claim: %+v %v", j, err)
	}
	if _, err := s.AgentWrites(0).RecordArtifact(ctx, &Artifact{JobID: j.ID, Attempt: 1, Blob: "x", ExpiresAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if exp, err := s.ExpiredArtifacts(ctx, time.Now().Add(time.Hour), 10); err != nil || len(exp) != 0 {
		t.Fatalf("left after the project: %+v %v", exp, err)
	}
}
