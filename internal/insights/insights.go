// Package insights is what Kiln makes of a window of builds: builds per
// day by result, the failure rate, queue times, job durations, cache
// hits, the slowest jobs and the flaky ones. The store reads the window's
// rows (store.Insights); every rule and every figure is here: which days
// a window covers, what counts as a failure, which jobs' times count,
// how a percentile is taken. docs/insights.md says the same for users.
package insights

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// Day is a window's bucket: a UTC calendar day.
const Day = 24 * time.Hour

// Windows are the lengths in days a report may cover.
var Windows = []int{7, 30}

// SlowestRuns is how many of the slowest job runs a report lists.
const SlowestRuns = 10

// Window is the days a report covers: Days UTC calendar days, the last of
// them today (until now).
type Window struct {
	Days         int
	Since, Until time.Time
}

// NewWindow is the window of the last days (7 or 30) days up to now.
func NewWindow(now time.Time, days int) (Window, error) {
	if !slices.Contains(Windows, days) {
		return Window{}, fmt.Errorf("days: %d: want 7 or 30", days)
	}
	now = now.UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	// Until is just past now: what finished at this very millisecond is in.
	return Window{Days: days, Since: today.AddDate(0, 0, -(days - 1)), Until: now.Add(time.Millisecond)}, nil
}

// Query is what the store reads for w: every project's rows (all), or
// only those of the projects ids.
func (w Window) Query(all bool, ids []int64) store.InsightsQuery {
	return store.InsightsQuery{Since: w.Since, Until: w.Until, Day: Day, AllProjects: all, ProjectIDs: ids}
}

// Report is the insights of one window.
type Report struct {
	Window Window
	// PerDay has one entry per day of the window, oldest first.
	PerDay []DayCounts
	// Builds is PerDay's sum.
	Builds Counts
	// FailureRate is failed builds over builds that ran to a verdict
	// (success + failure); nil when none did.
	FailureRate *float64
	// Queue is the jobs' time from queued to their first attempt's start.
	Queue Percentiles
	// Jobs are per job (project and name), by project then name.
	Jobs []JobStats
	// Cache is the jobs' cache restores.
	Cache CacheStats
	// Slowest are the window's longest job runs, longest first.
	Slowest []Run
	// Flaky are the jobs that failed and then passed on the same commit,
	// most often first.
	Flaky []Flaky
}

// Counts is builds by result. Failure counts failed and timed-out builds.
type Counts struct {
	Success, Failure, Error, Canceled int
}

// Total is every build counted.
func (c Counts) Total() int { return c.Success + c.Failure + c.Error + c.Canceled }

func (c *Counts) add(st store.Status, n int) {
	switch st {
	case store.StatusSuccess:
		c.Success += n
	case store.StatusFailure, store.StatusTimedOut:
		c.Failure += n
	case store.StatusError:
		c.Error += n
	case store.StatusCanceled:
		c.Canceled += n
	}
}

// DayCounts is one day's finished builds.
type DayCounts struct {
	Date time.Time // the day's start, UTC
	Counts
}

// Percentiles of a set of durations, by nearest rank: the p-th
// percentile of n sorted values is the ceil(p/100·n)-th. N is the set's
// size; with none, every figure is 0.
type Percentiles struct {
	N             int
	P50, P95, Max time.Duration
}

// percentiles sorts ds (in place) and takes its percentiles.
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	return Percentiles{N: len(ds), P50: rank(ds, 50), P95: rank(ds, 95), Max: ds[len(ds)-1]}
}

// rank is the p-th percentile of sorted ds by nearest rank.
func rank(sorted []time.Duration, p int) time.Duration {
	k := (p*len(sorted) + 99) / 100 // ceil(p/100·n), in integers
	return sorted[max(k, 1)-1]
}

// JobStats is one job's runs that reached a verdict (success, failure,
// timed out): their count, failures, and durations. Retried counts the
// runs that reached it only after Kiln retried an infrastructure error
// (more than one attempt): the hosts' flakiness, where Flaky is the
// code's.
type JobStats struct {
	Project, Name string
	Runs          int
	Failures      int
	Retried       int
	Duration      Percentiles
}

// CacheStats is the cache restores of the window's jobs.
type CacheStats struct {
	Restores, Hits int
	// HitRate is Hits over Restores; nil without restores.
	HitRate *float64
	// BytesRestored is what the hits gave the jobs.
	BytesRestored int64
}

// Run is one job run.
type Run struct {
	Project     string
	BuildID     int64
	BuildNumber int64
	Job         string
	Status      store.Status
	Ran         time.Duration
	FinishedAt  time.Time
}

// Flaky is a job that failed and then passed on the same commit.
type Flaky struct {
	Project, Job string
	// Flips is how many of its failed builds passed on a retry (a later
	// build of the same commit); Commits how many commits that was on.
	Flips, Commits int
	// Last is the latest such failure and the build that then passed.
	LastFailedBuild, LastFailedNumber int64
	LastPassedBuild, LastPassedNumber int64
	LastCommit                        string
	LastPassedAt                      time.Time
}

