package fakegithub

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Job is a workflow job the fake knows.
type Job struct {
	ID             int64
	RunID          int64
	Owner, Repo    string
	Name           string
	WorkflowName   string
	Status         string // queued, in_progress, completed
	Conclusion     string // once completed: success, failure, cancelled, ...
	Labels         []string
	RunnerID       int64
	RunnerName     string
	RunnerGroupID  int64
	HTMLURL        string
	HeadSHA        string
	HeadBranch     string
	InstallationID int64 // the App installation webhooks name; 0 without an App
	CreatedAt      time.Time
	StartedAt      time.Time
	CompletedAt    time.Time
}

type run struct {
	id          int64
	owner, repo string
	jobs        []int64
	createdAt   time.Time
	cancelled   bool
}

// QueueJob creates a workflow run with one queued job asking for labels.
func (s *Server) QueueJob(owner, repo string, labels []string) Job {
	return s.QueueRun(owner, repo, labels)[0]
}

// QueueRun creates a workflow run with one queued job per labels set.
func (s *Server) QueueRun(owner, repo string, jobLabels ...[]string) []Job {
	if len(jobLabels) == 0 {
		panic("fakegithub: QueueRun: no jobs")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID.run++
	now := s.now()
	rn := &run{id: s.lastID.run, owner: owner, repo: repo, createdAt: now}
	s.runs[rn.id] = rn
	var inst int64
	if len(s.instOrder) > 0 {
		inst = s.instOrder[0]
	}
	out := make([]Job, 0, len(jobLabels))
	for i, labels := range jobLabels {
		s.lastID.job++
		j := &Job{
			ID:             s.lastID.job,
			RunID:          rn.id,
			Owner:          owner,
			Repo:           repo,
			Name:           fmt.Sprintf("job-%d", i+1),
			WorkflowName:   "CI",
			Status:         "queued",
			Labels:         slices.Clone(labels),
			HTMLURL:        fmt.Sprintf("https://github.com/%s/%s/actions/runs/%d/job/%d", owner, repo, rn.id, s.lastID.job),
			HeadSHA:        fmt.Sprintf("%040x", rn.id),
			HeadBranch:     "main",
			InstallationID: inst,
			CreatedAt:      now,
		}
		s.jobs[j.ID] = j
		rn.jobs = append(rn.jobs, j.ID)
		out = append(out, j.clone())
	}
	return out
}

// CancelRun cancels a run as GitHub does: every job not yet completed ends
// cancelled, and the ephemeral runners that ran them are gone. Idle runners
// stay: they were never the run's.
func (s *Server) CancelRun(owner, repo string, runID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.runs[runID]
	if rn == nil || rn.owner != owner || rn.repo != repo {
		return
	}
	rn.cancelled = true
	for _, id := range rn.jobs {
		j := s.jobs[id]
		if j.Status == "completed" {
			continue
		}
		s.finishJob(j, "cancelled")
	}
}

// finishJob completes a job and removes the ephemeral runner that ran it.
// Called with s.mu held.
func (s *Server) finishJob(j *Job, conclusion string) {
	j.Status, j.Conclusion, j.CompletedAt = "completed", conclusion, s.now()
	if j.RunnerID != 0 {
		s.removeRunner(j.RunnerID)
	}
}

// Jobs returns every job, by id.
func (s *Server) Jobs() []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Job, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, j.clone())
	}
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Job returns one job.
func (s *Server) Job(id int64) (Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return Job{}, false
	}
	return j.clone(), true
}

func (j *Job) clone() Job {
	c := *j
	c.Labels = slices.Clone(j.Labels)
	return c
}

// status derives the run's status and conclusion from its jobs, as GitHub
// does: queued until a job starts, completed once all are. Called with
// s.mu held.
func (s *Server) status(rn *run) (status, conclusion string) {
	queued, completed, failed := 0, 0, false
	for _, id := range rn.jobs {
		switch j := s.jobs[id]; j.Status {
		case "queued":
			queued++
		case "completed":
			completed++
			failed = failed || j.Conclusion == "failure"
		}
	}
	switch {
	case completed == len(rn.jobs) && rn.cancelled:
		return "completed", "cancelled"
	case completed == len(rn.jobs) && failed:
		return "completed", "failure"
	case completed == len(rn.jobs):
		return "completed", "success"
	case queued == len(rn.jobs):
		return "queued", ""
	}
	return "in_progress", ""
}

func (s *Server) repoJSON(owner, repo string) map[string]any {
	full := owner + "/" + repo
	id, ok := s.repoIDs[full]
	if !ok {
		id = int64(186853002 + len(s.repoIDs))
		s.repoIDs[full] = id
	}
	return map[string]any{
		"id":        id,
		"name":      repo,
		"full_name": full,
		"private":   true,
		"owner":     map[string]any{"login": owner, "type": "Organization"},
		"html_url":  "https://github.com/" + full,
		"url":       s.URL() + "repos/" + full,
	}
}

