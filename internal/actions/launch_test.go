package actions_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
)

// A launch registers one runner named for the job, with the pool's labels
// and group, and hands its JIT configuration over only as a secret.
func TestLaunchGivesJITConfigOnlyAsSecret(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	job := h.queue()
	res := h.mustDeliver(job, "queued", actions.OutcomeRunner)

	j, l, err := h.claimLaunch("a1")
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != res.JobID || l.RunnerName != res.RunnerName || l.GHJobID != job.ID || l.Branch != "main" {
		t.Fatalf("launch of job %d: %+v", j.ID, l)
	}
	jit := l.Secrets[actions.JITConfigEnv]
	if jit == "" || len(l.Secrets) != 1 {
		t.Fatalf("secrets: %v", slices.Collect(func(yield func(string) bool) {
			for k := range l.Secrets {
				yield(k)
			}
		}))
	}
	spec, _ := json.Marshal(h.job(j.ID))
	for where, text := range map[string]string{"env": strings.Join(values(l.Env), " "), "job": string(spec), "runner record": dumpJSON(h.runnerJobs())} {
		if strings.Contains(text, jit) {
			t.Errorf("the JIT configuration is in the %s", where)
		}
	}
	runners := h.runnersNamed(res.RunnerName)
	if len(runners) != 1 {
		t.Fatalf("runners named %s: %+v", res.RunnerName, h.gh.Runners())
	}
	r := runners[0]
	if r.Owner != owner || r.Repo != "" || r.GroupID != github.DefaultRunnerGroupID || !slices.Equal(r.Labels, labels) {
		t.Errorf("runner %+v", r)
	}
	if rj := h.runnerJobs()[0]; rj.RunnerID != r.ID || rj.State() != "starting" {
		t.Errorf("runner job %+v", rj)
	}
	if n := h.gh.Calls(fakegithub.EndpointGenerateJITConfig); n != 1 {
		t.Errorf("JIT calls %d", n)
	}
	if got := h.counter("kiln_actions_jit_calls_total", "result", "ok"); got != 1 {
		t.Errorf("jit ok counted %v", got)
	}
	// The configuration works: the runner takes its job.
	if a := h.register(l); a.JobID != job.ID || a.RunnerName != res.RunnerName {
		t.Errorf("broker assignment %+v", a)
	}
}

// A claim of a runner job whose GitHub job is no longer queued (a webhook
// was lost) starts nothing: no JIT configuration, the attempt canceled.
func TestClaimOfJobNoLongerQueued(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	job := h.queue()
	res := h.mustDeliver(job, "queued", actions.OutcomeRunner)
	h.gh.CancelRun(owner, repo, job.RunID)

	j, l, err := h.claimLaunch("a1")
	if !errors.Is(err, actions.ErrAttemptEnded) || l != nil {
		t.Fatalf("launch: %+v, %v", l, err)
	}
	if n := h.gh.Calls(fakegithub.EndpointGenerateJITConfig); n != 0 {
		t.Errorf("JIT calls %d, want none", n)
	}
	if got := h.job(j.ID); got.Status != store.StatusCanceled || !strings.Contains(got.Error, "no longer queued") {
		t.Errorf("job %s: %q", got.Status, got.Error)
	}
	w, err := h.st.WorkflowJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if w.Status != store.GHCompleted || w.Conclusion != "cancelled" || *w.JobID != res.JobID {
		t.Errorf("workflow job %+v", w)
	}
	if len(h.gh.Runners()) != 0 {
		t.Errorf("runners: %+v", h.gh.Runners())
	}
}

// A registration of the runner's name left behind (an attempt whose answer
// was lost) is removed and the configuration asked for once more.
func TestLaunchReplacesStaleRegistration(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	job := h.queue()
	res := h.mustDeliver(job, "queued", actions.OutcomeRunner)
	stale, err := h.client().GenerateJITConfig(ctx, github.Scope{Owner: owner}, res.RunnerName, labels, 1)
	if err != nil {
		t.Fatal(err)
	}

	_, l, err := h.claimLaunch("a1")
	if err != nil {
		t.Fatal(err)
	}
	rs := h.runnersNamed(res.RunnerName)
	if len(rs) != 1 || rs[0].ID == stale.RunnerID {
		t.Fatalf("runners named %s: %+v (stale %d)", res.RunnerName, rs, stale.RunnerID)
	}
	if n := h.gh.Calls(fakegithub.EndpointGenerateJITConfig); n != 3 { // the test's, the 409, the retry
		t.Errorf("JIT calls %d, want 3", n)
	}
	if got := h.counter("kiln_actions_jit_calls_total", "result", "conflict"); got != 1 {
		t.Errorf("conflicts counted %v", got)
	}
	if a := h.register(l); a.JobID != job.ID {
		t.Errorf("broker assignment %+v", a)
	}
}

