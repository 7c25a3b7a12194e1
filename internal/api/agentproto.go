package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/dispatch"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

func (s *Server) agentRegister(w http.ResponseWriter, r *http.Request) {
	// The header first: a newer agent's registration may have fields this
	// server does not know, and should hear that the server is too old
	// rather than that its body is invalid.
	if r.Header.Get(protocol.Header) != "" && !s.checkProtocol(w, r, "", "") {
		return
	}
	var req protocol.RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	if req.ID == "" || req.Capacity <= 0 {
		writeError(w, http.StatusBadRequest, "invalid", "id and a positive capacity are required")
		return
	}
	if !s.checkProtocol(w, r, req.Protocol, req.ID) {
		return
	}
	if req.Name == "" {
		req.Name = req.ID
	}
	var maxRes string
	if req.Max != (pipeline.Resources{}) {
		b, _ := json.Marshal(req.Max)
		maxRes = string(b)
	}
	tok := agentToken(r)
	if err := s.store.RegisterAgent(r.Context(), &store.Agent{ID: req.ID, Name: req.Name, Labels: req.Labels, Capacity: req.Capacity, Version: req.Version,
		Protocol: cmp.Or(req.Protocol, r.Header.Get(protocol.Header), protocol.Unversioned), Max: maxRes}, tok.ID); err != nil {
		if errors.Is(err, store.ErrAgentTaken) {
			s.log.Warn("agent registration refused: the agent id belongs to another agent token", "agent", req.ID, "token", tok.ID, "token_name", tok.Name)
		}
		s.storeError(w, err)
		return
	}
	// Whatever this agent ran before it (re)started is gone with it: end
	// those attempts now instead of waiting for their leases to expire.
	released, err := s.store.ReleaseAgent(r.Context(), req.ID, s.sched.Config().RetryDelay)
	if err != nil {
		s.storeError(w, err)
		return
	}
	resp := protocol.RegisterResponse{LeaseSeconds: dispatch.LeaseSeconds(s.sched.Config().Lease)}
	resp.HeartbeatSeconds = max(1, resp.LeaseSeconds/3)
	for _, e := range released {
		resp.Released = append(resp.Released, e.JobID)
		s.log.Warn("agent restarted: its running job ended in error", "agent", req.ID, "job", e.JobID, "attempt", e.Attempt)
	}
	if len(released) > 0 {
		s.sched.JobsChanged()
	}
	writeJSON(w, http.StatusOK, resp)
}

// agentProtocol refuses a request whose Kiln-Agent-Protocol header names
// a version this server does not speak (see protocol.Check); no header is
// protocol.Unversioned.
func (s *Server) agentProtocol(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.checkProtocol(w, r, "", "") {
			next(w, r)
		}
	}
}

// checkProtocol checks the agent protocol version of r: body's (the
// registration's field) or else its header's; when both are given they
// must agree. It answers a refusal and returns false, or returns true.
func (s *Server) checkProtocol(w http.ResponseWriter, r *http.Request, body, agentID string) bool {
	header := r.Header.Get(protocol.Header)
	if body != "" && header != "" && body != header {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("protocol %q and the %s header %q differ", body, protocol.Header, header))
		return false
	}
	given := cmp.Or(body, header, protocol.Unversioned)
	v, err := protocol.ParseVersion(given)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return false
	}
	verr := protocol.Check(protocol.Current, v)
	if verr == nil {
		return true
	}
	tok := agentToken(r)
	s.log.Warn("agent refused: it speaks another version of the agent protocol", "code", verr.Code, "agent", agentID, "agent_protocol", v.String(),
		"server_protocol", protocol.Version, "path", r.URL.Path, "token", tok.ID, "token_name", tok.Name)
	status := http.StatusBadRequest
	if verr.Code == protocol.CodeAgentTooOld {
		// The agent is to switch to another protocol: 426, naming it.
		status = http.StatusUpgradeRequired
		w.Header().Set("Upgrade", "kiln-agent/"+protocol.Version)
	}
	writeError(w, status, verr.Code, verr.Error())
	return false
}

