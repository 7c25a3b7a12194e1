package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// Versions around this server's protocol, whatever it is.
var (
	cur      = protocol.Current
	oneOlder = cur.Oldest()
	tooOld   = func() protocol.ProtoVersion {
		if cur.Minor >= 2 {
			return protocol.ProtoVersion{Major: cur.Major, Minor: cur.Minor - 2}
		}
		return protocol.ProtoVersion{Major: cur.Major - 1, Minor: 9}
	}()
	newerMinor = protocol.ProtoVersion{Major: cur.Major, Minor: cur.Minor + 1}
	newerMajor = protocol.ProtoVersion{Major: cur.Major + 1, Minor: 0}
)

func speaks(v string) http.Header { return http.Header{protocol.Header: {v}} }

// TestAgentProtocolVersionAtRegister: an agent of this server's protocol
// or one minor older registers; an older one is refused with 426 and told
// to upgrade itself; a newer one (minor or major) is told the server must
// be upgraded first, even when its registration has fields this server
// does not know. A version that is not one is refused as invalid.
func TestAgentProtocolVersionAtRegister(t *testing.T) {
	e := newEnv(t)
	reg := func(id string) protocol.RegisterRequest {
		return protocol.RegisterRequest{ID: id, Capacity: 1, Labels: []string{"linux"}}
	}
	path := protocol.Prefix + "/register"
	for _, tc := range []struct {
		name   string
		header http.Header
		body   any
	}{
		{"same version", speaks(protocol.Version), protocol.RegisterRequest{ID: "same", Capacity: 1, Protocol: protocol.Version}},
		{"same version in the header only", speaks(protocol.Version), reg("header-only")},
		{"one minor older", speaks(oneOlder.String()), protocol.RegisterRequest{ID: "older", Capacity: 1, Protocol: oneOlder.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rr protocol.RegisterResponse
			e.sub(t).do(e.agent, "POST", path, tc.body, tc.header).want(t, http.StatusOK, &rr)
			if rr.LeaseSeconds != 30 {
				t.Errorf("register: %+v", rr)
			}
		})
	}

	t.Run("too old", func(t *testing.T) {
		r := e.sub(t).do(e.agent, "POST", path, protocol.RegisterRequest{ID: "too-old", Capacity: 1, Protocol: tooOld.String()}, speaks(tooOld.String()))
		r.wantError(t, http.StatusUpgradeRequired, protocol.CodeAgentTooOld,
			fmt.Sprintf("agent speaks protocol %s; this server needs %s or newer: upgrade the agent to ", tooOld, oneOlder))
		if got, want := r.header.Get("Upgrade"), "kiln-agent/"+protocol.Version; got != want {
			t.Errorf("Upgrade: %q, want %q", got, want)
		}
	})
	for _, v := range []protocol.ProtoVersion{newerMinor, newerMajor} {
		t.Run("newer "+v.String(), func(t *testing.T) {
			msg := fmt.Sprintf("agent speaks protocol %s; this server (kiln dev) speaks %s: upgrade the servers first, then the agents", v, protocol.Version)
			e := e.sub(t)
			// A newer agent's registration may carry fields this server
			// has never heard of: the answer is still about versions.
			body := map[string]any{"id": "newer", "capacity": 1, "protocol": v.String(), "gpus": 2}
			e.do(e.agent, "POST", path, body, speaks(v.String())).wantError(t, http.StatusBadRequest, protocol.CodeServerTooOld, msg)
			// The version in the body only.
			e.do(e.agent, "POST", path, protocol.RegisterRequest{ID: "newer", Capacity: 1, Protocol: v.String()}, noVersion).
				wantError(t, http.StatusBadRequest, protocol.CodeServerTooOld, msg)
		})
	}
	t.Run("a version that is not one", func(t *testing.T) {
		e.sub(t).do(e.agent, "POST", path, protocol.RegisterRequest{ID: "x", Capacity: 1, Protocol: "v2"}, noVersion).
			wantError(t, http.StatusBadRequest, "invalid", `agent protocol version "v2": want major.minor`)
	})
	for _, tc := range []struct {
		name   string
		header http.Header
		body   any
		msg    string
	}{
		{"a header that is not a version", speaks("latest"), reg("x"), `agent protocol version "latest": want major.minor`},
		{"a header and a body that differ", speaks(protocol.Version), protocol.RegisterRequest{ID: "x", Capacity: 1, Protocol: oneOlder.String()}, "differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.sub(t).do(e.agent, "POST", path, tc.body, tc.header).wantError(t, http.StatusBadRequest, "invalid", tc.msg)
		})
	}

	// An agent that says nothing speaks the protocol as it was before it
	// had versions: accepted while this server accepts that version.
	r := e.do(e.agent, "POST", path, reg("unversioned"), noVersion)
	unversioned, _ := protocol.ParseVersion(protocol.Unversioned)
	if verr := protocol.Check(cur, unversioned); verr == nil {
		r.want(t, http.StatusOK, nil)
	} else {
		r.wantError(t, http.StatusUpgradeRequired, protocol.CodeAgentTooOld)
	}

	var agents []api.AgentView
	e.api("GET", "/api/v1/agents", nil).want(t, http.StatusOK, &agents)
	var ids []string
	speaks := map[string]string{}
	for _, a := range agents {
		ids = append(ids, a.ID)
		speaks[a.ID] = a.Protocol
	}
	// Each shows the version it registered with, as `kiln agents` does.
	for id, v := range map[string]string{"same": protocol.Version, "header-only": protocol.Version, "older": oneOlder.String()} {
		if speaks[id] != v {
			t.Errorf("agent %s: protocol %q, want %q", id, speaks[id], v)
		}
	}
	slices.Sort(ids)
	want := []string{"header-only", "older", "same"}
	if protocol.Check(cur, unversioned) == nil {
		want = []string{"header-only", "older", "same", "unversioned"}
	}
	if !slices.Equal(ids, want) {
		t.Errorf("agents %v, want %v (the refused ones not registered)", ids, want)
	}
}

