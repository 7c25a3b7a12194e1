package actions_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
)

// A burst of 100 queued jobs against a pool of at most 10 runners: every
// job gets its runner job, and agents can run 10 of them at once, no more.
func TestBurstRespectsPoolMaximum(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 10)
	for range 100 {
		h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	}
	if rs := h.runnerJobs(); len(rs) != 100 {
		t.Fatalf("%d runner jobs, want 100", len(rs))
	}
	var running []*store.Job
	for i := range 100 {
		j := h.claim(fmt.Sprintf("agent-%d", i))
		if j == nil {
			break
		}
		if _, err := h.svc.Launch(ctx, j); err != nil {
			t.Fatal(err)
		}
		running = append(running, j)
	}
	if len(running) != 10 {
		t.Fatalf("%d runner jobs running, want 10", len(running))
	}
	if n := len(h.gh.Runners()); n != 10 {
		t.Errorf("%d runners registered, want 10", n)
	}
	// One ends: one more may start.
	if _, err := h.st.FinishJob(ctx, running[0].ID, running[0].Attempt, store.StatusSuccess, nil, "", 0); err != nil {
		t.Fatal(err)
	}
	if j := h.claim("agent-next"); j == nil {
		t.Fatal("nothing to claim after a runner job ended")
	}
	if j := h.claim("agent-over"); j != nil {
		t.Fatalf("claimed an 11th runner job: %+v", j)
	}
}

// A cancelled run releases its runners: a runner job still queued is
// canceled; a started one whose runner has not taken the job has its
// runner removed from GitHub and is canceled; one whose runner runs the
// job is left to end with it.
func TestCancelledRunReleasesRunners(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	jobs := h.gh.QueueRun(owner, repo, labels, labels, labels)
	var res []*actions.WebhookResult
	for _, j := range jobs {
		res = append(res, h.mustDeliver(j, "queued", actions.OutcomeRunner))
	}
	// The first runner job starts and its runner takes the first job; the
	// second starts and its runner has not come online yet.
	_, l1, err := h.claimLaunch("a1")
	if err != nil {
		t.Fatal(err)
	}
	if a := h.register(l1); a.JobID != jobs[0].ID {
		t.Fatalf("first runner took %+v", a)
	}
	_, l2, err := h.claimLaunch("a2")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.runnersNamed(l2.RunnerName)) != 1 {
		t.Fatalf("runners %+v", h.gh.Runners())
	}
	running, _ := h.gh.Job(jobs[0].ID)
	h.mustDeliver(running, "in_progress", actions.OutcomeRecorded)

	h.gh.CancelRun(owner, repo, jobs[0].RunID)
	deletes := h.gh.Calls(fakegithub.EndpointDeleteRunner)
	for _, j := range jobs {
		done, _ := h.gh.Job(j.ID)
		h.mustDeliver(done, "completed", actions.OutcomeRecorded)
	}

	if got := h.job(res[2].JobID); got.Status != store.StatusCanceled {
		t.Errorf("queued runner job: %s, want canceled", got.Status)
	}
	if got := h.job(res[1].JobID); got.Status != store.StatusRunning || !got.CancelRequested {
		t.Errorf("started runner job: %s cancel=%v, want a cancel requested", got.Status, got.CancelRequested)
	}
	if len(h.runnersNamed(l2.RunnerName)) != 0 {
		t.Errorf("the idle runner is still registered: %+v", h.gh.Runners())
	}
	if got := h.job(res[0].JobID); got.CancelRequested {
		t.Errorf("the runner job whose runner ran the job was canceled: %+v", got)
	}
	if n := h.gh.Calls(fakegithub.EndpointDeleteRunner) - deletes; n != 1 {
		t.Errorf("%d runners removed, want 1", n)
	}
	if len(h.gh.Runners()) != 0 {
		t.Errorf("runners left: %+v", h.gh.Runners())
	}
}

