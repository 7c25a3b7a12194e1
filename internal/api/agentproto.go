package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/cache"
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
	if err := s.store.RegisterAgent(r.Context(), &store.Agent{ID: req.ID, Name: req.Name, Labels: req.Labels, Capacity: req.Capacity, Version: req.Version, Max: maxRes}, tok.ID); err != nil {
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
	resp := protocol.RegisterResponse{LeaseSeconds: leaseSeconds(s.sched.Config().Lease)}
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

func leaseSeconds(d time.Duration) int { return max(1, int(d/time.Second)) }

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
	j, err := s.sched.Claim(r.Context(), req.AgentID, tok.ID, req.Labels, req.Max, wait)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if j == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	a, err := s.assignment(r, j)
	if err == nil && j.Pool != "" {
		err = s.launchRunner(r, j, a)
		if errors.Is(err, actions.ErrAttemptEnded) {
			// No runner was started and the attempt is over (the job is
			// no longer queued on GitHub, or GitHub failed: retried later).
			s.watch.notify(j.BuildID)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	if err != nil {
		// The job is leased but cannot be described: end the attempt so it is retried.
		_, _ = s.store.FinishJob(r.Context(), j.ID, j.Attempt, store.StatusError, nil, "server could not prepare the job: "+err.Error(), s.sched.RetryDelay(j.Attempt))
		s.storeError(w, err)
		return
	}
	s.jobs.Store(j.ID, j.BuildID)
	s.watch.notify(j.BuildID)
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) assignment(r *http.Request, j *store.Job) (*protocol.Assignment, error) {
	b, err := s.store.Build(r.Context(), j.BuildID)
	if err != nil {
		return nil, err
	}
	p, err := s.store.ProjectByID(r.Context(), b.ProjectID)
	if err != nil {
		return nil, err
	}
	var spec pipeline.JobSpec
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return nil, fmt.Errorf("job %d: decode spec: %w", j.ID, err)
	}
	secrets, err := s.store.Secrets(r.Context(), p.ID)
	if err != nil {
		return nil, err
	}
	a := &protocol.Assignment{JobID: j.ID, Attempt: j.Attempt, BuildID: b.ID, BuildNumber: b.Number, Project: p.Name, CloneURL: p.CloneURL,
		Ref: b.Ref, Branch: b.Branch, Commit: b.Commit, Event: b.Event, Spec: spec, LeaseSeconds: leaseSeconds(s.sched.Config().Lease)}
	scope := cache.Scope{Project: p.Name, Branch: b.Branch, DefaultBranch: p.DefaultBranch}
	if pr := b.PullRequest; pr != nil {
		a.PullRequest, a.HeadBranch, a.BaseBranch, a.Untrusted = pr.Number, pr.HeadBranch, pr.BaseBranch, pr.Fork
		// A request's caches are its own (its ref is not a branch name);
		// it reads its base branch's, then the default branch's. A
		// fork's may read but never write.
		scope.Branch, scope.BaseBranch, scope.ReadOnly = b.Ref, pr.BaseBranch, pr.Fork
	}
	if a.Untrusted {
		// A fork's .kiln.yml is whoever opened the request's: it gets
		// none of the project's secrets, approved or not.
		secrets = nil
	}
	if len(spec.Caches) > 0 {
		ttl := time.Duration(spec.TimeoutSeconds)*time.Second + time.Hour
		tok, err := s.caches.IssueToken(scope, ttl)
		if err != nil {
			return nil, fmt.Errorf("cache token: %w", err)
		}
		a.Cache = &protocol.CacheAccess{URL: s.cfg.PublicURL + "/", Token: tok}
	}
	if spec.Artifacts != nil {
		a.ArtifactMaxBytes = s.cfg.ArtifactMaxBytes
	}
	if len(secrets) > 0 {
		a.Secrets = map[string]string{}
		for _, sec := range secrets {
			a.Secrets[sec.Name] = sec.Value
		}
	}
	if j.Pool == "" {
		// The checkout's credentials: the project's forge connection's,
		// for a fork's request too (a read of the base repository's
		// refs/pull/N/head); the agent keeps them out of the sandbox.
		creds, _, err := s.sched.GitCredentials(r.Context(), p)
		if err != nil {
			return nil, fmt.Errorf("the credentials of the project's forge connection: %w", err)
		}
		if creds != nil {
			a.Git = &protocol.GitCredentials{Username: creds.Username, Password: creds.Password}
		}
	}
	return a, nil
}

// launchRunner starts the GitHub runner of a claimed runner job (see
// actions.Service.Launch) and puts what it needs into the assignment.
func (s *Server) launchRunner(r *http.Request, j *store.Job, a *protocol.Assignment) error {
	if s.actions == nil {
		return errors.New("GitHub Actions is not set up on this server")
	}
	l, err := s.actions.Launch(r.Context(), j)
	if err != nil {
		return err
	}
	p, err := s.store.ProjectByName(r.Context(), a.Project)
	if err != nil {
		return err
	}
	return s.runnerAssignment(a, l, p.DefaultBranch)
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

// agentCacheEvent records a job's cache operation in metrics.
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
