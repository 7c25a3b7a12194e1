package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// TestAgentRegister: registration answers the lease and heartbeat periods
// and lists the agent; an incomplete registration is refused.
func TestAgentRegister(t *testing.T) {
	e := newEnv(t)
	rr := e.register("host-1")
	if rr.LeaseSeconds != 30 || rr.HeartbeatSeconds != 10 || len(rr.Released) != 0 {
		t.Errorf("register: %+v, want lease 30s, heartbeat 10s", rr)
	}
	var agents []store.Agent
	e.api("GET", "/api/v1/agents", nil).want(t, http.StatusOK, &agents)
	if len(agents) != 1 || agents[0].ID != "host-1" || agents[0].Name != "host-1" || agents[0].Capacity != 1 || !slices.Equal(agents[0].Labels, []string{"linux"}) {
		t.Errorf("agents %s", dump(agents))
	}

	e.refuse(e.agent, []refusal{
		{"register without id", "POST", protocol.Prefix + "/register", protocol.RegisterRequest{Capacity: 1}, 400, "invalid", "id and a positive capacity are required"},
		{"register without capacity", "POST", protocol.Prefix + "/register", protocol.RegisterRequest{ID: "x"}, 400, "invalid", "id and a positive capacity are required"},
		{"register with an unknown field", "POST", protocol.Prefix + "/register", map[string]any{"id": "x", "capacity": 1, "cpus": 4}, 400, "bad_request", `unknown field "cpus"`},
		{"claim without agent id", "POST", protocol.Prefix + "/claim", protocol.ClaimRequest{Free: 1}, 400, "invalid", "agent_id: required"},
		{"claim that is not JSON", "POST", protocol.Prefix + "/claim", []byte(`agent_id=x`), 400, "bad_request", "invalid JSON body"},
	}, nil)
	e.api("GET", "/api/v1/agents", nil).want(t, http.StatusOK, &agents)
	if len(agents) != 1 {
		t.Errorf("agents after refused registrations: %s", dump(agents))
	}
}

// TestAgentClaim: a claim with nothing queued is 204; a claim of a queued
// job is its assignment: the spec, the commit, the project's clone URL and
// its secrets, and the job is now running on that agent.
func TestAgentClaim(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	e.api("PUT", "/api/v1/projects/hello/secrets/DEPLOY_KEY", map[string]string{"value": "hunter2-deploy"}).want(t, http.StatusNoContent, nil)
	e.register("a1")

	if a := e.claim("a1", 0); a != nil {
		t.Fatalf("claimed %s with nothing queued", dump(a))
	}
	b := e.trigger("hello", "main")
	e.waitPlanned(b.ID)
	// No free capacity: nothing is claimed, whatever is queued.
	r := e.agentAPI("/claim", protocol.ClaimRequest{AgentID: "a1", Free: 0, WaitSeconds: 0})
	r.want(t, http.StatusNoContent, nil)
	// A job without runs-on goes to any agent.
	a := e.claim("a1", 0)
	if a == nil {
		t.Fatal("nothing to claim")
	}
	if a.Attempt != 1 || a.BuildID != b.ID || a.BuildNumber != 1 || a.Project != "hello" || a.CloneURL != dir ||
		a.Ref != "refs/heads/main" || a.Branch != "main" || a.Commit != head || a.LeaseSeconds != 30 {
		t.Errorf("assignment %s", dump(a))
	}
	if a.Spec.Name != "test" || a.Spec.Image != "localhost/kiln/busybox:latest" || len(a.Spec.Steps) != 2 ||
		a.Spec.Steps[0].Run != "echo hello" || a.Spec.Steps[1].Name != "bye" {
		t.Errorf("spec %s", dump(a.Spec))
	}
	if len(a.Secrets) != 1 || a.Secrets["DEPLOY_KEY"] != "hunter2-deploy" {
		t.Errorf("secrets %v", a.Secrets)
	}

	got := e.build(b.ID)
	j := got.Jobs[0]
	if got.Status != store.StatusRunning || got.StartedAt == nil || j.ID != a.JobID || j.Status != store.StatusRunning || j.Attempt != 1 || j.AgentID != "a1" ||
		j.LeaseExpires == nil || len(j.Steps) != 2 || j.Steps[0].Status != store.StatusQueued || j.Steps[1].Name != "bye" {
		t.Errorf("build after claim %s", dump(got))
	}
	if a := e.claim("a2", 0); a != nil {
		t.Errorf("a second agent claimed %s", dump(a))
	}
}

