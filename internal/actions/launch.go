package actions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/store"
)

// JITConfigEnv is the environment variable that carries the encoded JIT
// configuration into the sandbox: the runner reads --jitconfig from it. It
// travels only in the assignment's secrets, which the agent masks in every
// log line; never in the spec, a label or the command line.
const JITConfigEnv = "ACTIONS_RUNNER_INPUT_JITCONFIG"

// ErrAttemptEnded: Launch did not start a runner and has already ended
// the Kiln attempt (canceled, failed, or errored to be retried later). The
// agent protocol answers the claim with "nothing to do".
var ErrAttemptEnded = errors.New("runner not launched")

// Launch is what a claimed runner job needs beyond its spec.
type Launch struct {
	// Secrets hold the JIT configuration (JITConfigEnv).
	Secrets map[string]string
	// Env says which runner and job this is (not secret).
	Env        map[string]string
	RunnerName string
	GHJobID    int64
	// Branch is the job's head branch, for the cache service's scope.
	Branch string
}

// Launch starts the runner of a claimed runner job. First it asks GitHub
// whether the job is still queued: if not, and Kiln's runner for another
// job took it (GitHub gives an idle runner any job its labels fit), this
// runner job serves that other job instead, if it is queued; otherwise the
// attempt ends canceled and nothing is registered. Then it asks for a JIT
// configuration under the runner job's one name; a 409 means a runner of
// that name is registered (an earlier attempt's): it is removed, unless
// busy, and the call is made once more.
//
// A GitHub failure ends the attempt: a rate limit as an error retried
// after GitHub's wait that does not count against the job's attempts; a
// 5xx, a network failure or a second 409 as an error retried with
// github.Backoff (the job's attempts bound it); anything else (403, 404,
// 422, 401: the job or the configuration is wrong) as a failure with the
// reason. Those all return ErrAttemptEnded; any other error is the store's.
func (s *Service) Launch(ctx context.Context, j *store.Job) (*Launch, error) {
	r, err := s.store.RunnerJob(ctx, j.ID)
	if err != nil {
		return nil, err
	}
	pool, err := s.store.Pool(ctx, r.Pool)
	if errors.Is(err, store.ErrNotFound) {
		return nil, s.end(ctx, j, store.StatusFailure, fmt.Sprintf("pool %s was deleted: no runner started", r.Pool), 0)
	}
	if err != nil {
		return nil, err
	}
	c, err := s.client(r.InstallationID)
	if err != nil {
		return nil, s.end(ctx, j, store.StatusFailure, "cannot start a GitHub runner: "+err.Error(), 0)
	}
	// With the quota spent, do not spend a request to hear so.
	if wait := s.rateWait(c, 1); wait > 0 {
		return nil, s.later(ctx, j, fmt.Sprintf("GitHub's rate limit is spent until %s: waiting", s.now().Add(wait).UTC().Format(time.RFC3339)), wait)
	}

	// A warm runner job serves no GitHub job yet: nothing to check.
	var w *store.WorkflowJob
	if r.GHJobID != 0 {
		if w, err = s.checkQueued(ctx, c, j, r); err != nil {
			return nil, err
		}
		if r, err = s.store.RunnerJob(ctx, j.ID); err != nil { // it may serve another job now (or none: warm)
			return nil, err
		}
	}

	scope := scopeOf(r)
	jit, err := s.generate(ctx, c, scope, pool, r)
	if err != nil {
		return nil, s.githubFailed(ctx, j, "register runner "+r.Name, err)
	}
	if err := s.store.SetRunnerRegistered(context.WithoutCancel(ctx), j.ID, jit.RunnerID); err != nil {
		return nil, err
	}
	// The job may have completed (and this runner job been canceled)
	// while GitHub answered: then take the runner back at once.
	if cur, err := s.store.Job(ctx, j.ID); err == nil && cur.CancelRequested {
		if _, err := s.removeIdle(context.WithoutCancel(ctx), c, scope, jit.RunnerID); err != nil {
			s.log.Warn("actions: remove the runner of a canceled job: the reaper will retry", "runner", r.Name, "err", err)
		}
		return nil, s.end(ctx, j, store.StatusCanceled, "canceled while its runner was being registered", 0)
	}
	l := &Launch{
		Secrets:    map[string]string{JITConfigEnv: jit.EncodedJITConfig},
		Env:        map[string]string{"KILN_RUNNER_NAME": r.Name},
		RunnerName: r.Name,
	}
	if w == nil { // warm: GitHub hands it a job later
		l.Env["KILN_WARM_RUNNER"] = "1"
		if scope.Repo != "" {
			l.Env["KILN_GITHUB_REPOSITORY"] = scope.Owner + "/" + scope.Repo
		}
		s.log.Info("actions: warm runner registered", "runner", jit, "pool", r.Pool, "job", j.ID, "attempt", j.Attempt)
		return l, nil
	}
	l.Env["KILN_GITHUB_JOB_ID"], l.Env["KILN_GITHUB_REPOSITORY"] = strconv.FormatInt(w.ID, 10), w.Owner+"/"+w.Repo
	l.GHJobID, l.Branch = w.ID, w.HeadBranch
	s.log.Info("actions: runner registered", "runner", jit, "github_job", w.ID, "job", j.ID, "attempt", j.Attempt)
	return l, nil
}