// GitHub failing at claim time ends the attempt: a client error (the job
// or the setup is wrong) as a failure, a server error or a rate limit as
// an error retried after a backoff, never at once; and however often a
// launch is retried, the job has one runner.
func TestLaunchGitHubErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(gh *fakegithub.Server, now time.Time)
		retry bool // false: the job fails
		jit   bool // the fault hits generate-jitconfig (else the job check)
		// limited: go-github keeps GitHub's rate limit in memory against
		// the real clock and refuses requests until it resets.
		limited bool
	}{
		{"jit 403", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGenerateJITConfig, 403, 1) }, false, true, false},
		{"jit 404", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGenerateJITConfig, 404, 1) }, false, true, false},
		{"jit 422", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGenerateJITConfig, 422, 1) }, false, true, false},
		{"jit 500", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGenerateJITConfig, 500, 1) }, true, true, false},
		{"jit 502", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGenerateJITConfig, 502, 1) }, true, true, false},
		{"job check 503", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGetJob, 503, 1) }, true, false, false},
		{"job check 404", func(gh *fakegithub.Server, _ time.Time) { gh.FailNext(fakegithub.EndpointGetJob, 404, 1) }, false, false, false},
		{"rate limit", func(gh *fakegithub.Server, now time.Time) { gh.RateLimit(1, now.Add(2*time.Minute)) }, true, false, true},
		{"secondary rate limit", func(gh *fakegithub.Server, _ time.Time) {
			gh.SecondaryRateLimit(1, http.StatusTooManyRequests, time.Minute)
		}, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.pool("linux", 5)
			job := h.queue()
			res := h.mustDeliver(job, "queued", actions.OutcomeRunner)
			tc.fault(h.gh, h.clock.now())

			j, _, err := h.claimLaunch("a1")
			if !errors.Is(err, actions.ErrAttemptEnded) {
				t.Fatalf("launch: %v", err)
			}
			got := h.job(j.ID)
			wantJIT := 0
			if tc.jit {
				wantJIT = 1
			}
			if n := h.gh.Calls(fakegithub.EndpointGenerateJITConfig); n != wantJIT {
				t.Errorf("JIT calls %d, want %d", n, wantJIT)
			}
			if !tc.retry {
				if got.Status != store.StatusFailure || got.Error == "" {
					t.Fatalf("job %s %q, want a failure with the reason", got.Status, got.Error)
				}
				if len(h.gh.Runners()) != 0 {
					t.Errorf("runners %+v", h.gh.Runners())
				}
				return
			}
			if got.Status != store.StatusQueued || got.NotBefore == nil || !got.NotBefore.After(h.clock.now()) {
				t.Fatalf("job %s not before %v (now %v), want queued for later", got.Status, got.NotBefore, h.clock.now())
			}
			// Not hot: nothing to claim until the backoff has passed.
			if again := h.claim("a2"); again != nil {
				t.Fatalf("claimed again at once: %+v", again)
			}
			h.clock.advance(got.NotBefore.Sub(h.clock.now()) + time.Second)
			if tc.limited {
				// Within the real reset, the client refuses without a
				// request: deferred again, GitHub not called.
				calls := h.gh.Calls(fakegithub.EndpointGetJob)
				j, _, err := h.claimLaunch("a2")
				if got := h.job(j.ID); !errors.Is(err, actions.ErrAttemptEnded) || got.Status != store.StatusQueued || got.NotBefore == nil || !got.NotBefore.After(h.clock.now()) {
					t.Fatalf("launch within the reset: %v; job %s not before %v", err, got.Status, got.NotBefore)
				}
				if n := h.gh.Calls(fakegithub.EndpointGetJob); n != calls {
					t.Errorf("GitHub called within the reset (%d calls, was %d)", n, calls)
				}
				// A restarted control plane starts without the client's memory.
				h.restart()
				h.clock.advance(h.job(j.ID).NotBefore.Sub(h.clock.now()) + time.Second)
			}
			if _, l, err := h.claimLaunch("a2"); err != nil || l.RunnerName != res.RunnerName {
				t.Fatalf("retry: %+v, %v", l, err)
			}
			if rs := h.runnersNamed(res.RunnerName); len(rs) != 1 || len(h.gh.Runners()) != 1 {
				t.Errorf("runners %+v", h.gh.Runners())
			}
		})
	}
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func dumpJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// A launch follows every hand-over GitHub made, not just the first: its
// job went to a second runner, whose job went to a third; the third's job
// still waits, so the launch serves it (before, it gave up after two and
// that job never got a runner: the burst test's lost job).
func TestLaunchFollowsAChainOfHandOvers(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	a, b, c := h.queue(), h.queue(), h.queue()
	for _, j := range []fakegithub.Job{a, b, c} {
		h.mustDeliver(j, "queued", actions.OutcomeRunner)
	}
	ja, jb, jc := h.claim("a1"), h.claim("a2"), h.claim("a3")
	if ja == nil || jb == nil || jc == nil {
		t.Fatal("three runner jobs to claim")
	}
	// The runners for b and c start first; GitHub gives them the oldest
	// jobs: a, then b.
	for _, j := range []*store.Job{jb, jc} {
		l, err := h.svc.Launch(ctx, j)
		if err != nil {
			t.Fatal(err)
		}
		h.register(l)
	}
	for _, id := range []int64{a.ID, b.ID} {
		if got, _ := h.gh.Job(id); got.Status != "in_progress" {
			t.Fatalf("job %d: %+v", id, got)
		}
	}
	l, err := h.svc.Launch(ctx, ja)
	if err != nil || l == nil {
		t.Fatalf("the launch of a's runner job: %+v, %v (%s)", l, err, h.job(ja.ID).Error)
	}
	if a := h.register(l); a.JobID != c.ID {
		t.Fatalf("the runner took job %d, want c (%d)", a.JobID, c.ID)
	}
	if got := h.job(ja.ID); got.Status.Terminal() {
		t.Fatalf("runner job %s: %q", got.Status, got.Error)
	}
}