// TestAgentConcurrentClaims: agents that claim at once never share a job.
func TestAgentConcurrentClaims(t *testing.T) {
	e := newEnv(t)
	e.waitPlanned(e.helloBuild().ID)
	answers := e.sendAll(6, func(i int) (string, string, string, any, http.Header) {
		return e.agent, "POST", protocol.Prefix + "/claim", protocol.ClaimRequest{AgentID: fmt.Sprintf("a%d", i), Free: 1}, nil
	})
	claimed := 0
	for _, r := range answers {
		switch r.code {
		case http.StatusOK:
			claimed++
		case http.StatusNoContent:
		default:
			t.Fatalf("claim: HTTP %d: %s", r.code, r.body)
		}
	}
	if claimed != 1 {
		t.Errorf("%d agents claimed the one job", claimed)
	}
}

// TestAgentLabels: a job that runs on labels goes only to an agent that
// carries all of them.
func TestAgentLabels(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	commitFile(t, dir, ".kiln.yml", "image: localhost/kiln/busybox:latest\nruns-on: [linux, gpu]\nsteps:\n  - nvidia-smi\n")
	e.project("hello", dir, nil)
	e.waitPlanned(e.trigger("hello", "main").ID)
	if a := e.claim("a1", 0); a != nil {
		t.Fatalf("an agent without gpu claimed %s", dump(a))
	}
	r := e.agentAPI("/claim", protocol.ClaimRequest{AgentID: "a2", Labels: []string{"gpu", "linux", "amd64"}, Free: 1})
	var a protocol.Assignment
	r.want(t, http.StatusOK, &a)
	if a.Spec.Name != "build" || !slices.Equal(a.Spec.RunsOn, []string{"linux", "gpu"}) {
		t.Errorf("assignment %s", dump(a))
	}
}

