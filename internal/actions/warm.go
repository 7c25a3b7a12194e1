package actions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// Warm runners. A pool with warm N keeps N runner jobs ready that no
// GitHub job asked for (warm runner jobs: GHJobID 0, named
// kiln-warm-<pool>-<job id>); they are launched as any runner job (a JIT
// configuration with the pool's labels, made at claim time, without a
// check of a GitHub job) and count against max_runners. GitHub hands a
// queued job to any idle registered runner its labels fit, so a queued job
// of a pool with an idle warm runner no other job expects gets no runner
// job of its own at once: it is recorded as expecting a warm runner, and a
// replacement warm runner is started. When GitHub says the job is in
// progress on the warm runner (webhook, the reconciler's look-up, or a
// launch's check), the store's swap links the job to that runner job. A
// job still queued WarmGrace later gets a runner job of its own (the
// store's one-runner-job-per-job rule holds).

// maxWarmFallbacks bounds the jobs of one Warm pass whose grace ended.
const maxWarmFallbacks = 100

// Warm makes one pass over the warm runners: jobs whose wait for a warm
// runner ended get a runner job of their own; each pool is topped up to
// its warm number (within max_runners), and surplus idle warm runners
// (warm was lowered) are canceled, their registration removed unless busy.
func (s *Service) Warm(ctx context.Context) (time.Duration, error) {
	pools, err := s.store.ListPools(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	if err := s.warmFallback(ctx, pools); err != nil {
		errs = append(errs, err)
	}
	for _, p := range pools {
		if err := s.balance(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", p.Name, err))
		}
	}
	return 0, errors.Join(errs...)
}

// PoolChanged brings a new or changed pool's warm runners to its warm
// number at once (the Warm pass would, within WarmInterval).
func (s *Service) PoolChanged(ctx context.Context, name string) error {
	p, err := s.store.Pool(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.balance(ctx, p)
}

// warmFallback gives each job whose grace for a warm runner ended, and
// that Kiln still knows as queued without a runner job, a runner job.
func (s *Service) warmFallback(ctx context.Context, pools []*store.Pool) error {
	expired, err := s.store.ExpiredWarmJobs(ctx, s.now(), maxWarmFallbacks)
	if err != nil {
		return err
	}
	for _, w := range expired {
		i := slices.IndexFunc(pools, func(p *store.Pool) bool { return p.Name == w.Pool })
		if i < 0 {
			continue // the pool was deleted: nothing serves the job
		}
		launch, err := s.launchSpec(pools[i], w, "")
		if err != nil {
			return err
		}
		res, err := s.store.RecordWorkflowJob(ctx, store.WorkflowJobUpdate{Job: *w, Source: store.SourceReconciler, Launch: launch,
			Relaunch: true})
		if err != nil {
			return err
		}
		if res.Created != nil {
			s.log.Info("actions: no warm runner took the job in time: it gets its own runner", "github_job", w.ID, "pool", w.Pool,
				"runner", res.Created.Name, "grace", s.cfg.WarmGrace)
		}
		s.afterRecord(ctx, res, store.SourceReconciler, 0)
	}
	return nil
}

// warmLaunchSpec says how to make a warm runner job of pool p: a build of
// the project of the pool's repository (or organization).
func (s *Service) warmLaunchSpec(p *store.Pool) (*store.LaunchSpec, error) {
	spec, steps, err := runnerSpec(p)
	if err != nil {
		return nil, err
	}
	clone := strings.TrimSuffix(s.repoURL(p.Owner, p.Repo, ""), "/")
	if p.Repo != "" {
		clone += ".git"
	}
	return &store.LaunchSpec{
		Pool:        p,
		CloneURL:    clone,
		ProjectName: ProjectName(p.Owner, p.Repo),
		Spec:        spec,
		StepNames:   steps,
		MaxAttempts: s.cfg.MaxAttempts,
		Message:     fmt.Sprintf("warm runner of pool %s", p.Name),
	}, nil
}

// topUp starts warm runner jobs until pool p has its warm number that no
// job expects (within max_runners).
func (s *Service) topUp(ctx context.Context, p *store.Pool) error {
	if p.Warm <= 0 {
		return nil
	}
	l, err := s.warmLaunchSpec(p)
	if err != nil {
		return err
	}
	made, err := s.store.TopUpWarm(ctx, l, warmToStart)
	for _, r := range made {
		s.log.Info("actions: warm runner job queued", "pool", p.Name, "runner", r.Name, "job", r.JobID)
	}
	if len(made) > 0 {
		s.wake()
	}
	return err
}

// topUpPool tops up the warm runners of the pool named name, if it keeps any.
func (s *Service) topUpPool(ctx context.Context, name string) {
	if name == "" {
		return
	}
	p, err := s.store.Pool(ctx, name)
	if err == nil {
		err = s.topUp(ctx, p)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("actions: top up warm runners: the next pass retries", "pool", name, "err", err)
	}
}

// balance tops pool p up to its warm number and cancels surplus idle warm
// runners: queued ones first, then those not yet registered, then
// registered ones whose runner GitHub says is not busy (removed first).
func (s *Service) balance(ctx context.Context, p *store.Pool) error {
	if err := s.topUp(ctx, p); err != nil {
		return err
	}
	live, err := s.store.ListRunnerJobs(ctx, store.RunnerFilter{Pool: p.Name, Since: s.now(), Limit: 10000})
	if err != nil {
		return err
	}
	idle := slices.DeleteFunc(live, func(r *store.RunnerJob) bool {
		return !r.Live() || r.GHJobID != 0 || r.CancelRequested || r.GHStatus == "busy"
	})
	pending, err := s.store.WarmPending(ctx, p.Name)
	if err != nil {
		return err
	}
	surplus := len(idle) - pending - max(p.Warm, 0)
	if surplus <= 0 {
		return nil
	}
	rank := func(r *store.RunnerJob) int {
		switch {
		case r.Status == store.StatusQueued:
			return 0
		case r.RunnerID == 0:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(idle, func(a, b *store.RunnerJob) int { return rank(a) - rank(b) })
	var errs []error
	for _, r := range idle {
		if surplus == 0 {
			break
		}
		if r.RunnerID != 0 {
			c, err := s.client(r.InstallationID)
			if err != nil {
				return err
			}
			removed, err := s.removeIdle(ctx, c, scopeOf(r), r.RunnerID)
			if err != nil {
				errs = append(errs, fmt.Errorf("remove warm runner %s: %w", r.Name, err))
				continue
			}
			if !removed {
				continue // it took a job meanwhile
			}
		}
		s.cancel(ctx, r, fmt.Sprintf("pool %s keeps %d warm runners: surplus warm runner %s canceled", p.Name, p.Warm, r.Name))
		surplus--
	}
	return errors.Join(errs...)
}