// Webhooks that never came: the reconciler creates the runner job of a
// queued job no webhook announced (counted as a repair), once, and
// releases the runner job of a job that ended without a webhook.
func TestReconcilerRepairsDroppedWebhooks(t *testing.T) {
	for _, scope := range []string{"repository", "organization"} {
		t.Run(scope, func(t *testing.T) {
			h := newHarness(t)
			h.pool("linux", 5, func(p *store.Pool) {
				if scope == "repository" {
					p.Repo = repo
				}
			})
			announced := h.queue()
			h.mustDeliver(announced, "queued", actions.OutcomeRunner)
			dropped := h.queue()
			h.queue("self-hosted", "gpu") // no pool's: left alone

			if _, err := h.svc.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if got := h.counter("kiln_actions_reconciler_repairs_total"); got != 1 {
				t.Errorf("repairs %v, want 1", got)
			}
			rs := h.runnerJobs()
			if len(rs) != 2 || rs[0].GHJobID != dropped.ID {
				t.Fatalf("runner jobs %+v", rs)
			}
			if _, err := h.svc.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if n := len(h.runnerJobs()); n != 2 {
				t.Errorf("%d runner jobs after a second pass, want 2", n)
			}

			// The dropped job is cancelled on GitHub, and no webhook says so.
			h.gh.CancelRun(owner, repo, dropped.RunID)
			h.clock.advance(time.Minute)
			if _, err := h.svc.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if got := h.job(rs[0].JobID); got.Status != store.StatusCanceled {
				t.Errorf("runner job of the cancelled job: %s", got.Status)
			}
			if got := h.job(rs[1].JobID); got.Status != store.StatusQueued {
				t.Errorf("runner job of the queued job: %s", got.Status)
			}
			if got := h.counter("kiln_actions_reconciler_repairs_total"); got != 1 {
				t.Errorf("repairs %v, want 1", got)
			}
		})
	}
}

// The reconciler fails a pass on a GitHub error (the loop backs off) and
// keeps away from GitHub while the quota is low.
func TestReconcilerBacksOff(t *testing.T) {
	h := newHarness(t, func(c *actions.Config) { c.MinRateRemaining = fakegithub.RateLimitPerHour })
	h.pool("linux", 5, func(p *store.Pool) { p.Repo = repo })
	h.queue()
	h.gh.FailNext(fakegithub.EndpointListRuns, http.StatusBadGateway, 1)
	if _, err := h.svc.Reconcile(ctx); !errors.Is(err, github.ErrServer) {
		t.Fatalf("reconcile under a 502: %v", err)
	}
	if n := len(h.runnerJobs()); n != 0 {
		t.Fatalf("%d runner jobs", n)
	}
	// Every request spends the quota below MinRateRemaining: the pass waits.
	calls := h.gh.Calls(fakegithub.EndpointListRuns)
	wait, err := h.svc.Reconcile(ctx)
	if err != nil || wait <= 0 {
		t.Fatalf("reconcile with the quota low: wait %v, %v", wait, err)
	}
	if n := h.gh.Calls(fakegithub.EndpointListRuns); n != calls {
		t.Errorf("GitHub called %d times with the quota low", n-calls)
	}
}

