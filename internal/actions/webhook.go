package actions

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/store"
)

// ErrUnknownInstallation is a delivery for a GitHub App installation no
// pool is of (HTTP 403: Kiln does not act for it).
var ErrUnknownInstallation = errors.New("unknown installation")

// Outcome is what a workflow_job delivery did.
type Outcome string

const (
	OutcomeRunner    Outcome = "runner"    // a runner job was queued
	OutcomeRecorded  Outcome = "recorded"  // the job's state moved forward
	OutcomeUnchanged Outcome = "unchanged" // a repeat or a step back: nothing changed
	OutcomeDuplicate Outcome = "duplicate" // the delivery id was seen before
	OutcomeUnmatched Outcome = "unmatched" // no pool serves the job's labels: ignored
	OutcomeWarm      Outcome = "warm"      // queued, expected to be taken by an idle warm runner
)

// WebhookResult is the answer to a workflow_job delivery.
type WebhookResult struct {
	Outcome Outcome
	Pool    string
	Status  string // the job's recorded status after the delivery
	// BuildID and JobID are the runner job's, when the job has one.
	BuildID, JobID int64
	RunnerName     string
}

// HandleWorkflowJob applies a verified workflow_job delivery. A job of an
// installation no pool is of is ErrUnknownInstallation; a job no pool
// serves (and Kiln does not already know) is ignored and counted.
func (s *Service) HandleWorkflowJob(ctx context.Context, deliveryID string, wj *forge.WorkflowJob) (*WebhookResult, error) {
	pools, err := s.store.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	inst := s.installation(wj.InstallationID)
	if s.cfg.GitHub.App() && !knownInstallation(pools, inst) {
		return nil, fmt.Errorf("%w %d: no pool is of this GitHub App installation", ErrUnknownInstallation, wj.InstallationID)
	}
	job := fromWebhook(wj, inst)
	p := match(pools, inst, wj.Owner, wj.Repo, wj.Labels)
	if p == nil {
		if _, err := s.store.WorkflowJob(ctx, wj.ID); errors.Is(err, store.ErrNotFound) {
			if wj.Status == store.GHQueued {
				s.metrics.ActionsUnmatchedJobs.Inc()
				s.log.Info("actions: no pool serves the job's labels: ignored", "job", wj.ID, "repo", wj.Owner+"/"+wj.Repo, "labels", wj.Labels)
			}
			return &WebhookResult{Outcome: OutcomeUnmatched, Status: wj.Status}, nil
		} else if err != nil {
			return nil, err
		}
	}
	u := store.WorkflowJobUpdate{Job: job, Source: store.SourceWebhook, DeliveryID: deliveryID, Action: wj.Action}
	if p != nil {
		job.Pool = p.Name
		if u.Launch, err = s.launchSpec(p, &job, wj.DefaultBranch); err != nil {
			return nil, err
		}
	}
	res, err := s.store.RecordWorkflowJob(ctx, u)
	if err != nil {
		return nil, err
	}
	s.afterRecord(ctx, res, store.SourceWebhook, 0)
	out := &WebhookResult{Outcome: OutcomeUnchanged, Pool: res.Job.Pool, Status: res.Job.Status}
	switch {
	case res.Duplicate:
		out.Outcome = OutcomeDuplicate
	case res.Created != nil:
		out.Outcome = OutcomeRunner
	case res.Warm && res.Advanced:
		out.Outcome = OutcomeWarm
	case res.Advanced:
		out.Outcome = OutcomeRecorded
	}
	if r := res.Runner; r != nil {
		out.BuildID, out.JobID, out.RunnerName = r.BuildID, r.JobID, r.Name
	}
	return out, nil
}

func fromWebhook(wj *forge.WorkflowJob, installation int64) store.WorkflowJob {
	return store.WorkflowJob{
		ID: wj.ID, RunID: wj.RunID, RunAttempt: wj.RunAttempt, Owner: wj.Owner, Repo: wj.Repo, Name: wj.Name, Workflow: wj.WorkflowName,
		Labels: wj.Labels, Status: wj.Status, Conclusion: wj.Conclusion, InstallationID: installation, HTMLURL: wj.HTMLURL,
		HeadBranch: wj.HeadBranch, HeadSHA: wj.HeadSHA, RunnerName: wj.RunnerName,
	}
}

