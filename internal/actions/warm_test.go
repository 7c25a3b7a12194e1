package actions_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
)

// warmRunners lists the live runner jobs that serve no GitHub job yet.
func (h *harness) warmRunners() []*store.RunnerJob {
	h.t.Helper()
	var out []*store.RunnerJob
	for _, r := range h.runnerJobs() {
		if r.Live() && r.GHJobID == 0 && !r.CancelRequested {
			out = append(out, r)
		}
	}
	return out
}

// runnerJobsFor lists the runner jobs (live or not) serving GitHub job id.
func (h *harness) runnerJobsFor(id int64) []*store.RunnerJob {
	h.t.Helper()
	var out []*store.RunnerJob
	for _, r := range h.runnerJobs() {
		if r.GHJobID == id {
			out = append(out, r)
		}
	}
	return out
}

func (h *harness) warmPass() {
	h.t.Helper()
	if _, err := h.svc.Warm(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// runningCount is the number of the pool's runner jobs running now.
func (h *harness) runningCount() int {
	n := 0
	for _, r := range h.runnerJobs() {
		if r.Status == store.StatusRunning {
			n++
		}
	}
	return n
}

// The life of warm runners: a pool with warm 2 keeps two runners ready; a
// queued job is left to one of them (no runner of its own) and a
// replacement is started; GitHub hands the job to the warm runner and
// in_progress links them; a job no warm runner takes within the grace gets
// exactly one runner of its own; lowering warm cancels the surplus and
// removes its registrations; max_runners is never exceeded.
func TestWarmRunners(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 4, func(p *store.Pool) { p.Warm = 2 })

	h.warmPass()
	warm := h.warmRunners()
	if len(warm) != 2 {
		t.Fatalf("%d warm runner jobs, want 2", len(warm))
	}
	for _, r := range warm {
		if !strings.HasPrefix(r.Name, "kiln-warm-linux-") || !r.Warm || r.Status != store.StatusQueued {
			t.Fatalf("warm runner job %+v", r)
		}
	}
	h.warmPass() // a second pass adds nothing
	if n := len(h.warmRunners()); n != 2 {
		t.Fatalf("%d warm runner jobs after a second pass, want 2", n)
	}

	// Agents claim them: JIT configurations, no GitHub job looked up.
	var launches []*actions.Launch
	for i := range 2 {
		_, l, err := h.claimLaunch(fmt.Sprintf("agent-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if l.Secrets[actions.JITConfigEnv] == "" || l.GHJobID != 0 || !strings.HasPrefix(l.RunnerName, "kiln-warm-linux-") {
			t.Fatalf("warm launch %+v", l)
		}
		launches = append(launches, l)
	}
	if n := h.gh.Calls(fakegithub.EndpointGetJob); n != 0 {
		t.Errorf("%d GitHub job look-ups for warm runners, want 0", n)
	}
	var regs []fakegithub.Assignment
	for _, l := range launches {
		a := h.register(l)
		if a.JobID != 0 {
			t.Fatalf("a warm runner got a job before any was queued: %+v", a)
		}
		regs = append(regs, a)
	}

	// A job is queued: no runner of its own; a replacement warm runner.
	j1 := h.queue()
	res := h.mustDeliver(j1, "queued", actions.OutcomeWarm)
	if res.JobID != 0 || len(h.runnerJobsFor(j1.ID)) != 0 {
		t.Fatalf("a runner job was made for a job a warm runner is expected to take: %+v", res)
	}
	h.mustDeliver(j1, "queued", actions.OutcomeUnchanged)
	if n := len(h.warmRunners()); n != 3 {
		t.Fatalf("%d warm runner jobs, want 3 (one expected to take the job, two idle)", n)
	}

	// GitHub hands it to the first warm runner; in_progress links them.
	var a fakegithub.Assignment
	if err := h.broker("acquire", map[string]any{"runner_id": regs[0].RunnerID}, &a); err != nil {
		t.Fatal(err)
	}
	if a.JobID != j1.ID {
		t.Fatalf("acquire: %+v, want job %d", a, j1.ID)
	}
	cur, _ := h.gh.Job(j1.ID)
	h.mustDeliver(cur, "in_progress", actions.OutcomeRecorded)
	linked := h.runnerJobsFor(j1.ID)
	if len(linked) != 1 || linked[0].Name != regs[0].RunnerName || !linked[0].Warm || linked[0].State() != "busy" {
		t.Fatalf("runner jobs of job %d: %+v, want the warm runner %s, busy", j1.ID, linked, regs[0].RunnerName)
	}
	if w, err := h.st.WorkflowJob(ctx, j1.ID); err != nil || w.JobID == nil || *w.JobID != linked[0].JobID {
		t.Fatalf("workflow job %+v (%v): not linked to the warm runner job %d", w, err, linked[0].JobID)
	}
	if n := len(h.warmRunners()); n != 2 {
		t.Fatalf("%d warm runner jobs after the link, want 2", n)
	}

	// A second job: expected to be taken, but no warm runner asks for it.
	j2 := h.queue()
	h.mustDeliver(j2, "queued", actions.OutcomeWarm)
	h.warmPass()
	if n := len(h.runnerJobsFor(j2.ID)); n != 0 {
		t.Fatalf("%d runner jobs for job %d within the grace, want 0", n, j2.ID)
	}
	h.clock.advance(h.cfg.WarmGrace + time.Second)
	h.warmPass()
	h.warmPass()
	if _, err := h.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h.mustDeliver(j2, "queued", actions.OutcomeUnchanged)
	own := h.runnerJobsFor(j2.ID)
	if len(own) != 1 || own[0].Warm || own[0].Name != store.RunnerName(j2.ID, 1) {
		t.Fatalf("runner jobs of job %d after the grace: %+v, want exactly one of its own", j2.ID, own)
	}

	// Never more than max_runners running: claim all there is.
	for i := range 10 {
		j := h.claim(fmt.Sprintf("more-%d", i))
		if j == nil {
			break
		}
		if _, err := h.svc.Launch(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.runningCount(); n > 4 {
		t.Fatalf("%d runner jobs running, max_runners 4", n)
	}

	// Scale down to 0: the idle warm runners are canceled, and the one
	// registered is removed from GitHub; the busy one keeps its job.
	if err := h.st.SetPoolWarm(ctx, "linux", 0); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.PoolChanged(ctx, "linux"); err != nil {
		t.Fatal(err)
	}
	if n := len(h.warmRunners()); n != 0 {
		t.Fatalf("%d warm runner jobs after warm 0: %+v", n, h.warmRunners())
	}
	if _, ok := h.gh.Runner(regs[1].RunnerID); ok {
		t.Errorf("the idle warm runner %s is still registered", regs[1].RunnerName)
	}
	if r, ok := h.gh.Runner(regs[0].RunnerID); !ok || !r.Busy {
		t.Errorf("the busy warm runner: %+v %v, want registered and busy", r, ok)
	}
	if h.job(linked[0].JobID).CancelRequested {
		t.Error("the busy warm runner's job was canceled")
	}
}

// The idle timeout spares a warm runner its pool wants; the maximum
// lifetime does not, and the reaped one is replaced.
func TestWarmRunnerReaped(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 3, func(p *store.Pool) { p.Warm = 1 })
	h.warmPass()
	j, l, err := h.claimLaunch("agent")
	if err != nil {
		t.Fatal(err)
	}
	h.register(l)
	if _, err := h.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(h.cfg.IdleTimeout + time.Minute)
	if _, err := h.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if h.job(j.ID).CancelRequested {
		t.Fatal("an idle warm runner was reaped by the idle timeout")
	}
	h.clock.advance(h.cfg.MaxLifetime)
	if _, err := h.svc.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if !h.job(j.ID).CancelRequested {
		t.Fatal("a warm runner past the maximum lifetime was not reaped")
	}
	h.warmPass()
	warm := h.warmRunners()
	if len(warm) != 1 || warm[0].JobID == j.ID {
		t.Fatalf("warm runners after the reap: %+v, want one replacement", warm)
	}
}

// warm must fit in max_runners.
func TestWarmValidated(t *testing.T) {
	h := newHarness(t)
	p := &store.Pool{Name: "x", Labels: labels, Image: "i", MaxRunners: 2, Warm: 3, Owner: owner, InstallationID: installation}
	if err := h.svc.PreparePool(p); err == nil || !strings.Contains(err.Error(), "warm:") {
		t.Fatalf("warm 3 of max 2: %v", err)
	}
}