// checkQueued asks GitHub for the runner job's GitHub job and returns it
// when it is queued. A job that is not is recorded (which may hand this
// runner job to the job its runner took); then the job this runner job
// now serves is checked, once. When a warm runner took the job, this
// runner job becomes a warm one (it serves no job): nil, nil.
//
// Each hand-over is followed, not just the first: in a burst GitHub may
// have given the job this runner job now serves to a runner too, and
// stopping there would cancel this runner job while the job handed to it
// still waits, with no runner ever started for it.
func (s *Service) checkQueued(ctx context.Context, c *github.Client, j *store.Job, r *store.RunnerJob) (*store.WorkflowJob, error) {
	target := r.GHJobID
	seen := map[int64]bool{}
	for len(seen) < maxHandOvers {
		seen[target] = true
		w, err := s.store.WorkflowJob(ctx, target)
		if err != nil {
			return nil, err
		}
		gj, err := c.GetJob(ctx, w.Owner, w.Repo, w.ID)
		if err != nil {
			return nil, s.githubFailed(ctx, j, fmt.Sprintf("check GitHub job %d", w.ID), err)
		}
		if gj.Status == store.GHQueued {
			return w, nil
		}
		res, err := s.store.RecordWorkflowJob(context.WithoutCancel(ctx), store.WorkflowJobUpdate{
			Job: fromAPI(gj, w.Owner, w.Repo, w.InstallationID, w), Source: store.SourceClaim})
		if err != nil {
			return nil, err
		}
		s.afterRecord(ctx, res, store.SourceClaim, j.ID)
		cur, err := s.store.RunnerJob(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		if cur.GHJobID == target {
			state := gj.Status
			if gj.Conclusion != "" {
				state += " (" + gj.Conclusion + ")"
			}
			if gj.RunnerName != "" {
				state += " on runner " + gj.RunnerName
			}
			return nil, s.end(ctx, j, store.StatusCanceled, fmt.Sprintf("GitHub job %d is no longer queued (%s): no runner started", w.ID, state), 0)
		}
		if cur.GHJobID == 0 {
			s.log.Info("actions: a warm runner took this runner's job: it starts as a warm runner", "job", j.ID, "github_job", target)
			return nil, nil
		}
		s.log.Info("actions: GitHub gave this runner's job to another runner: serving the job that runner was for", "job", j.ID, "from", target, "to", cur.GHJobID)
		if seen[cur.GHJobID] {
			break // handed back to a job already found taken
		}
		target = cur.GHJobID
	}
	return nil, s.end(ctx, j, store.StatusCanceled, fmt.Sprintf("GitHub job %d is no longer queued (after %d hand-overs): no runner started", target, len(seen)-1), 0)
}

// maxHandOvers bounds the hand-overs checkQueued follows (each is a
// GitHub API call); a burst of a hundred jobs here needed at most a few.
const maxHandOvers = 16

// errRunnerBusy: a runner of the launch's name is registered and busy
// (an earlier attempt's runner runs a job): do not start another.
var errRunnerBusy = errors.New("a runner of this name is registered and busy")

// generate asks for the JIT configuration; on a 409 it removes the stale
// registration of the same name (unless busy) and asks once more.
func (s *Service) generate(ctx context.Context, c *github.Client, scope github.Scope, p *store.Pool, r *store.RunnerJob) (github.JITConfig, error) {
	jit, err := c.GenerateJITConfig(ctx, scope, r.Name, p.Labels, p.RunnerGroupID)
	s.countJIT(err)
	if !errors.Is(err, github.ErrConflict) {
		return jit, err
	}
	stale, found, err := s.findRunner(ctx, c, scope, r)
	if err != nil {
		return jit, err
	}
	if found {
		if stale.Busy {
			return jit, fmt.Errorf("runner %s (id %d): %w", r.Name, stale.ID, errRunnerBusy)
		}
		if err := c.RemoveRunner(ctx, scope, stale.ID); err != nil {
			return jit, err
		}
		s.log.Info("actions: removed a stale registration of the runner", "runner", r.Name, "id", stale.ID)
	}
	jit, err = c.GenerateJITConfig(ctx, scope, r.Name, p.Labels, p.RunnerGroupID)
	s.countJIT(err)
	return jit, err
}

// findRunner finds the registered runner named r.Name: by the id an
// earlier attempt recorded, else in the scope's list.
func (s *Service) findRunner(ctx context.Context, c *github.Client, scope github.Scope, r *store.RunnerJob) (github.Runner, bool, error) {
	if r.RunnerID != 0 {
		gr, err := c.GetRunner(ctx, scope, r.RunnerID)
		if err == nil && gr.Name == r.Name {
			return gr, true, nil
		}
		if err != nil && !errors.Is(err, github.ErrNotFound) {
			return gr, false, err
		}
	}
	list, err := c.ListRunners(ctx, scope)
	if err != nil {
		return github.Runner{}, false, err
	}
	for _, gr := range list {
		if strings.EqualFold(gr.Name, r.Name) {
			return gr, true, nil
		}
	}
	return github.Runner{}, false, nil
}

// countJIT counts a generate-jitconfig call by result.
func (s *Service) countJIT(err error) {
	s.metrics.ActionsJITCalls.WithLabelValues(resultOf(err)).Inc()
}

// resultOf names a GitHub call's outcome for metrics.
func resultOf(err error) string {
	for _, k := range []struct {
		kind error
		name string
	}{
		{github.ErrConflict, "conflict"}, {github.ErrRateLimited, "rate_limited"}, {github.ErrServer, "server_error"},
		{github.ErrForbidden, "forbidden"}, {github.ErrNotFound, "not_found"}, {github.ErrValidation, "validation"},
		{github.ErrUnauthorized, "unauthorized"}, {github.ErrNetwork, "network"},
	} {
		if errors.Is(err, k.kind) {
			return k.name
		}
	}
	if err == nil {
		return "ok"
	}
	return "error"
}

// githubFailed ends the attempt after a failed GitHub call (see Launch).
func (s *Service) githubFailed(ctx context.Context, j *store.Job, op string, err error) error {
	msg := fmt.Sprintf("%s: %v", op, err)
	switch {
	case errors.Is(err, github.ErrRateLimited):
		return s.later(ctx, j, msg, github.Backoff(err, j.Attempt-1))
	case github.Retryable(err), errors.Is(err, github.ErrConflict), errors.Is(err, errRunnerBusy),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return s.end(ctx, j, store.StatusError, msg, github.Backoff(err, j.Attempt-1))
	}
	return s.end(ctx, j, store.StatusFailure, msg, 0)
}

// end finishes the attempt with status (an error is retried after delay
// while attempts remain) and returns ErrAttemptEnded with the reason.
func (s *Service) end(ctx context.Context, j *store.Job, status store.Status, msg string, delay time.Duration) error {
	final, err := s.store.FinishJob(context.WithoutCancel(ctx), j.ID, j.Attempt, status, nil, msg, delay)
	if err != nil && !errors.Is(err, store.ErrStaleAttempt) {
		return err
	}
	s.log.Info("actions: runner not launched", "job", j.ID, "attempt", j.Attempt, "status", status, "then", final, "reason", msg, "retry_in", delay)
	if final == store.StatusQueued {
		s.wake()
	}
	return fmt.Errorf("%w: %s", ErrAttemptEnded, msg)
}

// later ends the attempt as an error that does not count against the
// job's attempts, to be retried after wait (GitHub's rate limit).
func (s *Service) later(ctx context.Context, j *store.Job, msg string, wait time.Duration) error {
	if _, err := s.store.RetryJobLater(context.WithoutCancel(ctx), j.ID, j.Attempt, msg, wait); err != nil && !errors.Is(err, store.ErrStaleAttempt) {
		return err
	}
	s.log.Warn("actions: runner launch deferred", "job", j.ID, "attempt", j.Attempt, "reason", msg, "retry_in", wait)
	s.wake()
	return fmt.Errorf("%w: %s", ErrAttemptEnded, msg)
}