// TestAgentJobLifecycle plays an agent through a job: heartbeats, step
// updates, log batches (a batch sent twice is stored once; a gap stays
// visible), the finish, and then the refusal of every write of the finished
// attempt.
func TestAgentJobLifecycle(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	job := fmt.Sprintf("%s/jobs/%d", protocol.Prefix, a.JobID)

	var hb protocol.HeartbeatResponse
	e.heartbeat(a.JobID, a.Attempt).want(t, http.StatusOK, &hb)
	if hb.Cancel {
		t.Error("heartbeat says cancel")
	}
	e.do(e.agent, "POST", job+"/steps", protocol.StepUpdate{Attempt: 1, Index: 0, Status: "running"}, nil).want(t, http.StatusNoContent, nil)

	e.sendLogs(a.JobID, a.Attempt, 1, 2, 3).want(t, http.StatusNoContent, nil)
	e.sendLogs(a.JobID, a.Attempt, 1, 2, 3).want(t, http.StatusNoContent, nil) // a retried batch
	l := e.logs(b.ID)
	if len(l) != 1 || l[0].JobID != a.JobID || l[0].Attempt != 1 || !slices.Equal(seqs(l[0]), []int64{1, 2, 3}) || l[0].Lines[2].Text != "line 3" {
		t.Fatalf("logs after a batch sent twice: %s", dump(l))
	}
	e.sendLogs(a.JobID, a.Attempt, 5).want(t, http.StatusNoContent, nil) // seq 4 was lost
	if got := seqs(e.logs(b.ID)[0]); !slices.Equal(got, []int64{1, 2, 3, 5}) {
		t.Errorf("seqs %v, want the gap visible as 1 2 3 5", got)
	}

	zero := 0
	e.do(e.agent, "POST", job+"/steps", protocol.StepUpdate{Attempt: 1, Index: 0, Status: "success", ExitCode: &zero}, nil).want(t, http.StatusNoContent, nil)
	e.do(e.agent, "POST", job+"/steps", protocol.StepUpdate{Attempt: 1, Index: 1, Status: "running"}, nil).want(t, http.StatusNoContent, nil)
	running := e.build(b.ID)
	if st := running.Jobs[0].Steps; st[0].Status != store.StatusSuccess || *st[0].ExitCode != 0 || st[1].Status != store.StatusRunning {
		t.Errorf("steps %s", dump(st))
	}

	// Writes that are not valid are refused and change nothing.
	e.refuse(e.agent, []refusal{
		{"log line seq 0", "POST", job + "/logs", []byte(`{"attempt": 1, "lines": [{"seq": 0, "text": "x"}]}`), 400, "invalid", "log line seq must be positive"},
		{"log batch not JSON", "POST", job + "/logs", []byte(`{"attempt": 1, "lines": [`), 400, "bad_request", "invalid log batch"},
		{"step status", "POST", job + "/steps", protocol.StepUpdate{Attempt: 1, Index: 1, Status: "queued"}, 400, "invalid", `status "queued": not a step status`},
		{"finish status", "POST", job + "/finish", protocol.FinishRequest{Attempt: 1, Status: "running"}, 400, "invalid", `status "running": not a final job status`},
		{"finish skipped", "POST", job + "/finish", protocol.FinishRequest{Attempt: 1, Status: "skipped"}, 400, "invalid", `status "skipped": not a final job status`},
		{"finish unknown field", "POST", job + "/finish", map[string]any{"attempt": 1, "status": "success", "output": "x"}, 400, "bad_request", `unknown field "output"`},
		{"heartbeat of another attempt", "POST", job + "/heartbeat", protocol.Fence{Attempt: 2}, 409, protocol.CodeStaleAttempt, "attempt 2 (current attempt 1, running)"},
		{"logs of attempt 0", "POST", job + "/logs", protocol.LogBatch{Attempt: 0}, 409, protocol.CodeStaleAttempt, "stale attempt"},
		{"heartbeat of an unknown job", "POST", protocol.Prefix + "/jobs/999/heartbeat", protocol.Fence{Attempt: 1}, 409, "stale_attempt", "job 999 no longer exists"},
		{"finish of an unknown job", "POST", protocol.Prefix + "/jobs/999/finish", protocol.FinishRequest{Attempt: 1, Status: "success"}, 409, "stale_attempt", "job 999 no longer exists"},
		{"job id not a number", "POST", protocol.Prefix + "/jobs/x/logs", protocol.LogBatch{Attempt: 1}, 400, "bad_request", `invalid id "x"`},
	}, nil)
	if got := e.build(b.ID); dump(got.Jobs[0].Steps) != dump(running.Jobs[0].Steps) || got.Status != store.StatusRunning || got.Jobs[0].Status != store.StatusRunning {
		t.Errorf("refused writes changed the build: %s", dump(got))
	}

	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	done := e.build(b.ID)
	j := done.Jobs[0]
	if done.Status != store.StatusSuccess || done.FinishedAt == nil || j.Status != store.StatusSuccess || j.ExitCode == nil || *j.ExitCode != 0 ||
		j.Steps[0].Status != store.StatusSuccess || j.Steps[1].Status != store.StatusSkipped {
		t.Errorf("finished build %s", dump(done))
	}

	// The attempt is over: every write of it is stale, and changes nothing.
	for _, w := range []struct {
		path string
		body any
	}{
		{job + "/heartbeat", protocol.Fence{Attempt: 1}},
		{job + "/logs", protocol.LogBatch{Attempt: 1, Lines: nil}},
		{job + "/steps", protocol.StepUpdate{Attempt: 1, Index: 1, Status: "failure"}},
		{job + "/finish", protocol.FinishRequest{Attempt: 1, Status: "failure"}},
	} {
		e.do(e.agent, "POST", w.path, w.body, nil).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt, "stale attempt", "success")
	}
	e.sendLogs(a.JobID, 1, 6).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)
	if got := e.build(b.ID); dump(got) != dump(done) {
		t.Errorf("stale writes changed the build: %s", dump(got))
	}
	if got := seqs(e.logs(b.ID)[0]); !slices.Equal(got, []int64{1, 2, 3, 5}) {
		t.Errorf("seqs after stale writes %v", got)
	}
}

// TestAgentCancel: a build canceled while its job runs tells the agent at
// its next heartbeat; the agent's report of the canceled job ends the build.
func TestAgentCancel(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()

	var hb protocol.HeartbeatResponse
	e.heartbeat(a.JobID, a.Attempt).want(t, http.StatusOK, &hb)
	if hb.Cancel {
		t.Fatal("heartbeat says cancel before the cancel")
	}
	var c store.Build
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b.ID), nil).want(t, http.StatusAccepted, &c)
	if c.Status != store.StatusRunning || !c.CancelRequested || !c.Jobs[0].CancelRequested {
		t.Errorf("build canceled while running: %s", dump(c))
	}
	e.heartbeat(a.JobID, a.Attempt).want(t, http.StatusOK, &hb)
	if !hb.Cancel {
		t.Fatal("heartbeat after the cancel does not say cancel")
	}
	// An agent that reports an error for a canceled job has it counted as canceled, not retried.
	e.agentAPI(fmt.Sprintf("/jobs/%d/finish", a.JobID), protocol.FinishRequest{Attempt: 1, Status: "error", Error: "sandbox killed"}).want(t, http.StatusNoContent, nil)
	done := e.build(b.ID)
	if done.Status != store.StatusCanceled || done.Jobs[0].Status != store.StatusCanceled || done.Jobs[0].Attempt != 1 {
		t.Errorf("build %s", dump(done))
	}
	if a := e.claim("a1", 0); a != nil {
		t.Errorf("claimed %s after the cancel", dump(a))
	}
}