// The reaper removes a runner that never comes online within the
// bootstrap timeout (and cancels its runner job, which destroys its
// sandbox), and kiln-* runners no runner job has, unless busy; it leaves
// other runners alone.
func TestReaper(t *testing.T) {
	h := newHarness(t, func(c *actions.Config) { c.BootstrapTimeout = 2 * time.Minute })
	h.pool("linux", 5)
	res := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	if _, _, err := h.claimLaunch("a1"); err != nil {
		t.Fatal(err)
	}
	c := h.client()
	org := github.Scope{Owner: owner}
	if _, err := c.GenerateJITConfig(ctx, org, "kiln-999999", labels, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateJITConfig(ctx, org, "someone-elses", labels, 1); err != nil {
		t.Fatal(err)
	}
	// A kiln-* runner Kiln does not know, busy with a job: never taken from it.
	h.queue()
	busy, err := c.GenerateJITConfig(ctx, org, "kiln-888888", labels, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a := h.register(&actions.Launch{Secrets: map[string]string{actions.JITConfigEnv: busy.EncodedJITConfig}}); a.JobID == 0 {
		t.Fatal("the busy runner got no job")
	}

	if _, err := h.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.runnersNamed(res.RunnerName)) != 1 || h.job(res.JobID).CancelRequested {
		t.Fatalf("a runner within its bootstrap time was reaped: %+v", h.gh.Runners())
	}
	if len(h.runnersNamed("kiln-999999")) != 0 || len(h.runnersNamed("someone-elses")) != 1 || len(h.runnersNamed("kiln-888888")) != 1 {
		t.Errorf("orphans: %+v", h.gh.Runners())
	}

	h.clock.advance(3 * time.Minute)
	if _, err := h.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.runnersNamed(res.RunnerName)) != 0 {
		t.Errorf("the runner that never came online is registered: %+v", h.gh.Runners())
	}
	if j := h.job(res.JobID); !j.CancelRequested {
		t.Errorf("its runner job was not canceled: %+v", j)
	}
	b, err := h.st.Build(ctx, res.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dumpJSON(b), "bootstrap") {
		t.Errorf("the cancel does not say why: %s", dumpJSON(b))
	}
}

