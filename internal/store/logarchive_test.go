package store

import (
	"errors"
	"testing"
	"time"
)

func TestArchiveLogs(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")
	running := mkBuild(t, s, p, "other")
	j, err := s.ClaimJob(ctx, claim("a", nil, time.Minute))
	if err != nil || j == nil || j.BuildID != b.ID {
		t.Fatalf("claim: %+v %v", j, err)
	}
	lines := []LogLine{{Seq: 1, Text: "one"}, {Seq: 2, Step: 1, Text: "two"}, {Seq: 3, Text: "three"}}
	if err := s.AppendLogs(ctx, j.ID, 1, lines); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkLogsArchived(ctx, b.ID, 3); err == nil {
		t.Fatal("a running build's logs archived")
	}
	zero := 0
	if _, err := s.FinishJob(ctx, j.ID, 1, StatusSuccess, &zero, "", 0); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.BuildsToArchive(ctx, c.now(), 10); err != nil || len(ids) != 0 {
		t.Fatalf("builds finished before now: %v %v, want none", ids, err)
	}
	c.advance(time.Hour)
	ids, err := s.BuildsToArchive(ctx, c.now(), 10)
	if err != nil || len(ids) != 1 || ids[0] != b.ID {
		t.Fatalf("builds to archive: %v %v, want [%d] (not the running %d)", ids, err, b.ID, running.ID)
	}
	var got []LogLine
	n, err := s.EachBuildLogLine(ctx, b.ID, func(l LogLine) error { got = append(got, l); return nil })
	if err != nil || n != 3 || len(got) != 3 || got[1].Text != "two" || got[1].Step != 1 || got[1].JobID != j.ID || got[1].Attempt != 1 {
		t.Fatalf("lines: %d %+v %v", n, got, err)
	}
	if err := s.MarkLogsArchived(ctx, b.ID, 2); !errors.Is(err, ErrArchiveChanged) {
		t.Fatalf("archived with a wrong count: %v, want ErrArchiveChanged", err)
	}
	if l, _ := s.Logs(ctx, j.ID, 1, 0, 0); len(l) != 3 {
		t.Fatalf("after a refused archive: %d lines stored, want 3", len(l))
	}
	if err := s.MarkLogsArchived(ctx, b.ID, 3); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.Logs(ctx, j.ID, 1, 0, 0); len(l) != 0 {
		t.Fatalf("after archiving: %d lines stored, want 0", len(l))
	}
	got2, err := s.Build(ctx, b.ID)
	if err != nil || got2.LogsArchivedAt == nil || !got2.LogsArchivedAt.Equal(c.now()) {
		t.Fatalf("logs_archived_at: %+v %v", got2, err)
	}
	if ids, _ := s.BuildsToArchive(ctx, c.now(), 10); len(ids) != 0 {
		t.Fatalf("archived build listed again: %v", ids)
	}
	if ids, err := s.ArchivedBuilds(ctx, p.ID); err != nil || len(ids) != 1 || ids[0] != b.ID {
		t.Fatalf("archived builds: %v %v", ids, err)
	}
	// Retention still counts the archived lines' size.
	kept, err := s.KeptBuildLogs(ctx, p.ID)
	if err != nil || len(kept) != 1 || kept[0].Bytes != int64(len("one")+len("two")+len("three")) {
		t.Fatalf("kept: %+v %v", kept, err)
	}
	if _, done, err := s.PruneBuildLogs(ctx, b.ID); err != nil || !done {
		t.Fatalf("prune: %v %v", done, err)
	}
	if ids, err := s.ArchivedBuilds(ctx, p.ID); err != nil || len(ids) != 0 {
		t.Fatalf("archived builds after pruning: %v %v, want none", ids, err)
	}
}
