package api

import (
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
	var req protocol.RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	if req.ID == "" || req.Capacity <= 0 {
		writeError(w, http.StatusBadRequest, "invalid", "id and a positive capacity are required")
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
	if err := s.store.UpsertAgent(r.Context(), &store.Agent{ID: req.ID, Name: req.Name, Labels: req.Labels, Capacity: req.Capacity, Version: req.Version, Max: maxRes}); err != nil {
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
	_ = s.store.TouchAgent(r.Context(), req.AgentID)
	if err := s.setWarm(r, req.AgentID, req.Warm); err != nil {
		s.storeError(w, err)
		return
	}
	wait := time.Duration(min(max(req.WaitSeconds, 0), protocol.MaxClaimWaitSeconds)) * time.Second
	j, err := s.sched.Claim(r.Context(), req.AgentID, req.Labels, req.Max, wait)
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
		Ref: b.Ref, Branch: b.Branch, Commit: b.Commit, Spec: spec, LeaseSeconds: leaseSeconds(s.sched.Config().Lease)}
	if len(spec.Caches) > 0 {
		ttl := time.Duration(spec.TimeoutSeconds)*time.Second + time.Hour
		tok, err := s.caches.IssueToken(cache.Scope{Project: p.Name, Branch: b.Branch, DefaultBranch: p.DefaultBranch}, ttl)
		if err != nil {
			return nil, fmt.Errorf("cache token: %w", err)
		}
		a.Cache = &protocol.CacheAccess{URL: s.cfg.PublicURL + "/", Token: tok}
	}
	if len(secrets) > 0 {
		a.Secrets = map[string]string{}
		for _, sec := range secrets {
			a.Secrets[sec.Name] = sec.Value
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
	cancel, err := s.store.Heartbeat(r.Context(), id, req.Attempt, s.sched.Config().Lease)
	if err != nil {
		s.storeError(w, err)
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
	if err := s.store.UpdateStep(r.Context(), id, req.Attempt, req.Index, st, req.ExitCode); err != nil {
		s.storeError(w, err)
		return
	}
	s.watch.notify(s.buildOf(r, id))
	w.WriteHeader(http.StatusNoContent)
}

// MaxLogBatchBytes bounds one log batch request.
const MaxLogBatchBytes = 8 << 20

func (s *Server) agentLogs(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req protocol.LogBatch
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxLogBatchBytes)).Decode(&req); err != nil {
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
	if err := s.store.AppendLogs(r.Context(), id, req.Attempt, lines); err != nil {
		s.storeError(w, err)
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
	final, err := s.store.FinishJob(r.Context(), id, req.Attempt, st, req.ExitCode, req.Error, s.sched.RetryDelay(req.Attempt))
	if err != nil {
		s.storeError(w, err)
		return
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
