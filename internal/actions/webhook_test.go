package actions_test

import (
	"errors"
	"strconv"
	"testing"

	"encoding/json"
	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/store"
)

// A queued job gets exactly one runner job, whatever is delivered again;
// the runner job is an ordinary Kiln job of the repository's project.
func TestQueuedJobGetsOneRunnerJob(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	job := h.queue()

	id, res, err := h.deliver(job, "queued")
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != actions.OutcomeRunner || res.Pool != "linux" || res.JobID == 0 || res.RunnerName != "kiln-"+strconv.FormatInt(job.ID, 10) {
		t.Fatalf("first queued: %+v", res)
	}
	// The same delivery again, and another delivery of the same event.
	if again, err := h.redeliver(id, h.gh.WorkflowJobPayload(job, "queued")); err != nil || again.Outcome != actions.OutcomeDuplicate {
		t.Fatalf("redelivery: %+v, %v", again, err)
	}
	h.mustDeliver(job, "queued", actions.OutcomeUnchanged)

	rs := h.runnerJobs()
	if len(rs) != 1 || rs[0].JobID != res.JobID || rs[0].GHJobID != job.ID || rs[0].HTMLURL != job.HTMLURL || rs[0].State() != "queued" {
		t.Fatalf("runner jobs: %+v", rs)
	}
	j := h.job(res.JobID)
	if j.Pool != "linux" || j.Status != store.StatusQueued {
		t.Fatalf("runner job: %+v", j)
	}
	var spec pipeline.JobSpec
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Image != "localhost/kiln/runner:test" || len(spec.Steps) != 1 || spec.Steps[0].Run != actions.DefaultCommand {
		t.Fatalf("spec: %+v", spec)
	}
	b, err := h.st.Build(ctx, res.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.st.ProjectByID(ctx, b.ProjectID)
	if err != nil {
		t.Fatal(err)
	}
	if b.Trigger != store.TriggerGitHubActions || b.Commit != job.HeadSHA || b.Branch != "main" ||
		p.Name != actions.ProjectName(owner, repo) || p.CloneURL != "https://github.com/acme/web.git" {
		t.Fatalf("build %+v of project %+v", b, p)
	}
	// A second job of the repository is a build of the same project.
	res2 := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner)
	b2, err := h.st.Build(ctx, res2.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	if b2.ProjectID != b.ProjectID {
		t.Errorf("second job's project %d, want %d", b2.ProjectID, b.ProjectID)
	}
	if got := h.counter("kiln_actions_unmatched_jobs_total"); got != 0 {
		t.Errorf("unmatched %v", got)
	}
}

// Deliveries out of order: a step back changes nothing, and a job first
// seen in progress or completed never gets a runner job.
func TestReorderedDeliveries(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)

	// completed (cancelled) before queued: recorded, no runner job.
	done := h.queue()
	done.Status, done.Conclusion = "completed", "cancelled"
	if res := h.mustDeliver(done, "completed", actions.OutcomeRecorded); res.JobID != 0 || res.Status != store.GHCompleted {
		t.Fatalf("completed first: %+v", res)
	}
	h.mustDeliver(done, "queued", actions.OutcomeUnchanged)
	h.mustDeliver(done, "in_progress", actions.OutcomeUnchanged)

	// in_progress before queued: the same.
	started := h.queue()
	started.Status, started.RunnerName = "in_progress", "someone-elses-runner"
	h.mustDeliver(started, "in_progress", actions.OutcomeRecorded)
	h.mustDeliver(started, "queued", actions.OutcomeUnchanged)

	if rs := h.runnerJobs(); len(rs) != 0 {
		t.Fatalf("runner jobs: %+v", rs)
	}
	for _, id := range []int64{done.ID, started.ID} {
		w, err := h.st.WorkflowJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if w.JobID != nil || w.Launches != 0 || store.GHStatusRank(w.Status) < store.GHStatusRank(store.GHInProgress) {
			t.Errorf("job %d: %+v", id, w)
		}
	}
}