// Compute makes w's report from what the store read of it.
func Compute(w Window, d *store.InsightsData) Report {
	r := Report{Window: w, PerDay: make([]DayCounts, w.Days)}
	for i := range r.PerDay {
		r.PerDay[i].Date = w.Since.Add(time.Duration(i) * Day)
	}
	for _, bd := range d.BuildDays {
		if bd.Day < 0 || bd.Day >= w.Days {
			continue
		}
		r.PerDay[bd.Day].add(bd.Status, bd.Count)
		r.Builds.add(bd.Status, bd.Count)
	}
	r.FailureRate = ratio(r.Builds.Failure, r.Builds.Success+r.Builds.Failure)

	type jobKey struct{ project, name string }
	durations := map[jobKey][]time.Duration{}
	stats := map[jobKey]*JobStats{}
	var queue []time.Duration
	for _, j := range d.Jobs {
		if j.QueueKnown {
			queue = append(queue, j.Queued)
		}
		r.Cache.Restores += j.CacheRestores
		r.Cache.Hits += j.CacheHits
		r.Cache.BytesRestored += j.CacheBytesRestored
		if !verdict(j.Status) {
			continue // errors and cancels are cut short: their times say nothing of the job
		}
		k := jobKey{j.Project, j.Name}
		st := stats[k]
		if st == nil {
			st = &JobStats{Project: j.Project, Name: j.Name}
			stats[k] = st
		}
		st.Runs++
		if j.Status != store.StatusSuccess {
			st.Failures++
		}
		if j.Attempts > 1 {
			st.Retried++
		}
		durations[k] = append(durations[k], j.Ran)
		r.Slowest = slowest(r.Slowest, Run{Project: j.Project, BuildID: j.BuildID, BuildNumber: j.BuildNumber, Job: j.Name, Status: j.Status, Ran: j.Ran, FinishedAt: j.FinishedAt})
	}
	r.Queue = percentiles(queue)
	r.Cache.HitRate = ratio(r.Cache.Hits, r.Cache.Restores)
	for k, st := range stats {
		st.Duration = percentiles(durations[k])
		r.Jobs = append(r.Jobs, *st)
	}
	slices.SortFunc(r.Jobs, func(a, b JobStats) int { return cmp.Or(cmp.Compare(a.Project, b.Project), cmp.Compare(a.Name, b.Name)) })
	r.Flaky = flaky(d.Flaky)
	return r
}

// slower orders runs: longest first, then newest build, then by job.
func slower(a, b Run) int {
	return cmp.Or(cmp.Compare(b.Ran, a.Ran), cmp.Compare(b.BuildID, a.BuildID), cmp.Compare(a.Job, b.Job))
}

// slowest adds run to top, the SlowestRuns slowest so far in order (a
// window's runs are many: they are not all sorted for ten).
func slowest(top []Run, run Run) []Run {
	if len(top) == SlowestRuns && slower(run, top[len(top)-1]) >= 0 {
		return top
	}
	i, _ := slices.BinarySearchFunc(top, run, slower)
	top = slices.Insert(top, i, run)
	return top[:min(len(top), SlowestRuns)]
}

// verdict says whether a job's run reached the job's own verdict.
func verdict(st store.Status) bool {
	return st == store.StatusSuccess || st == store.StatusFailure || st == store.StatusTimedOut
}

func ratio(n, of int) *float64 {
	if of == 0 {
		return nil
	}
	v := float64(n) / float64(of)
	return &v
}

// flaky counts, per job, its failed builds that a later build of the
// same commit passed (the first such build: retried twice, still one
// flip).
func flaky(rows []store.FlakyRun) []Flaky {
	type jobKey struct{ project, name string }
	byJob := map[jobKey]*Flaky{}
	commits := map[jobKey]map[string]bool{}
	seen := map[jobKey]map[int64]bool{}
	for _, f := range rows {
		k := jobKey{f.Project, f.Name}
		if seen[k] == nil {
			seen[k], commits[k] = map[int64]bool{}, map[string]bool{}
			byJob[k] = &Flaky{Project: f.Project, Job: f.Name}
		}
		if seen[k][f.FailedBuild] {
			continue
		}
		seen[k][f.FailedBuild] = true
		commits[k][f.Commit] = true
		fl := byJob[k]
		fl.Flips++
		if f.FailedBuild > fl.LastFailedBuild {
			fl.LastFailedBuild, fl.LastFailedNumber, fl.LastPassedBuild, fl.LastPassedNumber = f.FailedBuild, f.FailedNumber, f.PassedBuild, f.PassedNumber
			fl.LastCommit, fl.LastPassedAt = f.Commit, f.PassedAt
		}
	}
	out := make([]Flaky, 0, len(byJob))
	for k, fl := range byJob {
		fl.Commits = len(commits[k])
		out = append(out, *fl)
	}
	slices.SortFunc(out, func(a, b Flaky) int {
		return cmp.Or(cmp.Compare(b.Flips, a.Flips), cmp.Compare(a.Project, b.Project), cmp.Compare(a.Job, b.Job))
	})
	return out
}
