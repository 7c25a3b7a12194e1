package fakegithub

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// The fake broker: what a runner started with a JIT configuration does
// against GitHub, reduced to three calls a runner image's entrypoint (or a
// test) makes over HTTP, at the configuration's serverUrl.
//
//	POST /_fake/runner/register {"jitconfig": "..."}
//	    The runner comes online. 200 with an Assignment; if a queued job's
//	    labels are all among the runner's (case-insensitive) and it is in
//	    the runner's repository (or organization), the oldest such job is
//	    assigned: job in_progress, runner busy. A configuration is good
//	    once: 409 when used again, 404 once its runner is removed, 401 with
//	    a wrong credential, 400 when it does not decode.
//	POST /_fake/runner/acquire {"runner_id": N}
//	    An online idle runner asks again for a job (a runner registered
//	    before its job was queued). 200 with an Assignment (job_id 0: none
//	    yet); 404 unknown runner, 409 not registered.
//	POST /_fake/runner/complete {"runner_id": N, "conclusion": "success"}
//	    The job ends with that conclusion (default success) and the
//	    ephemeral runner is deleted. 200 with the Assignment it had; 404
//	    when GitHub no longer has the runner (removed, or its run was
//	    cancelled), 409 when it has no job.
//
// A runner image's entrypoint finds the broker where a real runner finds
// its server, in the JIT configuration:
//
//	echo "$JITCONFIG" | base64 -d | jq -r '.".runner"' | base64 -d | jq -r .serverUrl
//
// (SetBrokerURL changes it to an address a sandbox can reach.)

// Assignment is the broker's answer: the runner and the job it runs, if any.
type Assignment struct {
	RunnerID   int64    `json:"runner_id"`
	RunnerName string   `json:"runner_name"`
	JobID      int64    `json:"job_id"` // 0: no job (yet)
	RunID      int64    `json:"run_id,omitempty"`
	JobName    string   `json:"job_name,omitempty"`
	Repository string   `json:"repository,omitempty"` // owner/repo
	Labels     []string `json:"labels,omitempty"`     // the job's
	Conclusion string   `json:"conclusion,omitempty"` // on complete
}

func (s *Server) runnerRegister(w http.ResponseWriter, r *http.Request) {
	var req struct {
		JITConfig string `json:"jitconfig"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	id, secret, err := decodeJIT(req.JITConfig)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid JIT configuration: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.runners[id]
	switch {
	case run == nil:
		writeError(w, http.StatusNotFound, "runner not found")
		return
	case !s.checkSecret(id, secret):
		writeError(w, http.StatusUnauthorized, "invalid runner credentials")
		return
	case run.Registered:
		writeError(w, http.StatusConflict, "JIT configuration already used")
		return
	}
	run.Registered, run.Status = true, "online"
	writeJSON(w, http.StatusOK, s.assign(run))
}

func (s *Server) runnerAcquire(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.brokerRunner(w, r, nil)
	if run == nil {
		return
	}
	if !run.Registered {
		writeError(w, http.StatusConflict, "runner has not registered")
		return
	}
	run.Status = "online"
	writeJSON(w, http.StatusOK, s.assign(run))
}

func (s *Server) runnerComplete(w http.ResponseWriter, r *http.Request) {
	var conclusion string
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.brokerRunner(w, r, &conclusion)
	if run == nil {
		return
	}
	if !run.Busy {
		writeError(w, http.StatusConflict, "runner has no job")
		return
	}
	if conclusion == "" {
		conclusion = "success"
	}
	a := s.assignment(run, s.jobs[run.JobID])
	a.Conclusion = conclusion
	s.finishJob(s.jobs[run.JobID], conclusion)
	writeJSON(w, http.StatusOK, a)
}

// brokerRunner reads {"runner_id", "conclusion"} and finds the runner, or
// answers 400/404. Called with s.mu held.
func (s *Server) brokerRunner(w http.ResponseWriter, r *http.Request, conclusion *string) *Runner {
	var req struct {
		RunnerID   int64  `json:"runner_id"`
		Conclusion string `json:"conclusion"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return nil
	}
	if conclusion != nil {
		switch req.Conclusion {
		case "", "success", "failure", "cancelled", "skipped", "neutral", "timed_out":
			*conclusion = req.Conclusion
		default:
			writeError(w, http.StatusBadRequest, "invalid conclusion "+req.Conclusion)
			return nil
		}
	}
	run := s.runners[req.RunnerID]
	if run == nil {
		writeError(w, http.StatusNotFound, "runner not found")
		return nil
	}
	return run
}

// assign gives an idle runner the oldest queued job it can run, as GitHub's
// dispatcher does, and says what the runner now runs. Called with s.mu held.
func (s *Server) assign(run *Runner) Assignment {
	if run.Busy {
		return s.assignment(run, s.jobs[run.JobID])
	}
	var pick *Job
	for _, j := range s.jobs {
		if j.Status == "queued" && matches(run, j) && (pick == nil || j.ID < pick.ID) {
			pick = j
		}
	}
	if pick == nil {
		return s.assignment(run, nil)
	}
	pick.Status, pick.StartedAt = "in_progress", s.now()
	pick.RunnerID, pick.RunnerName, pick.RunnerGroupID = run.ID, run.Name, run.GroupID
	run.Busy, run.JobID = true, pick.ID
	return s.assignment(run, pick)
}

func (s *Server) assignment(run *Runner, j *Job) Assignment {
	a := Assignment{RunnerID: run.ID, RunnerName: run.Name}
	if j != nil {
		a.JobID, a.RunID, a.JobName = j.ID, j.RunID, j.Name
		a.Repository, a.Labels = j.Owner+"/"+j.Repo, slices.Clone(j.Labels)
	}
	return a
}

// matches reports whether the runner may take the job: same repository
// (or an organization runner of the job's owner), and every label the job
// asks for among the runner's.
func matches(run *Runner, j *Job) bool {
	if run.Owner != j.Owner || (run.Repo != "" && run.Repo != j.Repo) {
		return false
	}
	for _, want := range j.Labels {
		if !slices.ContainsFunc(run.Labels, func(have string) bool { return strings.EqualFold(have, want) }) {
			return false
		}
	}
	return true
}
