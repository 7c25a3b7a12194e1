package store

import (
	"fmt"
	"testing"
	"time"
)

func TestCheckRunsRecorded(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	if got, err := s.CheckRun(ctx, p.ID, "abc", "kiln"); got != nil || err != nil {
		t.Fatalf("none yet: %+v, %v", got, err)
	}
	if err := s.SetCheckRun(ctx, p.ID, "abc", "kiln", CheckRun{BuildID: 1, CheckRunID: 10}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCheckRun(ctx, p.ID, "abc", "kiln/test", CheckRun{BuildID: 1, CheckRunID: 11}); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Hour)
	if err := s.SetCheckRun(ctx, p.ID, "abc", "kiln", CheckRun{BuildID: 2, CheckRunID: 20}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.CheckRun(ctx, p.ID, "abc", "kiln"); err != nil || *got != (CheckRun{BuildID: 2, CheckRunID: 20}) {
		t.Fatalf("replaced: %+v, %v", got, err)
	}
	if n, err := s.PruneCheckRuns(ctx, c.now().Add(-time.Minute)); n != 1 || err != nil {
		t.Fatalf("prune: %d, %v", n, err)
	}
	if got, _ := s.CheckRun(ctx, p.ID, "abc", "kiln/test"); got != nil {
		t.Errorf("pruned: %+v", got)
	}
	if err := s.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CheckRun(ctx, p.ID, "abc", "kiln"); got != nil {
		t.Errorf("the project's removal leaves %+v", got)
	}
}

func TestLogTail(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	mkBuild(t, s, p, "main")
	j, err := s.ClaimJob(ctx, claim("a", nil, time.Minute))
	if err != nil || j == nil {
		t.Fatal(j, err)
	}
	var lines []LogLine
	for i := 1; i <= 30; i++ {
		lines = append(lines, LogLine{Seq: int64(i), Step: i % 2, Text: fmt.Sprint("line ", i)})
	}
	if err := s.AppendLogs(ctx, j.ID, j.Attempt, lines); err != nil {
		t.Fatal(err)
	}
	got, err := s.LogTail(ctx, j.ID, j.Attempt, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range got {
		texts = append(texts, l.Text)
	}
	if fmt.Sprint(texts) != "[line 25 line 27 line 29]" {
		t.Errorf("tail of step 1: %v", texts)
	}
}
