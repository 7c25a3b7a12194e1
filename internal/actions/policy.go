package actions

import (
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// The launch policy: when a queued GitHub job gets a runner job of its
// own, when it waits for an idle warm runner instead, and how many warm
// runners a pool keeps. The store gathers the facts inside its
// transaction and applies the decision; these functions decide.

// decideLaunch decides for a queued job, given the store's facts. grace is
// how long a new job of a pool that keeps warm runners may wait for one
// (0: it keeps none); maxLaunches bounds the runner jobs the reconciler's
// repairs make for one job in all.
func decideLaunch(f store.LaunchFacts, grace time.Duration, maxLaunches int) store.LaunchDecision {
	// A job needs a runner job when it has none, or (a repair) when its
	// runner job ended while GitHub still has the job queued.
	if f.HasRunnerJob && !(f.Relaunch && f.RunnerJobEnded) {
		return store.LaunchDecision{}
	}
	if f.Launches == 0 && grace > 0 {
		switch {
		case f.WarmWaiting:
			return store.LaunchDecision{AwaitWarm: grace} // its wait goes on
		case f.WarmWaited:
			// The grace ended and no warm runner took it: its own runner.
		case f.IdleWarm > 0:
			return store.LaunchDecision{AwaitWarm: grace}
		}
	}
	// The first launch always; more only as repairs, up to maxLaunches.
	return store.LaunchDecision{Launch: f.Launches == 0 || (f.Relaunch && f.Launches < max(maxLaunches, 1))}
}

// launchPolicy is decideLaunch for jobs of pool p, with this service's
// settings.
func (s *Service) launchPolicy(p *store.Pool) func(store.LaunchFacts) store.LaunchDecision {
	grace := s.warmGrace(p)
	return func(f store.LaunchFacts) store.LaunchDecision { return decideLaunch(f, grace, s.cfg.MaxLaunches) }
}

// warmToStart is how many warm runner jobs a pool gets now: enough that
// its warm number of them wait for no job, while its live runner jobs stay
// within max_runners.
func warmToStart(c store.WarmCounts) int { return min(c.Want-c.Idle, c.MaxRunners-c.Live) }