// A job no pool serves is ignored and counted; so is one of another
// organization. One of an installation no pool is of is refused.
func TestUnmatchedAndUnknownInstallation(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)

	h.mustDeliver(h.queue("self-hosted", "linux", "gpu"), "queued", actions.OutcomeUnmatched)
	h.mustDeliver(h.gh.QueueJob("other-org", repo, labels), "queued", actions.OutcomeUnmatched)
	if got := h.counter("kiln_actions_unmatched_jobs_total"); got != 2 {
		t.Errorf("unmatched jobs counted %v, want 2", got)
	}
	// Labels match case-insensitively, and a subset of the pool's is enough.
	h.mustDeliver(h.queue("Self-Hosted", "KILN"), "queued", actions.OutcomeRunner)

	stranger := h.queue()
	stranger.InstallationID = installation + 1
	if _, res, err := h.deliver(stranger, "queued"); !errors.Is(err, actions.ErrUnknownInstallation) {
		t.Fatalf("unknown installation: %+v, %v", res, err)
	}
	if rs := h.runnerJobs(); len(rs) != 1 {
		t.Fatalf("runner jobs: %+v", rs)
	}
}

// The first in_progress after queued is the queued-to-running latency.
func TestQueuedToRunningLatency(t *testing.T) {
	h := newHarness(t)
	h.pool("linux", 5)
	job := h.queue()
	h.mustDeliver(job, "queued", actions.OutcomeRunner)
	_, l, err := h.claimLaunch("a1")
	if err != nil {
		t.Fatal(err)
	}
	if a := h.register(l); a.JobID != job.ID {
		t.Fatalf("the runner took %+v, want job %d", a, job.ID)
	}
	running, _ := h.gh.Job(job.ID)
	h.mustDeliver(running, "in_progress", actions.OutcomeRecorded)
	h.mustDeliver(running, "in_progress", actions.OutcomeUnchanged)
	if got := h.counter("kiln_actions_queued_to_running_seconds"); got != 1 {
		t.Errorf("latency observations %v, want 1", got)
	}
	if rs := h.runnerJobs(); len(rs) != 1 || rs[0].State() != "busy" {
		t.Errorf("runner jobs: %+v", rs)
	}
}

// Of several pools that serve a job, the repository's wins over the
// organization's; a job of another repository goes to the organization's.
func TestPoolMatching(t *testing.T) {
	h := newHarness(t)
	h.pool("org", 5)
	h.pool("web", 5, func(p *store.Pool) { p.Repo = repo })
	h.pool("org-gpu", 5, func(p *store.Pool) { p.Labels = []string{"self-hosted", "linux", "kiln", "gpu"} })

	if res := h.mustDeliver(h.queue(), "queued", actions.OutcomeRunner); res.Pool != "web" {
		t.Errorf("job of %s/%s went to pool %s, want web", owner, repo, res.Pool)
	}
	if res := h.mustDeliver(h.gh.QueueJob(owner, "api", labels), "queued", actions.OutcomeRunner); res.Pool != "org" {
		t.Errorf("job of %s/api went to pool %s, want org", owner, res.Pool)
	}
	if res := h.mustDeliver(h.gh.QueueJob(owner, "api", []string{"self-hosted", "gpu"}), "queued", actions.OutcomeRunner); res.Pool != "org-gpu" {
		t.Errorf("gpu job went to pool %s, want org-gpu", res.Pool)
	}
}

// A webhook secret without a way to call GitHub is refused at start.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		conn actions.Connection
		ok   bool
	}{
		{"nothing", actions.Connection{}, true},
		{"token", actions.Connection{Token: "ghp_x", WebhookSecret: hookSecret}, true},
		{"secret only", actions.Connection{WebhookSecret: hookSecret}, false},
		{"key without app", actions.Connection{PrivateKeyPEM: []byte("x")}, false},
		{"short secret", actions.Connection{Token: "ghp_x", WebhookSecret: "short"}, false},
	} {
		cfg := actions.DefaultConfig()
		cfg.GitHub = tc.conn
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
