package actions

import (
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

func TestDecideLaunch(t *testing.T) {
	const grace = 30 * time.Second
	launch := store.LaunchDecision{Launch: true}
	wait := store.LaunchDecision{AwaitWarm: grace}
	for _, tc := range []struct {
		name  string
		f     store.LaunchFacts
		grace time.Duration
		want  store.LaunchDecision
	}{
		{"a new job gets its runner", store.LaunchFacts{}, 0, launch},
		{"a job with a live runner job gets none", store.LaunchFacts{HasRunnerJob: true, Launches: 1, Relaunch: true}, 0, store.LaunchDecision{}},
		{"a webhook never relaunches", store.LaunchFacts{HasRunnerJob: true, RunnerJobEnded: true, Launches: 1}, 0, store.LaunchDecision{}},
		{"a repair relaunches", store.LaunchFacts{HasRunnerJob: true, RunnerJobEnded: true, Launches: 1, Relaunch: true}, 0, launch},
		{"up to the bound", store.LaunchFacts{HasRunnerJob: true, RunnerJobEnded: true, Launches: 2, Relaunch: true}, 0, launch},
		{"not past it", store.LaunchFacts{HasRunnerJob: true, RunnerJobEnded: true, Launches: 3, Relaunch: true}, 0, store.LaunchDecision{}},
		{"an idle warm runner: wait for it", store.LaunchFacts{IdleWarm: 1}, grace, wait},
		{"none idle: its own runner", store.LaunchFacts{IdleWarm: 0}, grace, launch},
		{"more jobs expect one than there are: its own", store.LaunchFacts{IdleWarm: -2}, grace, launch},
		{"the wait goes on", store.LaunchFacts{WarmWaiting: true}, grace, wait},
		{"the wait ended: its own runner, idle ones or not", store.LaunchFacts{WarmWaited: true, IdleWarm: 3}, grace, launch},
		{"a pool without warm runners never waits", store.LaunchFacts{IdleWarm: 3}, 0, launch},
		{"a relaunch never waits", store.LaunchFacts{HasRunnerJob: true, RunnerJobEnded: true, Launches: 1, Relaunch: true, IdleWarm: 3}, grace, launch},
	} {
		if got := decideLaunch(tc.f, tc.grace, 3); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestWarmToStart(t *testing.T) {
	for _, tc := range []struct {
		c    store.WarmCounts
		want int
	}{
		{store.WarmCounts{Want: 2, Idle: 0, MaxRunners: 10, Live: 0}, 2},
		{store.WarmCounts{Want: 2, Idle: 1, MaxRunners: 10, Live: 1}, 1},
		{store.WarmCounts{Want: 2, Idle: 2, MaxRunners: 10, Live: 2}, 0},
		{store.WarmCounts{Want: 3, Idle: -1, MaxRunners: 10, Live: 0}, 4}, // jobs wait for warm runners: more
		{store.WarmCounts{Want: 5, Idle: 0, MaxRunners: 4, Live: 2}, 2},   // within max_runners
		{store.WarmCounts{Want: 5, Idle: 0, MaxRunners: 4, Live: 4}, 0},
	} {
		if got := warmToStart(tc.c); got != tc.want {
			t.Errorf("warmToStart(%+v) = %d, want %d", tc.c, got, tc.want)
		}
	}
}
