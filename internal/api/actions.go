package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/store"
)

// ActionsHookPath receives GitHub's workflow_job webhooks (of an App, an
// organization or a repository) for Kiln's runner pools.
const ActionsHookPath = "/hooks/github-actions"

// actionsHook handles POST /hooks/github-actions. Checks, in order: GitHub
// Actions configured (404), body within the limit (413), signature with
// the connection's webhook secret (401), payload (400), installation of
// some pool (403). A ping is 200; a job no pool serves 202 (counted); a
// queued job that got a runner job 201; any other workflow_job 200.
func (s *Server) actionsHook(w http.ResponseWriter, r *http.Request) {
	action, result := "none", "error"
	defer func() { s.metrics.ActionsWebhooks.WithLabelValues(action, result).Inc() }()
	if s.actions == nil || s.actions.WebhookSecret() == "" {
		result = "not_configured"
		writeError(w, http.StatusNotFound, "not_configured", "GitHub Actions webhooks are not configured: start kiln with -github-webhook-secret (and -github-app-id or -github-token)")
		return
	}
	ev, ref := s.readHook(w, r, "github", s.actions.WebhookSecret())
	if ref != nil {
		result = ref.reason
		s.refuseHook(w, r, hookFrom{"github", "(github-actions)"}, ref)
		return
	}
	resp := map[string]any{"delivery": ev.DeliveryID}
	switch ev.Kind {
	case forge.KindPing:
		action, result = "ping", "ping"
		resp["result"], resp["message"] = "ping", "pong"
		writeJSON(w, http.StatusOK, resp)
		return
	case forge.KindWorkflowJob:
	default:
		action, result = "other", "ignored"
		resp["result"] = "ignored: event " + ev.Name
		writeJSON(w, http.StatusAccepted, resp)
		return
	}
	wj := ev.WorkflowJob
	switch wj.Action {
	case "queued", "waiting", "in_progress", "completed":
		action = wj.Action
	default:
		action = "other"
	}
	res, err := s.actions.HandleWorkflowJob(r.Context(), ev.DeliveryID, wj)
	if errors.Is(err, actions.ErrUnknownInstallation) {
		result = "unknown_installation"
		writeError(w, http.StatusForbidden, "unknown_installation", err.Error())
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	result = string(res.Outcome)
	resp["result"], resp["github_job_id"], resp["status"] = res.Outcome, wj.ID, res.Status
	if res.Pool != "" {
		resp["pool"] = res.Pool
	}
	if res.JobID != 0 {
		resp["build_id"], resp["job_id"], resp["runner_name"] = res.BuildID, res.JobID, res.RunnerName
	}
	switch res.Outcome {
	case actions.OutcomeRunner:
		writeJSON(w, http.StatusCreated, resp)
	case actions.OutcomeUnmatched:
		resp["message"] = "no pool serves these runs-on labels: ignored"
		writeJSON(w, http.StatusAccepted, resp)
	default:
		if res.Outcome == actions.OutcomeWarm {
			resp["message"] = "an idle warm runner of the pool is expected to take the job"
		}
		if res.Outcome == actions.OutcomeDuplicate {
			resp["duplicate"] = true
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// --- pools ---

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) {
	ps, err := s.store.ListPools(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]PoolView, 0, len(ps))
	for _, p := range ps {
		out = append(out, poolView(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// createPool takes a PoolView as JSON (created_at ignored); defaults are
// filled and every invalid field named in one 400.
func (s *Server) createPool(w http.ResponseWriter, r *http.Request) {
	var req PoolView
	if !decode(w, r, &req) {
		return
	}
	p := req.pool()
	if err := s.actions.PreparePool(&p); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if msg, err := s.poolOverLimits(r, &p); err != nil || msg != "" {
		if err != nil {
			s.storeError(w, err)
			return
		}
		writeError(w, http.StatusBadRequest, "invalid", msg)
		return
	}
	if err := s.store.CreatePool(r.Context(), &p); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "pool.create", "pool:"+p.Name, p)
	if p.Warm > 0 {
		// Start its warm runners now (the Warm pass would, later).
		if err := s.actions.PoolChanged(r.Context(), p.Name); err != nil {
			s.log.Warn("actions: start warm runners: the next pass retries", "pool", p.Name, "err", err)
		}
	}
	writeJSON(w, http.StatusCreated, poolView(&p))
}

// poolOverLimits applies the planner's rule to a pool's resources: some
// known agent carrying its agent labels (or, none yet, an agent with the
// default limits) must allow them. It returns the problem, or "".
func (s *Server) poolOverLimits(r *http.Request, p *store.Pool) (string, error) {
	res := pipeline.Resources{CPUs: p.CPUs, MemoryBytes: p.MemoryBytes, Pids: p.Pids}
	ok, closest, over, err := s.sched.CheckResources(r.Context(), p.AgentLabels, res)
	if err != nil || ok {
		return "", err
	}
	msgs := make([]string, len(over))
	for i, f := range over {
		msgs[i] = fmt.Sprintf("resources.%s: asks for %s, more than any agent with labels %v allows (at most %s)", f, res.Describe(f), p.AgentLabels, closest.Describe(f))
	}
	return strings.Join(msgs, "; "), nil
}

// updatePool handles PATCH /api/v1/pools/{name} with {"warm": N}: the pool
// keeps N warm runners from now on (surplus idle ones are canceled, their
// registrations removed; missing ones started).
func (s *Server) updatePool(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Warm *int `json:"warm"`
	}
	if !decode(w, r, &req) {
		return
	}
	p, err := s.store.Pool(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	if req.Warm == nil {
		writeError(w, http.StatusBadRequest, "invalid", "warm: required")
		return
	}
	p.Warm = *req.Warm
	if err := s.actions.PreparePool(p); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if err := s.store.SetPoolWarm(r.Context(), p.Name, p.Warm); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "pool.update", "pool:"+p.Name, map[string]any{"warm": p.Warm})
	if err := s.actions.PoolChanged(r.Context(), p.Name); err != nil {
		s.log.Warn("actions: balance warm runners: the next pass retries", "pool", p.Name, "err", err)
	}
	writeJSON(w, http.StatusOK, poolView(p))
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) {
	p, err := s.store.Pool(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, poolView(p))
}

// deletePool removes a pool and cancels its unfinished runner jobs.
func (s *Server) deletePool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	canceled, err := s.audited(r, "pool.delete", "pool:"+name, nil).DeletePool(r.Context(), name)
	if err != nil {
		s.storeError(w, err)
		return
	}
	for _, id := range canceled {
		s.watch.notify(id)
	}
	if len(canceled) > 0 {
		s.sched.JobsChanged()
	}
	if canceled == nil {
		canceled = []int64{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": r.PathValue("name"), "canceled_builds": canceled})
}

// --- runners ---

// listRunners lists runner jobs, newest first: live ones and those that
// ended in the last 24 hours (?all=true: all), of one pool with ?pool=.
func (s *Server) listRunners(w http.ResponseWriter, r *http.Request) {
	f := store.RunnerFilter{Pool: r.URL.Query().Get("pool"), Since: time.Now().Add(-24 * time.Hour)}
	if all, _ := strconv.ParseBool(r.URL.Query().Get("all")); all {
		f.Since = time.Time{}
	}
	rs, err := s.store.ListRunnerJobs(r.Context(), f)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]RunnerView, 0, len(rs))
	for _, rj := range rs {
		out = append(out, runnerView(rj))
	}
	writeJSON(w, http.StatusOK, out)
}
