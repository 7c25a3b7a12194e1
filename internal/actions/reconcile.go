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

// repoTarget is a repository the reconciler looks at.
type repoTarget struct {
	owner, repo  string
	installation int64
}

// Reconcile makes one reconciler pass, the repair for webhooks that never
// came: for every repository Kiln serves (the repositories of repository
// pools, and those webhooks named for organization pools), it lists the
// jobs GitHub has queued and records each one a pool serves, which makes
// a runner job for a job no webhook announced, or for one whose runner
// jobs all ended while it still waits (at most MaxLaunches in all); then it
// looks up, one by one (at most MaxChecks), jobs Kiln thinks are queued
// that GitHub no longer lists, so that a job that started or completed
// without a webhook moves forward and releases its runner job.
//
// It stops early, asking to wait for the quota's reset, when fewer than
// MinRateRemaining requests are left; a GitHub failure ends the pass with
// that error (the loop backs off).
func (s *Service) Reconcile(ctx context.Context) (time.Duration, error) {
	pools, err := s.store.ListPools(ctx)
	if err != nil || len(pools) == 0 {
		return 0, err
	}
	targets, err := s.targets(ctx, pools)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, t := range targets {
		c, err := s.client(t.installation)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if wait := s.rateWait(c, s.cfg.MinRateRemaining); wait > 0 {
			s.log.Info("actions: reconciler waits for GitHub's rate limit to reset", "wait", wait)
			return wait, errors.Join(errs...)
		}
		if err := s.reconcileRepo(ctx, c, pools, t); err != nil {
			if errors.Is(err, github.ErrRateLimited) {
				return 0, err
			}
			errs = append(errs, fmt.Errorf("reconcile %s/%s: %w", t.owner, t.repo, err))
		}
	}
	return 0, errors.Join(errs...)
}

// targets lists the repositories to reconcile: each repository pool's, and
// each repository a webhook named recently that an organization pool covers.
func (s *Service) targets(ctx context.Context, pools []*store.Pool) ([]repoTarget, error) {
	var out []repoTarget
	seen := map[string]bool{}
	add := func(t repoTarget) {
		k := strings.ToLower(t.owner + "/" + t.repo)
		if !seen[k] {
			seen[k] = true
			out = append(out, t)
		}
	}
	for _, p := range pools {
		if p.Repo != "" {
			add(repoTarget{p.Owner, p.Repo, p.InstallationID})
		}
	}
	repos, err := s.store.ActionsRepos(ctx, s.now().Add(-s.cfg.RepoWindow))
	if err != nil {
		return nil, err
	}
	for _, r := range repos {
		inst := s.installation(r.InstallationID)
		for _, p := range pools {
			if p.Repo == "" && strings.EqualFold(p.Owner, r.Owner) && p.InstallationID == inst {
				add(repoTarget{r.Owner, r.Repo, inst})
				break
			}
		}
	}
	return out, nil
}

func (s *Service) reconcileRepo(ctx context.Context, c *github.Client, pools []*store.Pool, t repoTarget) error {
	queued, err := c.QueuedJobs(ctx, t.owner, t.repo)
	if err != nil {
		return err
	}
	listed := map[int64]bool{}
	for _, gj := range queued {
		listed[gj.ID] = true
		p := match(pools, t.installation, t.owner, t.repo, gj.Labels)
		if p == nil {
			continue
		}
		known, err := s.store.WorkflowJob(ctx, gj.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		w := fromAPI(gj, t.owner, t.repo, t.installation, known)
		w.Pool = p.Name
		launch, err := s.launchSpec(p, &w, "")
		if err != nil {
			return err
		}
		res, err := s.store.RecordWorkflowJob(ctx, store.WorkflowJobUpdate{Job: w, Source: store.SourceReconciler, Launch: launch,
			Relaunch: true})
		if err != nil {
			return err
		}
		if res.Created != nil {
			s.metrics.ActionsReconcilerRepairs.Inc()
			s.log.Info("actions: reconciler repaired a queued job", "github_job", gj.ID, "repo", t.owner+"/"+t.repo, "new", res.New, "launch", res.Job.Launches)
		}
		s.afterRecord(ctx, res, store.SourceReconciler, 0)
	}
	// Jobs Kiln last saw queued that GitHub no longer lists: started or
	// done without a webhook saying so. (In-progress jobs are not polled:
	// their ephemeral runner exits when they end, and the reaper sweeps
	// what is left.)
	open, err := s.store.QueuedWorkflowJobs(ctx, t.owner, t.repo, s.cfg.MaxChecks)
	if err != nil {
		return err
	}
	for _, w := range open {
		if listed[w.ID] || w.UpdatedAt.After(s.now().Add(-s.cfg.ReconcileInterval)) {
			continue // listed, or queued too recently for the list to show it
		}
		if s.rateWait(c, s.cfg.MinRateRemaining) > 0 {
			return nil
		}
		gj, err := c.GetJob(ctx, w.Owner, w.Repo, w.ID)
		if errors.Is(err, github.ErrNotFound) {
			// Gone (the run was deleted): nothing will run it.
			gj = github.Job{ID: w.ID, RunID: w.RunID, Status: store.GHCompleted, Conclusion: "cancelled", Labels: w.Labels, HTMLURL: w.HTMLURL}
		} else if err != nil {
			return err
		}
		res, err := s.store.RecordWorkflowJob(ctx, store.WorkflowJobUpdate{Job: fromAPI(gj, w.Owner, w.Repo, w.InstallationID, w), Source: store.SourceReconciler})
		if err != nil {
			return err
		}
		s.afterRecord(ctx, res, store.SourceReconciler, 0)
	}
	return nil
}
