package scheduler

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/kilnci/kiln/internal/store/storetest"

	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

// newScheduler is a scheduler over a real SQLite store in a temporary
// directory (no git: these tests plan builds through the store).
func newScheduler(t *testing.T) (*Scheduler, *store.Store) {
	t.Helper()
	box, err := secretbox.New(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), storetest.Database(t), box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(DefaultConfig(), st, nil, metrics.New(nil), slog.New(slog.NewTextHandler(io.Discard, nil))), st
}

// queue makes project name (with its scheduling) and one build of n queued jobs.
func queue(t *testing.T, st *store.Store, name string, sc store.Scheduling, n int) *store.Build {
	t.Helper()
	ctx := context.Background()
	p := &store.Project{Name: name, CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.SetScheduling(ctx, p.ID, sc); err != nil {
		t.Fatal(err)
	}
	b := &store.Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	jobs := make([]*store.Job, n)
	for i := range jobs {
		jobs[i] = &store.Job{Name: fmt.Sprintf("j%d", i), Spec: []byte(`{}`), TimeoutSeconds: 60}
	}
	if err := st.PlanBuild(ctx, b.ID, "abc123", jobs); err != nil {
		t.Fatal(err)
	}
	return b
}

// claimN claims n jobs (no wait) and counts them by build.
func claimN(t *testing.T, s *Scheduler, n int) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for i := range n {
		j, err := s.Claim(context.Background(), fmt.Sprintf("agent-%d", i), 0, nil, pipeline.Resources{}, 0)
		if err != nil || j == nil {
			t.Fatalf("claim %d: %+v, %v", i+1, j, err)
		}
		got[j.BuildID]++
	}
	return got
}

// Fair share: one project's 10,000 queued jobs do not make another's build
// wait; running jobs are shared by weight (2 against 1: 4 and 2 of 6).
func TestFairShare(t *testing.T) {
	s, st := newScheduler(t)
	big := queue(t, st, "big", store.Scheduling{}, 10000)
	small := queue(t, st, "small", store.Scheduling{}, 3)
	if got := claimN(t, s, 2); got[small.ID] != 1 {
		t.Fatalf("first two claims: %v; want one of the small project's build %d", got, small.ID)
	}
	// Both now run one: they alternate.
	if got := claimN(t, s, 4); got[big.ID] != 2 || got[small.ID] != 2 {
		t.Fatalf("next four claims: %v; want 2 and 2", got)
	}

	// An agent that runs one job at a time: nothing runs at each claim,
	// and the project served least recently goes first.
	s, st = newScheduler(t)
	queue(t, st, "big", store.Scheduling{}, 3000)
	small = queue(t, st, "small", store.Scheduling{}, 3)
	for i := range 2 {
		j, err := s.Claim(context.Background(), "one", 0, nil, pipeline.Resources{}, 0)
		if err != nil || j == nil {
			t.Fatalf("claim %d: %+v, %v", i+1, j, err)
		}
		if _, err := st.FinishJob(context.Background(), j.ID, j.Attempt, store.StatusSuccess, nil, "", 0); err != nil {
			t.Fatal(err)
		}
		if i == 1 && j.BuildID != small.ID {
			t.Fatalf("one job at a time: the second claim took build %d; want the small project's %d", j.BuildID, small.ID)
		}
	}

	s, st = newScheduler(t)
	heavy := queue(t, st, "heavy", store.Scheduling{Weight: 2}, 20)
	light := queue(t, st, "light", store.Scheduling{}, 20)
	if got := claimN(t, s, 6); got[heavy.ID] != 4 || got[light.ID] != 2 {
		t.Fatalf("6 claims: %v; want heavy 4, light 2", got)
	}
}

// The server's default cap (ProjectMaxRunning) applies to a project
// without its own; the others keep being served.
func TestProjectMaxRunningDefault(t *testing.T) {
	s, st := newScheduler(t)
	s.cfg.ProjectMaxRunning = 2
	one := 1
	a := queue(t, st, "a", store.Scheduling{}, 10)
	b := queue(t, st, "b", store.Scheduling{MaxRunning: &one}, 10)
	c := queue(t, st, "c", store.Scheduling{}, 10)
	got := claimN(t, s, 5)
	if got[a.ID] != 2 || got[b.ID] != 1 || got[c.ID] != 2 {
		t.Fatalf("5 claims: %v; want a 2, b 1 (its own cap), c 2", got)
	}
	if j, err := s.Claim(context.Background(), "more", 0, nil, pipeline.Resources{}, 0); err != nil || j != nil {
		t.Fatalf("every project at its cap, yet claimed %+v, %v", j, err)
	}
}
