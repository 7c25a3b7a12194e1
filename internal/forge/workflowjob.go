package forge

import (
	"fmt"
	"strings"
)

// WorkflowJob is a normalized GitHub Actions workflow_job delivery.
type WorkflowJob struct {
	// Action is what happened: queued, waiting, in_progress, completed.
	Action string
	ID     int64
	RunID  int64
	// RunAttempt counts re-runs of the workflow run (from 1).
	RunAttempt int
	// Status is the job's status after the action: queued, waiting,
	// in_progress, completed (the action when the payload has none).
	Status string
	// Conclusion, once completed: success, failure, cancelled, skipped, ...
	Conclusion   string
	Name         string
	WorkflowName string
	// Labels are the job's runs-on labels, as written in the workflow.
	Labels []string
	// Owner and Repo name the repository (from its full_name).
	Owner, Repo   string
	DefaultBranch string
	// InstallationID is the GitHub App installation the delivery is for;
	// 0 for a repository's or organization's own webhook.
	InstallationID int64
	// RunnerID and RunnerName are the runner that took the job (in_progress,
	// completed); a queued job has none, whatever the payload says.
	RunnerID   int64
	RunnerName string
	HTMLURL    string
	HeadBranch string
	HeadSHA    string
}

// MaxWorkflowJobLabels bounds a job's labels (GitHub allows no more on a runner).
const MaxWorkflowJobLabels = 100

// workflowJobPayload is the part of a workflow_job payload Kiln reads.
type workflowJobPayload struct {
	Action      string `json:"action"`
	WorkflowJob *struct {
		ID           int64    `json:"id"`
		RunID        int64    `json:"run_id"`
		RunAttempt   int      `json:"run_attempt"`
		Status       string   `json:"status"`
		Conclusion   *string  `json:"conclusion"`
		Name         string   `json:"name"`
		WorkflowName *string  `json:"workflow_name"`
		Labels       []string `json:"labels"`
		RunnerID     *int64   `json:"runner_id"`
		RunnerName   *string  `json:"runner_name"`
		HTMLURL      string   `json:"html_url"`
		HeadBranch   *string  `json:"head_branch"`
		HeadSHA      string   `json:"head_sha"`
	} `json:"workflow_job"`
	Repository struct {
		Name          string `json:"name"`
		FullName      string `json:"full_name"`
		DefaultBranch string `json:"default_branch"`
		Owner         struct {
			Login string `json:"login"`
		} `json:"owner"`
	} `json:"repository"`
	Installation *struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

// workflowJob checks what Kiln needs of the payload and normalizes it.
func (pl *workflowJobPayload) workflowJob(event string) (*WorkflowJob, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrMalformed, event, fmt.Sprintf(format, args...))
	}
	j := pl.WorkflowJob
	switch {
	case pl.Action == "":
		return nil, bad(`missing "action"`)
	case j == nil:
		return nil, bad(`missing "workflow_job"`)
	case j.ID <= 0:
		return nil, bad(`"workflow_job.id" must be a positive number`)
	case j.RunID <= 0:
		return nil, bad(`"workflow_job.run_id" must be a positive number`)
	case len(j.Labels) > MaxWorkflowJobLabels:
		return nil, bad(`"workflow_job.labels" has %d labels, more than %d`, len(j.Labels), MaxWorkflowJobLabels)
	}
	owner, repo, ok := strings.Cut(pl.Repository.FullName, "/")
	if !ok {
		owner, repo = pl.Repository.Owner.Login, pl.Repository.Name
	}
	if !validName(owner) || !validName(repo) {
		return nil, bad(`"repository.full_name" %.100q is not owner/name`, pl.Repository.FullName)
	}
	w := &WorkflowJob{
		Action: pl.Action, ID: j.ID, RunID: j.RunID, RunAttempt: j.RunAttempt,
		Status: firstNonEmpty(j.Status, pl.Action), Conclusion: deref(j.Conclusion),
		Name: j.Name, WorkflowName: deref(j.WorkflowName),
		Owner: owner, Repo: repo, DefaultBranch: pl.Repository.DefaultBranch,
		HTMLURL: j.HTMLURL, HeadBranch: deref(j.HeadBranch), HeadSHA: strings.ToLower(j.HeadSHA),
	}
	for _, l := range j.Labels {
		if l = strings.TrimSpace(l); l != "" {
			w.Labels = append(w.Labels, l)
		}
	}
	if pl.Installation != nil {
		if pl.Installation.ID < 0 {
			return nil, bad(`"installation.id" must be a positive number`)
		}
		w.InstallationID = pl.Installation.ID
	}
	// GitHub's own examples show a queued job with a runner; it has none yet.
	if w.Status != "queued" && w.Status != "waiting" {
		if j.RunnerID != nil && *j.RunnerID > 0 {
			w.RunnerID = *j.RunnerID
		}
		w.RunnerName = deref(j.RunnerName)
	}
	return w, nil
}

// validName reports whether s can be a GitHub owner or repository name:
// not empty, no slash or whitespace, at most 100 bytes.
func validName(s string) bool {
	return s != "" && len(s) <= 100 && !strings.ContainsAny(s, "/ \t\r\n") && s != "." && s != ".."
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