// TestAgentProtocolVersionOnJobWrites: every agent request carries the
// version, and a claim or a job write of a version this server does not
// speak is refused as the registration is, changing nothing; the job
// goes on through writes of an accepted version.
func TestAgentProtocolVersionOnJobWrites(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	e.register("a1")
	b := e.trigger("hello", "main")
	e.waitPlanned(b.ID)
	for _, v := range []protocol.ProtoVersion{tooOld, newerMinor} {
		e.do(e.agent, "POST", protocol.Prefix+"/claim", protocol.ClaimRequest{AgentID: "a1", Labels: []string{"linux"}, Free: 1}, speaks(v.String())).
			wantError(t, map[bool]int{true: http.StatusUpgradeRequired, false: http.StatusBadRequest}[v == tooOld],
				map[bool]string{true: protocol.CodeAgentTooOld, false: protocol.CodeServerTooOld}[v == tooOld])
	}
	if got := e.build(b.ID); got.Jobs[0].Status != store.StatusQueued {
		t.Fatalf("a refused claim claimed: %s", dump(got.Jobs[0]))
	}
	a := e.mustClaim("a1")
	jobs := fmt.Sprintf("%s/jobs/%d/", protocol.Prefix, a.JobID)
	code := 0
	writes := []struct {
		what string
		body any
	}{
		{"heartbeat", protocol.Fence{Attempt: a.Attempt}},
		{"steps", protocol.StepUpdate{Attempt: a.Attempt, Index: 0, Status: "running"}},
		{"logs", protocol.LogBatch{Attempt: a.Attempt}},
		{"finish", protocol.FinishRequest{Attempt: a.Attempt, Status: "success", ExitCode: &code}},
		{"caches", protocol.CacheEvent{Attempt: a.Attempt, Kind: "keyed", Op: "restore", Result: "miss"}},
	}
	for _, w := range writes {
		t.Run(w.what, func(t *testing.T) {
			e := e.sub(t)
			e.do(e.agent, "POST", jobs+w.what, w.body, speaks(tooOld.String())).wantError(t, http.StatusUpgradeRequired, protocol.CodeAgentTooOld, "upgrade the agent")
			e.do(e.agent, "POST", jobs+w.what, w.body, speaks(newerMinor.String())).wantError(t, http.StatusBadRequest, protocol.CodeServerTooOld, "upgrade the servers first")
			e.do(e.agent, "POST", jobs+w.what, w.body, speaks("1")).wantError(t, http.StatusBadRequest, "invalid", "want major.minor")
		})
	}
	if got := e.build(b.ID); got.Status != store.StatusRunning || got.Jobs[0].Steps[0].Status == store.StatusRunning {
		t.Fatalf("refused writes changed the build: %s", dump(got))
	}
	// Accepted versions, the one before this server's included.
	e.do(e.agent, "POST", jobs+"heartbeat", protocol.Fence{Attempt: a.Attempt}, speaks(oneOlder.String())).want(t, http.StatusOK, nil)
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	if got := e.build(b.ID); got.Status != store.StatusSuccess {
		t.Fatalf("build after finish: %s", dump(got))
	}
}

// TestAgentMessagesAreStrict: the server refuses a field it does not know
// in any agent message, the log batch too. An agent it accepts speaks no
// newer protocol than its own, so such a field is a bug, not a feature
// to drop silently.
func TestAgentMessagesAreStrict(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	e.register("a1")
	b := e.trigger("hello", "main")
	e.waitPlanned(b.ID)
	a := e.mustClaim("a1")
	jobs := fmt.Sprintf("%s/jobs/%d/", protocol.Prefix, a.JobID)
	for _, tc := range []struct {
		what, field string
		body        map[string]any
	}{
		{"claim", "gpus", map[string]any{"agent_id": "a1", "free": 1, "gpus": 1}},
		{"heartbeat", "progress", map[string]any{"attempt": a.Attempt, "progress": 0.5}},
		{"steps", "pid", map[string]any{"attempt": a.Attempt, "index": 0, "status": "running", "pid": 7}},
		{"logs", "compressed", map[string]any{"attempt": a.Attempt, "lines": []any{}, "compressed": true}},
		{"logs line", "color", map[string]any{"attempt": a.Attempt, "lines": []any{map[string]any{"seq": 1, "step": 0, "text": "x", "color": "red"}}}},
		{"finish", "duration", map[string]any{"attempt": a.Attempt, "status": "success", "duration": 3}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			p := jobs + tc.what
			switch tc.what {
			case "claim":
				p = protocol.Prefix + "/claim"
			case "logs line":
				p = jobs + "logs"
			}
			e.sub(t).agentAPI(p[len(protocol.Prefix):], tc.body).wantError(t, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown field %q", tc.field))
		})
	}
	if got := e.build(b.ID); got.Status != store.StatusRunning || got.Jobs[0].Steps[0].Status == store.StatusRunning {
		t.Fatalf("refused writes changed the build: %s", dump(got))
	}
	if l := e.logs(b.ID); len(l) > 0 && len(l[0].Lines) > 0 {
		t.Errorf("refused log lines stored: %s", dump(l))
	}
}