// runJSON is the run as GitHub's REST API shows it. Called with s.mu held.
func (s *Server) runJSON(rn *run) map[string]any {
	status, conclusion := s.status(rn)
	api := fmt.Sprintf("%srepos/%s/%s/actions/runs/%d", s.URL(), rn.owner, rn.repo, rn.id)
	return map[string]any{
		"id":            rn.id,
		"name":          "CI",
		"display_title": "CI",
		"head_branch":   "main",
		"head_sha":      fmt.Sprintf("%040x", rn.id),
		"path":          ".github/workflows/ci.yml",
		"run_number":    rn.id - 5_000_000_000,
		"run_attempt":   1,
		"event":         "push",
		"status":        status,
		"conclusion":    stringOrNil(conclusion),
		"workflow_id":   161335,
		"url":           api,
		"html_url":      fmt.Sprintf("https://github.com/%s/%s/actions/runs/%d", rn.owner, rn.repo, rn.id),
		"jobs_url":      api + "/jobs",
		"cancel_url":    api + "/cancel",
		"created_at":    timeOrNil(rn.createdAt),
		"updated_at":    timeOrNil(rn.createdAt),
		"repository":    s.repoJSON(rn.owner, rn.repo),
	}
}

// jobJSON is the job as GitHub's REST API shows it. Called with s.mu held.
func (s *Server) jobJSON(j *Job) map[string]any {
	api := fmt.Sprintf("%srepos/%s/%s/actions", s.URL(), j.Owner, j.Repo)
	var group any
	if j.RunnerGroupID != 0 {
		group = "Default"
	}
	return map[string]any{
		"id":                j.ID,
		"run_id":            j.RunID,
		"run_url":           fmt.Sprintf("%s/runs/%d", api, j.RunID),
		"run_attempt":       1,
		"node_id":           fmt.Sprintf("CR_fake%d", j.ID),
		"head_sha":          j.HeadSHA,
		"head_branch":       j.HeadBranch,
		"url":               fmt.Sprintf("%s/jobs/%d", api, j.ID),
		"html_url":          j.HTMLURL,
		"status":            j.Status,
		"conclusion":        stringOrNil(j.Conclusion),
		"created_at":        timeOrNil(j.CreatedAt),
		"started_at":        timeOrNil(j.StartedAt),
		"completed_at":      timeOrNil(j.CompletedAt),
		"name":              j.Name,
		"steps":             []any{},
		"check_run_url":     fmt.Sprintf("%srepos/%s/%s/check-runs/%d", s.URL(), j.Owner, j.Repo, j.ID),
		"labels":            j.Labels,
		"runner_id":         int64OrNil(j.RunnerID),
		"runner_name":       stringOrNil(j.RunnerName),
		"runner_group_id":   int64OrNil(j.RunnerGroupID),
		"runner_group_name": group,
		"workflow_name":     j.WorkflowName,
	}
}

// listRuns is GET /repos/{owner}/{repo}/actions/runs, newest first, with
// ?status= (a status or a conclusion, as GitHub takes either).
func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner, repo, want := r.PathValue("owner"), r.PathValue("repo"), r.URL.Query().Get("status")
	var list []*run
	for _, rn := range s.runs {
		if rn.owner != owner || rn.repo != repo {
			continue
		}
		if st, concl := s.status(rn); want == "" || strings.EqualFold(want, st) || strings.EqualFold(want, concl) {
			list = append(list, rn)
		}
	}
	slices.SortFunc(list, func(a, b *run) int { return cmp.Compare(b.id, a.id) })
	lo, hi := s.paginate(w, r, len(list))
	page := make([]map[string]any, 0, hi-lo)
	for _, rn := range list[lo:hi] {
		page = append(page, s.runJSON(rn))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(list), "workflow_runs": page})
}

// listJobs is GET /repos/{owner}/{repo}/actions/runs/{run}/jobs.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := pathID(r, "run")
	rn := s.runs[id]
	if !ok || rn == nil || rn.owner != r.PathValue("owner") || rn.repo != r.PathValue("repo") {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	lo, hi := s.paginate(w, r, len(rn.jobs))
	page := make([]map[string]any, 0, hi-lo)
	for _, jid := range rn.jobs[lo:hi] {
		page = append(page, s.jobJSON(s.jobs[jid]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(rn.jobs), "jobs": page})
}

// getJob is GET /repos/{owner}/{repo}/actions/jobs/{id}.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := pathID(r, "id")
	j := s.jobs[id]
	if !ok || j == nil || j.Owner != r.PathValue("owner") || j.Repo != r.PathValue("repo") {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, s.jobJSON(j))
}
