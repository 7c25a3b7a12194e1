package github

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	gh "github.com/google/go-github/v92/github"
)

// Job is a workflow job.
type Job struct {
	ID         int64
	RunID      int64
	Status     string // queued, in_progress, completed, waiting, ...
	Conclusion string // once completed: success, failure, cancelled, ...
	Name       string
	HTMLURL    string
	Labels     []string // the job's runs-on labels
	RunnerID   int64    // once a runner took it
	RunnerName string
}

// QueuedJobs returns the repository's jobs whose status is "queued": what
// is waiting for a runner, for a reconciler that repairs missed webhooks.
//
// It lists the workflow runs whose status is queued and, because a run
// turns in_progress as soon as its first job starts while its other jobs
// may still wait for a runner, those that are in_progress too; then the
// jobs of each of those runs. That is two list requests (more past 100
// runs) plus one per active run: mind the rate limit. Any failure fails the
// whole call. The result is sorted by job id, with no duplicates.
func (c *Client) QueuedJobs(ctx context.Context, owner, repo string) ([]Job, error) {
	if err := (Scope{Owner: owner, Repo: repo}).validate(); err != nil || repo == "" {
		return nil, &Error{Kind: ErrValidation, Op: "queued jobs", Message: fmt.Sprintf("invalid repository %q/%q", owner, repo)}
	}
	var runIDs []int64
	for _, status := range []string{"queued", "in_progress"} {
		op := fmt.Sprintf("list %s workflow runs of %s/%s", status, owner, repo)
		opts := &gh.ListWorkflowRunsOptions{Status: status, ListOptions: gh.ListOptions{PerPage: perPage}}
		for {
			runs, resp, err := c.gh.Actions.ListRepositoryWorkflowRuns(ctx, owner, repo, opts)
			if err := c.done(op, resp, err); err != nil {
				return nil, err
			}
			for _, r := range runs.WorkflowRuns {
				runIDs = append(runIDs, r.GetID())
			}
			if resp.NextPage == 0 || resp.NextPage <= opts.Page {
				break
			}
			opts.Page = resp.NextPage
		}
	}
	// A run that started between the two lists shows in both.
	slices.Sort(runIDs)
	runIDs = slices.Compact(runIDs)

	var out []Job
	for _, runID := range runIDs {
		op := fmt.Sprintf("list jobs of run %d of %s/%s", runID, owner, repo)
		opts := &gh.ListWorkflowJobsOptions{Filter: "latest", ListOptions: gh.ListOptions{PerPage: perPage}}
		for {
			jobs, resp, err := c.gh.Actions.ListWorkflowJobs(ctx, owner, repo, runID, opts)
			if err := c.done(op, resp, err); err != nil {
				return nil, err
			}
			for _, j := range jobs.Jobs {
				if j.GetStatus() == "queued" {
					out = append(out, jobFrom(j))
				}
			}
			if resp.NextPage == 0 || resp.NextPage <= opts.Page {
				break
			}
			opts.Page = resp.NextPage
		}
	}
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	return slices.CompactFunc(out, func(a, b Job) bool { return a.ID == b.ID }), nil
}

// GetJob returns one workflow job, so that a caller can check that a job
// is still queued before it starts a runner for it.
func (c *Client) GetJob(ctx context.Context, owner, repo string, jobID int64) (Job, error) {
	op := fmt.Sprintf("get job %d of %s/%s", jobID, owner, repo)
	if err := (Scope{Owner: owner, Repo: repo}).validate(); err != nil || repo == "" {
		return Job{}, &Error{Kind: ErrValidation, Op: op, Message: fmt.Sprintf("invalid repository %q/%q", owner, repo)}
	}
	j, resp, err := c.gh.Actions.GetWorkflowJobByID(ctx, owner, repo, jobID)
	if err := c.done(op, resp, err); err != nil {
		return Job{}, err
	}
	return jobFrom(j), nil
}

func jobFrom(j *gh.WorkflowJob) Job {
	return Job{
		ID:         j.GetID(),
		RunID:      j.GetRunID(),
		Status:     j.GetStatus(),
		Conclusion: j.GetConclusion(),
		Name:       j.GetName(),
		HTMLURL:    j.GetHTMLURL(),
		Labels:     slices.Clone(j.Labels),
		RunnerID:   j.GetRunnerID(),
		RunnerName: j.GetRunnerName(),
	}
}
