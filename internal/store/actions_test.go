package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/secretbox"
)

func mkPool(t *testing.T, s *Store, name string, max int) *Pool {
	t.Helper()
	p := &Pool{Name: name, Labels: []string{"self-hosted", "kiln"}, Image: "runner:latest", MaxRunners: max, Owner: "acme", RunnerGroupID: 1,
		Command: "exec /runner/run.sh", AgentLabels: []string{"linux"}, TimeoutSeconds: 3600}
	if err := s.CreatePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func ghJob(id int64, status string) WorkflowJob {
	return WorkflowJob{ID: id, RunID: 500 + id, Owner: "acme", Repo: "web", Name: "build", Labels: []string{"self-hosted", "kiln"},
		Status: status, HTMLURL: fmt.Sprintf("https://github.com/acme/web/actions/runs/1/job/%d", id), HeadBranch: "main", HeadSHA: "abc"}
}

func launchOf(p *Pool) *LaunchSpec {
	return &LaunchSpec{Pool: p, CloneURL: "https://github.com/acme/web.git", ProjectName: "gh-acme-web", DefaultBranch: "main",
		Spec: []byte(`{"name":"runner"}`), MaxAttempts: 3, Message: "runner", Decide: launchWhenNeeded}
}

// launchWhenNeeded is these tests' launch policy: a runner job whenever
// the job has no live one. The real policy (bounds, warm runners) is
// internal/actions', tested there; the store gathers facts and applies.
func launchWhenNeeded(f LaunchFacts) LaunchDecision {
	return LaunchDecision{Launch: !f.HasRunnerJob || (f.Relaunch && f.RunnerJobEnded)}
}

func record(t *testing.T, s *Store, u WorkflowJobUpdate) *WorkflowJobResult {
	t.Helper()
	if u.Source == "" {
		u.Source = SourceWebhook
	}
	res, err := s.RecordWorkflowJob(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func countRunnerJobs(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE pool != ''`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWorkflowJobStateMovesForwardOnly(t *testing.T) {
	s, _ := newStore(t)
	p := mkPool(t, s, "linux", 10)

	res := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "d1", Action: "queued", Launch: launchOf(p)})
	if !res.New || res.Created == nil || res.Created.Name != "kiln-1" || res.Created.Pool != "linux" || res.Created.Status != StatusQueued {
		t.Fatalf("first queued: %+v created %+v", res, res.Created)
	}
	b, err := s.Build(ctx, res.Created.BuildID)
	if err != nil || b.Trigger != TriggerGitHubActions || !b.Planned || b.Branch != "main" || b.Project != "gh-acme-web" || len(b.Jobs) != 1 || b.Jobs[0].Pool != "linux" {
		t.Fatalf("runner build %+v, %v", b, err)
	}
	proj, err := s.ProjectByName(ctx, "gh-acme-web")
	if err != nil || proj.CloneURL != "https://github.com/acme/web.git" || proj.WebhookSecret != "" {
		t.Fatalf("repo project %+v, %v", proj, err)
	}

	// The same delivery again, and the same state in a new delivery: nothing.
	if res := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "d1", Action: "queued", Launch: launchOf(p)}); !res.Duplicate || res.Created != nil {
		t.Fatalf("duplicate delivery: %+v", res)
	}
	if res := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "d2", Action: "queued", Launch: launchOf(p)}); res.Advanced || res.Created != nil {
		t.Fatalf("repeated queued: %+v", res)
	}
	// Forward, then a late queued and in_progress: no step back.
	done := ghJob(1, GHCompleted)
	done.Conclusion = "success"
	if res := record(t, s, WorkflowJobUpdate{Job: done, DeliveryID: "d3"}); !res.Advanced || res.Prev != GHQueued || res.Job.Status != GHCompleted {
		t.Fatalf("completed: %+v", res)
	}
	for i, st := range []string{GHQueued, GHInProgress} {
		res := record(t, s, WorkflowJobUpdate{Job: ghJob(1, st), DeliveryID: fmt.Sprintf("late%d", i), Launch: launchOf(p)})
		if res.Advanced || res.Created != nil || res.Job.Status != GHCompleted || res.Job.Conclusion != "success" {
			t.Fatalf("late %s: %+v", st, res)
		}
	}
	// Reordered: completed first, then queued: no runner job, ever.
	if res := record(t, s, WorkflowJobUpdate{Job: done2(2), DeliveryID: "e1"}); !res.New || res.Created != nil {
		t.Fatalf("completed first: %+v", res)
	}
	if res := record(t, s, WorkflowJobUpdate{Job: ghJob(2, GHQueued), DeliveryID: "e2", Launch: launchOf(p)}); res.Created != nil || res.Job.Status != GHCompleted {
		t.Fatalf("queued after completed: %+v", res)
	}
	if n := countRunnerJobs(t, s); n != 1 {
		t.Fatalf("%d runner jobs, want 1", n)
	}
}

func done2(id int64) WorkflowJob {
	j := ghJob(id, GHCompleted)
	j.Conclusion = "cancelled"
	return j
}

func TestWorkflowJobConcurrentDeliveriesMakeOneRunnerJob(t *testing.T) {
	s, _ := newStore(t)
	p := mkPool(t, s, "linux", 10)
	var wg sync.WaitGroup
	var created atomic.Int32
	for i := range 8 {
		wg.Go(func() {
			res, err := s.RecordWorkflowJob(context.Background(), WorkflowJobUpdate{Job: ghJob(7, GHQueued), Source: SourceWebhook,
				DeliveryID: fmt.Sprintf("d%d", i%3), Launch: launchOf(p)})
			if err != nil {
				t.Error(err)
				return
			}
			if res.Created != nil {
				created.Add(1)
			}
		})
	}
	wg.Wait()
	if created.Load() != 1 || countRunnerJobs(t, s) != 1 {
		t.Fatalf("created %d runner jobs (%d stored), want 1", created.Load(), countRunnerJobs(t, s))
	}
}

// TestPoolMaxRunnersBoundsClaims: 100 queued runner jobs of a pool of at
// most 10, claimed by 16 agents at once, never run more than 10 at a time;
// a finished one makes room for exactly one more; other jobs are not starved.
func TestPoolMaxRunnersBoundsClaims(t *testing.T) {
	s, _ := newStore(t)
	p := mkPool(t, s, "linux", 10)
	for i := range int64(100) {
		record(t, s, WorkflowJobUpdate{Job: ghJob(1000+i, GHQueued), DeliveryID: fmt.Sprint(i), Launch: launchOf(p)})
	}
	native := mkBuild(t, s, mkProject(t, s, "native", false), "main")

	var mu sync.Mutex
	var claimed []*Job
	var wg sync.WaitGroup
	for a := range 16 {
		wg.Go(func() {
			for {
				j, err := s.ClaimJob(context.Background(), claim(fmt.Sprintf("agent-%d", a), []string{"linux"}, 2*time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				if j == nil {
					return
				}
				mu.Lock()
				claimed = append(claimed, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	runners, nativeClaimed := 0, false
	for _, j := range claimed {
		if j.Pool == "linux" {
			runners++
		}
		if j.BuildID == native.ID {
			nativeClaimed = true
		}
	}
	if runners != 10 || !nativeClaimed {
		t.Fatalf("claimed %d runner jobs (want 10) and native=%v (want true)", runners, nativeClaimed)
	}
	assertRunning := func(want int) {
		t.Helper()
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE pool = 'linux' AND status = 'running'`).Scan(&n); err != nil || n != want {
			t.Fatalf("%d running runner jobs (%v), want %d", n, err, want)
		}
	}
	assertRunning(10)
	var first *Job
	for _, j := range claimed {
		if j.Pool == "linux" {
			first = j
			break
		}
	}
	if _, err := s.FinishJob(ctx, first.ID, first.Attempt, StatusSuccess, nil, "", 0); err != nil {
		t.Fatal(err)
	}
	j1, err := s.ClaimJob(ctx, claim("x", []string{"linux"}, 2*time.Minute))
	if err != nil || j1 == nil || j1.Pool != "linux" {
		t.Fatalf("claim after one finished: %+v, %v", j1, err)
	}
	if j2, err := s.ClaimJob(ctx, claim("y", []string{"linux"}, 2*time.Minute)); err != nil || j2 != nil {
		t.Fatalf("claim past the maximum: %+v, %v", j2, err)
	}
	assertRunning(10)

	// A deleted pool's jobs are canceled and never claimed.
	canceled, err := s.DeletePool(ctx, "linux")
	if err != nil || len(canceled) != 99 { // one finished
		t.Fatalf("DeletePool canceled %d builds, %v", len(canceled), err)
	}
	if j, err := s.ClaimJob(ctx, claim("z", []string{"linux"}, 2*time.Minute)); err != nil || j != nil {
		t.Fatalf("claim after pool deleted: %+v, %v", j, err)
	}
}

func TestRunnerJobsSwapWhenGitHubReassigns(t *testing.T) {
	s, _ := newStore(t)
	p := mkPool(t, s, "linux", 10)
	a := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "a", Launch: launchOf(p)}).Created
	b := record(t, s, WorkflowJobUpdate{Job: ghJob(2, GHQueued), DeliveryID: "b", Launch: launchOf(p)}).Created
	// Kiln's runner for job 1 took job 2.
	prog := ghJob(2, GHInProgress)
	prog.RunnerName = a.Name
	res := record(t, s, WorkflowJobUpdate{Job: prog, DeliveryID: "c"})
	if !res.Swapped || res.Runner == nil || res.Runner.JobID != a.JobID || res.Runner.GHJobID != 2 {
		t.Fatalf("swap: %+v runner %+v", res, res.Runner)
	}
	w1, _ := s.WorkflowJob(ctx, 1)
	if w1.JobID == nil || *w1.JobID != b.JobID {
		t.Fatalf("job 1 now served by %v, want runner job %d", w1.JobID, b.JobID)
	}
	r, _ := s.RunnerJob(ctx, b.JobID)
	if r.GHJobID != 1 || r.Name != "kiln-2" {
		t.Fatalf("runner job of 1: %+v", r)
	}
	// The same news again changes nothing.
	if res := record(t, s, WorkflowJobUpdate{Job: prog, DeliveryID: "d"}); res.Swapped || res.Advanced {
		t.Fatalf("repeat: %+v", res)
	}
}

