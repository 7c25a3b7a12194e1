package actions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/store"
)

// RunnerPrefix starts the name of every runner Kiln registers. The reaper
// removes idle kiln-* runners it has no live runner job for: one Kiln per
// GitHub scope owns the prefix.
const RunnerPrefix = "kiln-"

// scopeKey groups runners by where they are registered.
type scopeKey struct {
	owner, repo  string
	installation int64
}

// Reap makes one reaper pass (warm runners are judged the same, except that
// the idle timeout spares them while their pool keeps warm runners; the
// Warm pass replaces those reaped). For each scope Kiln has runners in, it lists
// GitHub's runners, records how each of Kiln's looks (online, busy), and
// for a running runner job:
//
//   - its runner never came online within BootstrapTimeout of the
//     attempt's start, or came online and stayed idle past IdleTimeout:
//     the runner is removed (unless busy) and the runner job canceled,
//     which destroys its sandbox;
//   - it runs past MaxLifetime: the same, once its runner is not busy;
//   - GitHub does not know its runner past BootstrapTimeout (it was
//     removed, or its job ended and the runner exited without the job
//     ending): canceled.
//
// A registered kiln-* runner without a live runner job (its job ended, or
// Kiln never knew it) is removed unless busy. Time is the service's clock.
func (s *Service) Reap(ctx context.Context) (time.Duration, error) {
	pools, err := s.store.ListPools(ctx)
	if err != nil {
		return 0, err
	}
	records, err := s.runnerRecords(ctx)
	if err != nil {
		return 0, err
	}
	// Pools that keep warm runners: the idle timeout spares their idle
	// warm runners (the Warm pass trims a surplus).
	wantsWarm := map[string]bool{}
	for _, p := range pools {
		wantsWarm[p.Name] = p.Warm > 0
	}
	scopes := map[scopeKey]github.Scope{}
	add := func(owner, repo string, installation int64) {
		scopes[scopeKey{strings.ToLower(owner), strings.ToLower(repo), installation}] = github.Scope{Owner: owner, Repo: repo}
	}
	for _, p := range pools {
		add(p.Owner, p.Repo, p.InstallationID)
	}
	for _, r := range records {
		add(r.Owner, r.Repo, r.InstallationID)
	}
	var errs []error
	for k, scope := range scopes {
		c, err := s.client(k.installation)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if wait := s.rateWait(c, s.cfg.MinRateRemaining); wait > 0 {
			return wait, errors.Join(errs...)
		}
		if err := s.reapScope(ctx, c, k, scope, wantsWarm); err != nil {
			errs = append(errs, err)
		}
	}
	return 0, errors.Join(errs...)
}

// runnerRecords lists the runner jobs the reaper looks at: every live one,
// and those that ended recently enough for their runner to linger.
func (s *Service) runnerRecords(ctx context.Context) ([]*store.RunnerJob, error) {
	return s.store.ListRunnerJobs(ctx, store.RunnerFilter{Since: s.now().Add(-s.cfg.MaxLifetime - time.Hour), Limit: 10000})
}

func (s *Service) reapScope(ctx context.Context, c *github.Client, k scopeKey, scope github.Scope, wantsWarm map[string]bool) error {
	list, err := c.ListRunners(ctx, scope)
	if err != nil {
		return fmt.Errorf("reap %s: %w", scope, err)
	}
	// The records are read after GitHub's list: a runner registered
	// before the list has its record (made before its JIT configuration)
	// in them, so a fresh launch is never taken for an orphan.
	all, err := s.runnerRecords(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	registered := map[string]github.Runner{}
	for _, gr := range list {
		if strings.HasPrefix(strings.ToLower(gr.Name), RunnerPrefix) {
			registered[strings.ToLower(gr.Name)] = gr
		}
	}
	var errs []error
	for _, r := range all {
		if (scopeKey{strings.ToLower(r.Owner), strings.ToLower(r.Repo), r.InstallationID}) != k {
			continue
		}
		gr, ok := registered[strings.ToLower(r.Name)]
		delete(registered, strings.ToLower(r.Name))
		if !r.Live() || r.Status == store.StatusQueued {
			// Ended: its registration is an orphan. Queued (a retry
			// waits): the next launch replaces a stale registration.
			if ok && !r.Live() {
				errs = append(errs, s.removeOrphan(ctx, c, scope, gr))
			}
			continue
		}
		if err := s.reapRunning(ctx, c, scope, r, gr, ok, now, r.GHJobID == 0 && wantsWarm[r.Pool]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, gr := range registered {
		errs = append(errs, s.removeOrphan(ctx, c, scope, gr))
	}
	return errors.Join(errs...)
}

// reapRunning judges a running runner job by its runner (gr, registered)
// as GitHub lists it now. A warm runner its pool wants (warm) is not
// subject to the idle timeout.
func (s *Service) reapRunning(ctx context.Context, c *github.Client, scope github.Scope, r *store.RunnerJob, gr github.Runner, registered bool, now time.Time, warm bool) error {
	var age time.Duration
	if r.StartedAt != nil {
		age = now.Sub(*r.StartedAt)
	}
	if !registered {
		if r.RunnerID != 0 {
			if err := s.store.SetRunnerSeen(ctx, r.JobID, "gone", false); err != nil {
				return err
			}
		}
		if age > s.cfg.BootstrapTimeout {
			s.cancel(ctx, r, fmt.Sprintf("GitHub does not know runner %s %s after the job started: its sandbox is ended", r.Name, s.cfg.BootstrapTimeout))
		}
		return nil
	}
	if err := s.store.SetRunnerSeen(ctx, r.JobID, gr.Status, gr.Busy); err != nil {
		return err
	}
	onlineAt, idleSince := r.OnlineAt, r.IdleSince
	if gr.Online() && onlineAt == nil {
		onlineAt = &now
	}
	if !gr.Online() || gr.Busy {
		idleSince = nil
	} else if idleSince == nil {
		idleSince = &now
	}
	var reason string
	switch {
	case age > s.cfg.MaxLifetime:
		reason = fmt.Sprintf("runner %s reached the maximum lifetime of %s", r.Name, s.cfg.MaxLifetime)
	case onlineAt == nil && age > s.cfg.BootstrapTimeout:
		reason = fmt.Sprintf("runner %s did not come online within the bootstrap timeout of %s", r.Name, s.cfg.BootstrapTimeout)
	case idleSince != nil && now.Sub(*idleSince) > s.cfg.IdleTimeout && !warm:
		reason = fmt.Sprintf("runner %s was idle past the idle timeout of %s", r.Name, s.cfg.IdleTimeout)
	default:
		return nil
	}
	if gr.Busy {
		return nil // never take a runner from its job; looked at again next pass
	}
	err := c.RemoveRunner(ctx, scope, gr.ID)
	if errors.Is(err, github.ErrValidation) {
		return nil // it took a job meanwhile
	}
	s.cancel(ctx, r, reason)
	if err != nil {
		return fmt.Errorf("remove runner %s: %w", r.Name, err)
	}
	return nil
}

// removeOrphan removes a kiln-* runner no live runner job has, unless busy.
func (s *Service) removeOrphan(ctx context.Context, c *github.Client, scope github.Scope, gr github.Runner) error {
	if gr.Busy {
		return nil
	}
	if err := c.RemoveRunner(ctx, scope, gr.ID); err != nil && !errors.Is(err, github.ErrValidation) {
		return fmt.Errorf("remove orphaned runner %s: %w", gr.Name, err)
	}
	s.log.Info("actions: removed an orphaned runner", "runner", gr.Name, "id", gr.ID, "scope", scope.String())
	return nil
}