func (s *Server) agentClaim(w http.ResponseWriter, r *http.Request) {
	var req protocol.ClaimRequest
	if !decode(w, r, &req) {
		return
	}
	if req.AgentID == "" {
		writeError(w, http.StatusBadRequest, "invalid", "agent_id: required")
		return
	}
	if req.Free <= 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	tok := agentToken(r)
	if err := s.store.CheckAgentToken(r.Context(), req.AgentID, tok.ID); err != nil {
		if errors.Is(err, store.ErrAgentTaken) {
			s.log.Warn("agent claim refused: the agent id belongs to another agent token", "agent", req.AgentID, "token", tok.ID, "token_name", tok.Name)
		}
		s.storeError(w, err)
		return
	}
	_ = s.store.TouchAgent(r.Context(), req.AgentID)
	if err := s.setWarm(r, req.AgentID, req.Warm); err != nil {
		s.storeError(w, err)
		return
	}
	wait := time.Duration(min(max(req.WaitSeconds, 0), protocol.MaxClaimWaitSeconds)) * time.Second
	res, err := s.dispatch.Next(r.Context(), dispatch.Claim{AgentID: req.AgentID, TokenID: tok.ID, Labels: req.Labels, Max: req.Max, Wait: wait})
	if res.Job != nil {
		s.jobs.Store(res.Job.ID, res.Job.BuildID)
		s.watch.notify(res.Job.BuildID)
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	if res.Assignment == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, res.Assignment)
}

// buildOf returns the build a job belongs to, for waking its log streams.
func (s *Server) buildOf(r *http.Request, jobID int64) int64 {
	if v, ok := s.jobs.Load(jobID); ok {
		return v.(int64)
	}
	j, err := s.store.Job(r.Context(), jobID)
	if err != nil {
		return 0
	}
	s.jobs.Store(jobID, j.BuildID)
	return j.BuildID
}

func (s *Server) agentHeartbeat(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req protocol.Fence
	if !decode(w, r, &req) {
		return
	}
	cancel, err := s.agentWrites(r).Heartbeat(r.Context(), id, req.Attempt, s.sched.Config().Lease)
	if err != nil {
		s.jobWriteError(w, r, "heartbeat", id, req.Attempt, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.HeartbeatResponse{Cancel: cancel})
}

func (s *Server) agentStep(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req protocol.StepUpdate
	if !decode(w, r, &req) {
		return
	}
	st := store.Status(req.Status)
	if st != store.StatusRunning && !st.Terminal() {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("status %q: not a step status", req.Status))
		return
	}
	if err := s.agentWrites(r).UpdateStep(r.Context(), id, req.Attempt, req.Index, st, req.ExitCode); err != nil {
		s.jobWriteError(w, r, "steps", id, req.Attempt, err)
		return
	}
	s.watch.notify(s.buildOf(r, id))
	w.WriteHeader(http.StatusNoContent)
}

// MaxLogBatchBytes bounds one log batch request.
const MaxLogBatchBytes = protocol.MaxLogBatchBytes

func (s *Server) agentLogs(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req protocol.LogBatch
	// Strict, as decode is: an agent this server accepts sends no field
	// it does not know (see protocol's package comment).
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxLogBatchBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, fmt.Sprintf("log batch larger than %d bytes", MaxLogBatchBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "invalid log batch: "+err.Error())
		return
	}
	lines := make([]store.LogLine, len(req.Lines))
	for i, l := range req.Lines {
		if l.Seq <= 0 {
			writeError(w, http.StatusBadRequest, "invalid", "log line seq must be positive")
			return
		}
		lines[i] = store.LogLine{Seq: l.Seq, Step: l.Step, Time: l.Time, Text: l.Text}
	}
	if err := s.agentWrites(r).AppendLogs(r.Context(), id, req.Attempt, lines); err != nil {
		s.jobWriteError(w, r, "logs", id, req.Attempt, err)
		return
	}
	s.metrics.LogLinesReceived.Add(float64(len(lines)))
	s.watch.notify(s.buildOf(r, id))
	w.WriteHeader(http.StatusNoContent)
}

// imageDigest is an image's digest as an agent reports it: algorithm,
// colon, hex ("sha256:…").
var imageDigest = regexp.MustCompile(`^[a-z0-9]+:[a-f0-9]{32,128}$`)