// The launch policy is given what the store knows of the job in the
// update's transaction, and its decision is applied: a runner job, a wait
// for a warm runner, or nothing.
func TestLaunchPolicyGetsTheFacts(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkPool(t, s, "linux", 10)
	var facts []LaunchFacts
	decide := func(d LaunchDecision) *LaunchSpec {
		l := launchOf(p)
		l.Decide = func(f LaunchFacts) LaunchDecision { facts = append(facts, f); return d }
		return l
	}
	last := func() LaunchFacts { return facts[len(facts)-1] }

	first := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "a", Launch: decide(LaunchDecision{Launch: true})}).Created
	if first == nil || last() != (LaunchFacts{}) {
		t.Fatalf("first launch: %+v, facts %+v", first, last())
	}
	// Decided against: nothing is made.
	if res := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), Source: SourceReconciler, Launch: decide(LaunchDecision{}), Relaunch: true}); res.Created != nil {
		t.Fatalf("made a runner job the policy did not ask for: %+v", res.Created)
	}
	if f := last(); !f.HasRunnerJob || f.RunnerJobEnded || !f.Relaunch || f.Launches != 1 {
		t.Fatalf("facts with a live runner job: %+v", f)
	}
	if err := s.CancelBuild(ctx, first.BuildID, "test"); err != nil {
		t.Fatal(err)
	}
	// A repeat of the same news by webhook is no occasion to decide.
	n := len(facts)
	record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "b", Launch: decide(LaunchDecision{Launch: true})})
	if len(facts) != n {
		t.Fatalf("the policy was asked about an update that changed nothing: %+v", last())
	}
	res := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), Source: SourceReconciler, Launch: decide(LaunchDecision{Launch: true}), Relaunch: true})
	if f := last(); !f.HasRunnerJob || !f.RunnerJobEnded || f.Launches != 1 {
		t.Fatalf("facts with an ended runner job: %+v", f)
	}
	if res.Created == nil || res.Created.Name != "kiln-1-2" || res.Job.Launches != 2 {
		t.Fatalf("relaunch: %+v", res.Created)
	}

	// A wait for a warm runner: no runner job, the wait recorded, and
	// seen as running until it ends.
	res = record(t, s, WorkflowJobUpdate{Job: ghJob(2, GHQueued), DeliveryID: "c", Launch: decide(LaunchDecision{AwaitWarm: time.Minute})})
	if res.Created != nil || !res.Warm {
		t.Fatalf("await warm: created %+v warm %v", res.Created, res.Warm)
	}
	record(t, s, WorkflowJobUpdate{Job: ghJob(2, GHQueued), Source: SourceReconciler, Launch: decide(LaunchDecision{}), Relaunch: true})
	if f := last(); !f.WarmWaiting || f.WarmWaited {
		t.Fatalf("facts during the wait: %+v", f)
	}
	c.advance(2 * time.Minute)
	record(t, s, WorkflowJobUpdate{Job: ghJob(2, GHQueued), Source: SourceReconciler, Launch: decide(LaunchDecision{}), Relaunch: true})
	if f := last(); f.WarmWaiting || !f.WarmWaited {
		t.Fatalf("facts after the wait: %+v", f)
	}
}

