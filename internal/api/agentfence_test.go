package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// agentToken makes another agent token through the REST API.
func (e *env) agentToken(name string) string {
	e.t.Helper()
	var out struct {
		Secret string `json:"secret"`
	}
	e.api("POST", "/api/v1/tokens", map[string]string{"name": name, "kind": "agent"}).want(e.t, http.StatusCreated, &out)
	return out.Secret
}

// TestAgentWritesFencedByLeaseHolder: a second agent token, which never
// registered or claimed anything, cannot heartbeat, report steps, append
// logs to or finish the attempt the first agent holds: each write is 403
// not_your_lease, counted, and changes nothing. It cannot take the first
// agent's id either (registering it would end its running job). The
// holder's own writes still work.
func TestAgentWritesFencedByLeaseHolder(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	other := e.agentToken("intruder")
	job := fmt.Sprintf("%s/jobs/%d", protocol.Prefix, a.JobID)
	before := e.build(b.ID)
	zero := 0
	forged := protocol.LogBatch{Attempt: a.Attempt, Lines: []logs.Line{{Seq: 1, Time: time.Now(), Text: "forged: all tests passed"}}}

	for _, w := range []struct {
		name string
		path string
		body any
	}{
		{"heartbeat", job + "/heartbeat", protocol.Fence{Attempt: a.Attempt}},
		{"steps", job + "/steps", protocol.StepUpdate{Attempt: a.Attempt, Index: 0, Status: "success", ExitCode: &zero}},
		{"logs", job + "/logs", forged},
		{"finish", job + "/finish", protocol.FinishRequest{Attempt: a.Attempt, Status: "success", ExitCode: &zero}},
	} {
		e.do(other, "POST", w.path, w.body, nil).wantError(t, http.StatusForbidden, protocol.CodeNotYourLease,
			fmt.Sprintf("job %d attempt %d is leased to agent \"a1\"", a.JobID, a.Attempt), "not your lease")
		if got := e.metrics()[sample("kiln_agent_writes_refused_total", "write", w.name)]; got != 1 {
			t.Errorf("kiln_agent_writes_refused_total{write=%q} = %v after one refused write, want 1", w.name, got)
		}
	}
	// The other token may not act as a1 either.
	e.do(other, "POST", protocol.Prefix+"/register", protocol.RegisterRequest{ID: "a1", Capacity: 1}, nil).
		wantError(t, http.StatusForbidden, protocol.CodeAgentTaken, `agent "a1"`)
	e.do(other, "POST", protocol.Prefix+"/claim", protocol.ClaimRequest{AgentID: "a1", Free: 1}, nil).
		wantError(t, http.StatusForbidden, protocol.CodeAgentTaken, `agent "a1"`)

	after := e.build(b.ID)
	if dump(after) != dump(before) {
		t.Errorf("refused writes changed the build:\nbefore %s\nafter %s", dump(before), dump(after))
	}
	for _, l := range e.logs(b.ID) {
		for _, line := range l.Lines {
			if strings.Contains(line.Text, "forged") {
				t.Errorf("a forged log line was stored: %+v", line)
			}
		}
	}

	// The holder's writes still work, to the end.
	e.heartbeat(a.JobID, a.Attempt).want(t, http.StatusOK, nil)
	e.do(e.agent, "POST", job+"/steps", protocol.StepUpdate{Attempt: a.Attempt, Index: 0, Status: "running"}, nil).want(t, http.StatusNoContent, nil)
	e.sendLogs(a.JobID, a.Attempt, 1, 2).want(t, http.StatusNoContent, nil)
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	done := e.build(b.ID)
	if done.Status != store.StatusSuccess || done.Jobs[0].Status != store.StatusSuccess || done.Jobs[0].AgentID != "a1" {
		t.Errorf("build after the holder's writes: %s", dump(done))
	}
	if got := seqs(e.logs(b.ID)[0]); !slices.Equal(got, []int64{1, 2}) || e.logs(b.ID)[0].Lines[0].Text != "line 1" {
		t.Errorf("logs %s", dump(e.logs(b.ID)))
	}
	// Once the attempt is over, the other token's write is stale like any.
	e.do(other, "POST", job+"/finish", protocol.FinishRequest{Attempt: a.Attempt, Status: "failure"}, nil).
		wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)

	// A token that registered its own agent can claim and write its own jobs.
	e.do(other, "POST", protocol.Prefix+"/register", protocol.RegisterRequest{ID: "b1", Capacity: 1}, nil).want(t, http.StatusOK, nil)
	b2 := e.trigger("hello", "main")
	e.waitPlanned(b2.ID)
	var a2 protocol.Assignment
	e.do(other, "POST", protocol.Prefix+"/claim", protocol.ClaimRequest{AgentID: "b1", Labels: []string{"linux"}, Free: 1, WaitSeconds: 30}, nil).want(t, http.StatusOK, &a2)
	// ... and a1's token now cannot write b1's.
	e.finish(a2.JobID, a2.Attempt, store.StatusSuccess).wantError(t, http.StatusForbidden, protocol.CodeNotYourLease)
	e.do(other, "POST", fmt.Sprintf("%s/jobs/%d/finish", protocol.Prefix, a2.JobID), protocol.FinishRequest{Attempt: a2.Attempt, Status: "success", ExitCode: &zero}, nil).
		want(t, http.StatusNoContent, nil)
	if got := e.build(b2.ID); got.Status != store.StatusSuccess || got.Jobs[0].AgentID != "b1" {
		t.Errorf("b1's build %s", dump(got))
	}
}