// fromAPI is GitHub's REST view of a job, with what Kiln knew of it
// (repository, installation, branch) when known is not nil.
func fromAPI(j github.Job, owner, repo string, installation int64, known *store.WorkflowJob) store.WorkflowJob {
	w := store.WorkflowJob{ID: j.ID, RunID: j.RunID, Owner: owner, Repo: repo, Name: j.Name, Labels: j.Labels, Status: j.Status,
		Conclusion: j.Conclusion, InstallationID: installation, HTMLURL: j.HTMLURL, RunnerName: j.RunnerName}
	if w.Status == store.GHQueued {
		w.RunnerName = ""
	}
	if known != nil {
		w.RunAttempt, w.Workflow, w.HeadBranch, w.HeadSHA = known.RunAttempt, known.Workflow, known.HeadBranch, known.HeadSHA
	}
	return w
}

// afterRecord acts on what a recorded update did: the queued-to-running
// latency, waking claims for a new runner job, and releasing the runner
// job of a job that completed without it. source is who made the update
// (store.SourceWebhook, SourceReconciler, SourceClaim): the job's own
// source is who last advanced it, which a relaunch does not. skipJob is a
// runner job the caller ends itself (a launch that found its job gone).
func (s *Service) afterRecord(ctx context.Context, res *store.WorkflowJobResult, source string, skipJob int64) {
	if res.Duplicate {
		return
	}
	if res.Advanced && res.Prev == store.GHQueued && store.GHStatusRank(res.Job.Status) > store.GHStatusRank(store.GHQueued) {
		s.metrics.ActionsQueuedToRunning.Observe(max(s.now().Sub(res.Job.FirstSeen).Seconds(), 0))
	}
	if res.Created != nil {
		s.log.Info("actions: runner job queued", "github_job", res.Job.ID, "repo", res.Job.Owner+"/"+res.Job.Repo, "pool", res.Created.Pool,
			"runner", res.Created.Name, "build", res.Created.BuildID, "source", source)
		s.wake()
	}
	if r := res.Runner; res.Advanced && res.Job.Status == store.GHCompleted && r != nil && r.Live() && r.JobID != skipJob {
		s.release(ctx, r, &res.Job)
	}
	// A job now expects a warm runner, or a warm runner took one: start
	// the replacement.
	if (res.Warm && res.Advanced) || res.Swapped {
		s.topUpPool(ctx, res.Job.Pool)
	}
}

// release ends the runner job of a job that completed: at once while the
// runner job is queued; while it runs, unless its runner ran the job (an
// ephemeral runner exits by itself when its job is done) or is busy with
// another, after removing the runner's registration.
func (s *Service) release(ctx context.Context, r *store.RunnerJob, w *store.WorkflowJob) {
	reason := fmt.Sprintf("GitHub job %d completed (%s) without this runner", w.ID, cmp.Or(w.Conclusion, "no conclusion"))
	if r.Status == store.StatusQueued {
		s.cancel(ctx, r, fmt.Sprintf("GitHub job %d completed (%s) before its runner started", w.ID, cmp.Or(w.Conclusion, "no conclusion")))
		return
	}
	if strings.EqualFold(w.RunnerName, r.Name) {
		return // it ran the job, and exits by itself
	}
	if r.RunnerID != 0 {
		c, err := s.client(r.InstallationID)
		if err != nil {
			s.log.Warn("actions: release runner", "runner", r.Name, "err", err)
			return
		}
		if removed, err := s.removeIdle(ctx, c, scopeOf(r), r.RunnerID); err != nil || !removed {
			if err != nil {
				s.log.Warn("actions: release runner: the reaper will retry", "runner", r.Name, "err", err)
			}
			return
		}
	}
	s.cancel(ctx, r, reason)
}

// removeIdle removes a runner from GitHub unless it is busy. It reports
// whether the runner is gone (removed, or was already).
func (s *Service) removeIdle(ctx context.Context, c *github.Client, scope github.Scope, id int64) (bool, error) {
	gr, err := c.GetRunner(ctx, scope, id)
	if errors.Is(err, github.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if gr.Busy {
		return false, nil
	}
	err = c.RemoveRunner(ctx, scope, id)
	if errors.Is(err, github.ErrValidation) {
		return false, nil // it took a job meanwhile (GitHub: 422 busy)
	}
	return err == nil, err
}

// cancel ends a runner job through the build's cancel path: a queued job
// ends at once, a running one when its agent next heartbeats (which
// destroys the sandbox).
func (s *Service) cancel(ctx context.Context, r *store.RunnerJob, reason string) {
	if err := s.store.CancelBuild(context.WithoutCancel(ctx), r.BuildID, reason); err != nil {
		s.log.Warn("actions: cancel runner job", "job", r.JobID, "err", err)
		return
	}
	s.log.Info("actions: runner job canceled", "job", r.JobID, "runner", r.Name, "reason", reason)
	s.wake()
}

func scopeOf(r *store.RunnerJob) github.Scope { return github.Scope{Owner: r.Owner, Repo: r.Repo} }