func TestRetryJobLaterDoesNotCountTheAttempt(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkPool(t, s, "linux", 10)
	rj := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "a", Launch: launchOf(p)}).Created
	for i := range 5 {
		j, err := s.ClaimJob(ctx, claim("a", []string{"linux"}, 2*time.Minute))
		if err != nil || j == nil || j.ID != rj.JobID {
			t.Fatalf("claim %d: %+v, %v", i, j, err)
		}
		st, err := s.RetryJobLater(ctx, j.ID, j.Attempt, "rate limited", 2*time.Minute)
		if err != nil || st != StatusQueued {
			t.Fatalf("RetryJobLater = %s, %v", st, err)
		}
		if j, _ := s.ClaimJob(ctx, claim("a", []string{"linux"}, 2*time.Minute)); j != nil {
			t.Fatal("claimed before the delay passed")
		}
		c.advance(2 * time.Minute)
	}
}

func TestRunnerBuildsNeverSupersede(t *testing.T) {
	s, _ := newStore(t)
	proj := &Project{Name: "web", CloneURL: "https://github.com/acme/web.git", DefaultBranch: "main", CancelSuperseded: true}
	if err := s.CreateProject(ctx, proj); err != nil {
		t.Fatal(err)
	}
	p := mkPool(t, s, "linux", 10)
	a := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "a", Launch: launchOf(p)}).Created
	b := record(t, s, WorkflowJobUpdate{Job: ghJob(2, GHQueued), DeliveryID: "b", Launch: launchOf(p)}).Created
	if a.Project != "web" || b.Project != "web" {
		t.Fatalf("runner builds in projects %s, %s; want the repository's project web", a.Project, b.Project)
	}
	mkBuild(t, s, proj, "main") // a push of main
	for _, id := range []int64{a.BuildID, b.BuildID} {
		if st := buildStatus(t, s, id); st != StatusQueued {
			t.Fatalf("runner build %d: %s, want queued", id, st)
		}
	}
}

func TestWorkflowJobsSurviveReopen(t *testing.T) {
	s, path := newStore(t)
	p := mkPool(t, s, "linux", 10)
	first := record(t, s, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "a", Launch: launchOf(p)}).Created
	s.Close()
	box, _ := secretbox.New(bytes.Repeat([]byte{1}, 32))
	s2, err := Open(ctx, path, box)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if res := record(t, s2, WorkflowJobUpdate{Job: ghJob(1, GHQueued), DeliveryID: "a", Launch: launchOf(p)}); !res.Duplicate {
		t.Fatalf("delivery after reopen: %+v", res)
	}
	res := record(t, s2, WorkflowJobUpdate{Job: ghJob(1, GHQueued), Source: SourceReconciler, Launch: launchOf(p), Relaunch: true})
	if res.Created != nil || res.Runner == nil || res.Runner.JobID != first.JobID {
		t.Fatalf("after reopen: created %+v runner %+v", res.Created, res.Runner)
	}
	if _, err := s2.Pool(ctx, "linux"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Pool(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
}