func (s *Server) agentFinish(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req protocol.FinishRequest
	if !decode(w, r, &req) {
		return
	}
	st := store.Status(req.Status)
	if !st.Terminal() || st == store.StatusSkipped {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("status %q: not a final job status", req.Status))
		return
	}
	j, err := s.store.Job(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		// Gone (its project was deleted): to the agent, a lost lease.
		err = fmt.Errorf("job %d no longer exists: %w", id, store.ErrStaleAttempt)
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	if req.ImageDigest != "" {
		// Recorded while the attempt still runs, fenced as the finish
		// is: a stale attempt's digest is not recorded, and its finish
		// below is refused.
		if !imageDigest.MatchString(req.ImageDigest) {
			s.log.Warn("finish: an image digest that is not one, not recorded", "job", id, "digest", clipLog(req.ImageDigest, 200))
		} else if _, err := s.agentWrites(r).ImagePulled(r.Context(), id, req.Attempt, req.ImageDigest); err != nil {
			s.storeError(w, err)
			return
		}
	}
	final, err := s.agentWrites(r).FinishJob(r.Context(), id, req.Attempt, st, req.ExitCode, req.Error, s.sched.RetryDelay(req.Attempt))
	if err != nil {
		s.jobWriteError(w, r, "finish", id, req.Attempt, err)
		return
	}
	if st == store.StatusError {
		s.sched.AgentAttemptEnded(r.Context(), j.AgentID)
	}
	if j.StartedAt != nil {
		s.metrics.JobDuration.WithLabelValues(string(st)).Observe(time.Since(*j.StartedAt).Seconds())
	}
	s.metrics.JobsFinished.WithLabelValues(string(st)).Inc()
	if final == store.StatusQueued {
		s.sched.JobsChanged() // retried
	}
	s.watch.notify(j.BuildID)
	w.WriteHeader(http.StatusNoContent)
}

// agentToken is the agent token that authenticated r.
func agentToken(r *http.Request) *store.Token {
	tok, _ := r.Context().Value(ctxKey{}).(*store.Token)
	if tok == nil {
		return &store.Token{}
	}
	return tok
}

// agentWrites are the job writes of r's agent token: fenced by the
// attempt and by the token that claimed it.
func (s *Server) agentWrites(r *http.Request) store.AgentWrites {
	return s.store.AgentWrites(agentToken(r).ID)
}

// jobWriteError answers a refused job write. A write of an attempt that
// another agent token holds is 403, counted and logged: it is either a
// bug or an agent token used to forge another agent's results.
func (s *Server) jobWriteError(w http.ResponseWriter, r *http.Request, write string, jobID int64, attempt int, err error) {
	var nyl *store.NotYourLeaseError
	if errors.As(err, &nyl) {
		tok := agentToken(r)
		s.metrics.ForeignWritesRefused.WithLabelValues(write).Inc()
		s.log.Warn("agent write refused: another agent holds the attempt's lease", "write", write, "job", jobID, "attempt", attempt,
			"holder", nyl.Holder, "token", tok.ID, "token_name", tok.Name)
	}
	s.storeError(w, err)
}

// agentCacheEvent records a job's cache operation in metrics, and its
// restores on the job.
func (s *Server) agentCacheEvent(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var ev protocol.CacheEvent
	if !decode(w, r, &ev) {
		return
	}
	j, err := s.store.Job(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	b, err := s.store.Build(r.Context(), j.BuildID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	s.metrics.CacheOps.WithLabelValues(b.Project, ev.Kind, ev.Op, ev.Result).Inc()
	if ev.Bytes > 0 {
		s.metrics.CacheBytes.WithLabelValues(b.Project, ev.Kind, ev.Op).Add(float64(ev.Bytes))
	}
	// A restore is also recorded on the job, for insights' cache hit
	// rate: every agent that reports cache events (all of protocol 1.0
	// and later) counts, with no new field. Fenced like the attempt's
	// other writes; one its attempt no longer holds records nothing, and
	// is still answered 204 as before (the agent treats the report as
	// best effort).
	if ev.Op == "restore" {
		if _, err := s.agentWrites(r).CacheRestored(r.Context(), id, ev.Attempt, ev.Result == "hit", ev.Bytes); err != nil {
			s.storeError(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// setWarm records the agent's warm projects when they changed since its
// last claim (claims are frequent; the set rarely changes).
func (s *Server) setWarm(r *http.Request, agentID string, warm []string) error {
	slices.Sort(warm)
	key := strings.Join(warm, "\x00")
	if prev, ok := s.warm.Load(agentID); ok && prev.(string) == key {
		return nil
	}
	if err := s.store.SetWarm(r.Context(), agentID, warm); err != nil {
		return err
	}
	s.warm.Store(agentID, key)
	return nil
}
