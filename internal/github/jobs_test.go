package github_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

func jobIDs(jobs []github.Job) []int64 {
	var ids []int64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

// QueuedJobs finds every queued job: those of queued runs, and those still
// waiting in a run another job of which has started. Running, cancelled
// and other repositories' jobs are left out.
func TestQueuedJobs(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	repo := github.Scope{Owner: "acme", Repo: "widgets"}

	a := s.QueueJob("acme", "widgets", []string{"self-hosted", "kiln"})
	pair := s.QueueRun("acme", "widgets", []string{"kiln", "big"}, []string{"kiln", "gpu"})
	cancelled := s.QueueJob("acme", "widgets", []string{"kiln"})
	s.QueueJob("acme", "other", []string{"kiln"})
	s.CancelRun("acme", "widgets", cancelled.RunID)

	// A runner takes the oldest job it matches: a, then the run's first.
	for i, want := range []int64{a.ID, pair[0].ID} {
		jit, err := c.GenerateJITConfig(ctx, repo, fmt.Sprintf("r%d", i), []string{"self-hosted", "kiln", "big"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := register(t, s, jit); got.JobID != want {
			t.Fatalf("runner took job %d, want %d", got.JobID, want)
		}
	}

	jobs, err := c.QueuedJobs(ctx, "acme", "widgets")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jobIDs(jobs), []int64{pair[1].ID}; !slices.Equal(got, want) {
		t.Fatalf("queued jobs %v, want %v (the waiting job of an in_progress run)", got, want)
	}
	j := jobs[0]
	if j.RunID != pair[1].RunID || j.Status != "queued" || !slices.Equal(j.Labels, []string{"kiln", "gpu"}) || j.HTMLURL != pair[1].HTMLURL || j.Name == "" || j.RunnerName != "" {
		t.Errorf("job %+v", j)
	}

	more := s.QueueJob("acme", "widgets", []string{"kiln"})
	jobs, err = c.QueuedJobs(ctx, "acme", "widgets")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jobIDs(jobs), []int64{pair[1].ID, more.ID}; !slices.Equal(got, want) {
		t.Errorf("queued jobs %v, want %v", got, want)
	}
}

func TestQueuedJobsPagesAndFailure(t *testing.T) {
	s := newFake(t)
	c := tokenClient(t, s)
	ctx := context.Background()
	var want []int64
	for range 5 {
		want = append(want, s.QueueJob("acme", "widgets", []string{"kiln"}).ID)
	}
	s.SetMaxPerPage(2)
	jobs, err := c.QueuedJobs(ctx, "acme", "widgets")
	if err != nil {
		t.Fatal(err)
	}
	if got := jobIDs(jobs); !slices.Equal(got, want) {
		t.Errorf("queued jobs %v, want %v", got, want)
	}
	// 3 pages of queued runs, 1 of in_progress runs, then one per run.
	if runs, lists := s.Calls(fakegithub.EndpointListRuns), s.Calls(fakegithub.EndpointListJobs); runs != 4 || lists != 5 {
		t.Errorf("list-runs %d, list-jobs %d: want 4 and 5", runs, lists)
	}
	s.FailAfter(fakegithub.EndpointListJobs, 3, 503, 1)
	if jobs, err := c.QueuedJobs(ctx, "acme", "widgets"); !errors.Is(err, github.ErrServer) || jobs != nil {
		t.Errorf("a failed page: %v, %v; want ErrServer and no jobs", jobs, err)
	}
}

func TestGetJob(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	q := s.QueueJob("acme", "widgets", []string{"kiln"})
	j, err := c.GetJob(ctx, "acme", "widgets", q.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != q.ID || j.RunID != q.RunID || j.Status != "queued" || j.Conclusion != "" {
		t.Errorf("job %+v", j)
	}
	s.CancelRun("acme", "widgets", q.RunID)
	if j, err := c.GetJob(ctx, "acme", "widgets", q.ID); err != nil || j.Status != "completed" || j.Conclusion != "cancelled" {
		t.Errorf("after cancel: %+v, %v", j, err)
	}
	if _, err := c.GetJob(ctx, "acme", "other", q.ID); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("job of another repository: %v, want ErrNotFound", err)
	}
	if _, err := c.GetJob(ctx, "acme", "", q.ID); !errors.Is(err, github.ErrValidation) {
		t.Errorf("no repository: %v, want ErrValidation", err)
	}
}