// TestLeaseExpiry: an agent that stops heartbeating loses its lease; the
// attempt ends in error and the job is queued again; the old attempt's
// writes are refused; the next claim is attempt 2. After the last attempt
// the job and the build end in error.
func TestLeaseExpiry(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Scheduler.Lease = time.Second; c.Scheduler.MaxAttempts = 3 })
	b := e.helloBuild()
	if rr := e.register("a1"); rr.LeaseSeconds != 1 || rr.HeartbeatSeconds != 1 {
		t.Errorf("register %+v", rr)
	}

	a := e.mustClaim("a1")
	for attempt := 1; attempt <= 3; attempt++ {
		if a.Attempt != attempt {
			t.Fatalf("claim got attempt %d, want %d", a.Attempt, attempt)
		}
		// Play dead: no heartbeat, until the reaper has ended the attempt.
		lost := e.waitBuild(b.ID, fmt.Sprintf("attempt %d lost", attempt), func(b *store.Build) bool {
			return b.Jobs[0].Status != store.StatusRunning
		})
		j := lost.Jobs[0]
		if attempt < 3 {
			want := fmt.Sprintf("attempt %d: agent lost: lease expired (retrying)", attempt)
			if j.Status != store.StatusQueued || j.Attempt != attempt || j.Error != want || j.AgentID != "" || lost.Status != store.StatusRunning {
				t.Fatalf("after the lease of attempt %d expired: %s", attempt, dump(lost))
			}
		} else if j.Status != store.StatusError || j.Error != "agent lost: lease expired" || lost.Status != store.StatusError || lost.FinishedAt == nil {
			t.Fatalf("after the last attempt: %s", dump(lost))
		}
		e.heartbeat(a.JobID, attempt).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt, fmt.Sprintf("attempt %d", attempt))
		e.sendLogs(a.JobID, attempt, 1).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)
		e.finish(a.JobID, attempt, store.StatusSuccess).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)
		if attempt < 3 {
			next := e.mustClaim("a1")
			if next.JobID != a.JobID {
				t.Fatalf("claimed job %d, want job %d again", next.JobID, a.JobID)
			}
			a = next
		}
	}
	if a := e.claim("a1", 0); a != nil {
		t.Errorf("claimed %s after the last attempt", dump(a))
	}
	if got := e.build(b.ID); got.Status != store.StatusError {
		t.Errorf("stale writes changed the build: %s", dump(got))
	}
}

// TestAgentReRegister: an agent that registers again (it restarted) has the
// job it ran ended in error and queued again at once, without waiting for
// the lease; its old attempt can no longer write.
func TestAgentReRegister(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	e.register("a2") // another agent's registration releases nothing of a1's

	if got := e.build(b.ID).Jobs[0]; got.Status != store.StatusRunning {
		t.Fatalf("job after another agent registered: %s", dump(got))
	}
	rr := e.register("a1")
	if !slices.Equal(rr.Released, []int64{a.JobID}) {
		t.Errorf("released %v, want [%d]", rr.Released, a.JobID)
	}
	got := e.build(b.ID)
	if j := got.Jobs[0]; j.Status != store.StatusQueued || j.Attempt != 1 || !strings.Contains(j.Error, "attempt 1: agent restarted while the job ran (retrying)") {
		t.Errorf("job after its agent restarted: %s", dump(got))
	}
	e.heartbeat(a.JobID, 1).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)
	// Its attempt ended in error on a1, so it goes to the other live agent first.
	if c := e.claim("a1", 0); c != nil {
		t.Errorf("a1 claimed %s while a2 is live", dump(c))
	}
	next := e.mustClaim("a2")
	if next.JobID != a.JobID || next.Attempt != 2 {
		t.Errorf("claim after restart: job %d attempt %d, want job %d attempt 2", next.JobID, next.Attempt, a.JobID)
	}
}