// A runner job whose registration GitHub no longer has (removed by hand,
// or gone with its job) is ended after the bootstrap timeout.
func TestReaperEndsRunnerJobWithoutRegistration(t *testing.T) {
	h := newHarness(t, func(c *actions.Config) { c.BootstrapTimeout = 2 * time.Minute })
	h.pool("linux", 5)
	res := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	if _, _, err := h.claimLaunch("a1"); err != nil {
		t.Fatal(err)
	}
	r := h.runnersNamed(res.RunnerName)[0]
	if err := h.client().RemoveRunner(ctx, github.Scope{Owner: owner}, r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Reap(ctx); err != nil || h.job(res.JobID).CancelRequested {
		t.Fatalf("reaped within the bootstrap timeout (%v)", err)
	}
	h.clock.advance(3 * time.Minute)
	if _, err := h.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if !h.job(res.JobID).CancelRequested {
		t.Error("the runner job without a registration was not canceled")
	}
	if rs := h.runnerJobs(); rs[0].GHStatus != "gone" {
		t.Errorf("runner job %+v", rs[0])
	}
}

// A control plane restart at any point loses nothing and duplicates
// nothing: deliveries are remembered, the reconciler and reaper of the new
// process leave the started runner alone, and the job runs on it.
func TestRestartLosesNothing(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	job := h.queue()
	id, res, err := h.deliver(job, "queued")
	if err != nil || res.Outcome != actions.OutcomeRunner {
		t.Fatalf("queued: %+v, %v", res, err)
	}
	h.restart()
	if again, err := h.redeliver(id, h.gh.WorkflowJobPayload(job, "queued")); err != nil || again.Outcome != actions.OutcomeDuplicate {
		t.Fatalf("redelivery after a restart: %+v, %v", again, err)
	}
	if _, err := h.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	_, l, err := h.claimLaunch("a1")
	if err != nil {
		t.Fatal(err)
	}
	h.restart()
	for _, pass := range []func() error{
		func() error { _, err := h.svc.Reconcile(ctx); return err },
		func() error { _, err := h.svc.Reap(ctx); return err },
	} {
		if err := pass(); err != nil {
			t.Fatal(err)
		}
	}
	h.mustDeliver(job, "queued", actions.OutcomeUnchanged)
	if a := h.register(l); a.JobID != job.ID {
		t.Fatalf("the runner took %+v", a)
	}
	running, _ := h.gh.Job(job.ID)
	h.mustDeliver(running, "in_progress", actions.OutcomeRecorded)
	if rs := h.runnerJobs(); len(rs) != 1 || rs[0].JobID != res.JobID || rs[0].State() != "busy" {
		t.Errorf("runner jobs %+v", rs)
	}
	if rs := h.gh.Runners(); len(rs) != 1 || rs[0].Name != res.RunnerName {
		t.Errorf("runners %+v", rs)
	}
	if got := h.counter("kiln_actions_reconciler_repairs_total"); got != 0 {
		t.Errorf("repairs %v", got)
	}
}

// A runner that came online but whose job another runner took stays idle:
// removed past the idle timeout. A busy runner past the maximum lifetime
// is never taken from its job.
func TestReaperIdleAndLifetime(t *testing.T) {
	h := newHarness(t, func(c *actions.Config) {
		c.BootstrapTimeout, c.IdleTimeout, c.MaxLifetime = 2*time.Minute, 5*time.Minute, time.Hour
	})
	h.pool("linux", 5)
	idle := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	_, l, err := h.claimLaunch("a1")
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's runner takes the job first; Kiln's comes online idle.
	other, err := h.client().GenerateJITConfig(ctx, github.Scope{Owner: owner}, "someone-elses", labels, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a := h.register(&actions.Launch{Secrets: map[string]string{actions.JITConfigEnv: other.EncodedJITConfig}}); a.JobID == 0 {
		t.Fatal("the other runner got no job")
	}
	if a := h.register(l); a.JobID != 0 {
		t.Fatalf("Kiln's runner got job %d", a.JobID)
	}
	// A second job, whose runner takes it and keeps it.
	busy := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	_, l2, err := h.claimLaunch("a2")
	if err != nil {
		t.Fatal(err)
	}
	if a := h.register(l2); a.JobID == 0 {
		t.Fatal("the second runner got no job")
	}

	reap := func() {
		t.Helper()
		if _, err := h.svc.Reap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reap() // sees the first runner online and idle
	if s := h.runnerJobs(); s[1].State() != "online" || s[0].State() != "busy" {
		t.Fatalf("states %s, %s", s[1].State(), s[0].State())
	}
	h.clock.advance(4 * time.Minute)
	reap()
	if h.job(idle.JobID).CancelRequested {
		t.Fatal("reaped before the idle timeout")
	}
	h.clock.advance(2 * time.Minute)
	reap()
	if !h.job(idle.JobID).CancelRequested || len(h.runnersNamed(idle.RunnerName)) != 0 {
		t.Errorf("the idle runner was not reaped: %+v", h.gh.Runners())
	}
	h.clock.advance(2 * time.Hour)
	reap()
	if h.job(busy.JobID).CancelRequested || len(h.runnersNamed(busy.RunnerName)) != 1 {
		t.Errorf("the busy runner past its lifetime was taken from its job: %+v", h.gh.Runners())
	}
}

// TestRelaunchLoggedAsReconciler: a job announced by a webhook whose
// runner job ended while GitHub still has it queued gets a new runner job
// from the reconciler, and the log says the reconciler made it (it said
// webhook: the job's own source, who last advanced it).
func TestRelaunchLoggedAsReconciler(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	first := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	j := h.claim("a1")
	if j == nil || j.ID != first.JobID {
		t.Fatalf("claimed %+v, want runner job %d", j, first.JobID)
	}
	if _, err := h.st.FinishJob(ctx, j.ID, j.Attempt, store.StatusFailure, nil, "runner exited before taking its job", 0); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(time.Minute)
	if _, err := h.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	rs := h.runnerJobs()
	if len(rs) != 2 {
		t.Fatalf("runner jobs %+v, want the first and its relaunch", rs)
	}
	recs := h.logs.records(t, "actions: runner job queued")
	if len(recs) != 2 {
		t.Fatalf("runner jobs logged: %v", recs)
	}
	if recs[0]["source"] != store.SourceWebhook || recs[1]["source"] != store.SourceReconciler {
		t.Errorf("sources logged %v then %v, want webhook then reconciler", recs[0]["source"], recs[1]["source"])
	}
}
