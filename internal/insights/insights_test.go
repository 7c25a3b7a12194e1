package insights

import (
	"reflect"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

func TestNewWindow(t *testing.T) {
	now := time.Date(2026, 3, 10, 15, 4, 5, 0, time.FixedZone("x", 2*3600))
	w, err := NewWindow(now, 7)
	if err != nil {
		t.Fatal(err)
	}
	// 13:04:05 UTC on the 10th: the 4th to the 10th, UTC days.
	if want := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC); !w.Since.Equal(want) || !w.Until.Equal(now.Add(time.Millisecond)) || w.Days != 7 {
		t.Errorf("window %+v, want since %v", w, want)
	}
	if w, _ := NewWindow(now, 30); !w.Since.Equal(time.Date(2026, 2, 9, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("30 days since %v", w.Since)
	}
	for _, bad := range []int{0, 1, 14, -7, 31} {
		if _, err := NewWindow(now, bad); err == nil {
			t.Errorf("NewWindow(%d): no error", bad)
		}
	}
	q := w.Query(false, []int64{3})
	if q.Day != Day || q.AllProjects || !reflect.DeepEqual(q.ProjectIDs, []int64{3}) || !q.Since.Equal(w.Since) {
		t.Errorf("query %+v", q)
	}
}

func TestPercentilesByNearestRank(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	for _, c := range []struct {
		in            []time.Duration
		p50, p95, max int
	}{
		{ms(7), 7, 7, 7},
		{ms(4, 1), 1, 4, 4},
		{ms(3, 1, 2), 2, 3, 3},
		{ms(10, 20, 30, 40, 50, 60, 70, 80, 90, 100), 50, 100, 100},
	} {
		got := percentiles(c.in)
		want := Percentiles{N: len(c.in), P50: time.Duration(c.p50) * time.Millisecond, P95: time.Duration(c.p95) * time.Millisecond, Max: time.Duration(c.max) * time.Millisecond}
		if got != want {
			t.Errorf("percentiles: %+v, want %+v", got, want)
		}
	}
	if got := percentiles(nil); got != (Percentiles{}) {
		t.Errorf("none: %+v", got)
	}
	var hundred []time.Duration
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	if got := percentiles(hundred); got.P50 != 50*time.Millisecond || got.P95 != 95*time.Millisecond {
		t.Errorf("1..100 ms: %+v", got)
	}
}

// A report's every figure from known rows.
func TestCompute(t *testing.T) {
	w, err := NewWindow(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC), 7)
	if err != nil {
		t.Fatal(err)
	}
	d := &store.InsightsData{BuildDays: []store.BuildDayCount{
		{Day: 0, Status: store.StatusSuccess, Count: 4},
		{Day: 0, Status: store.StatusFailure, Count: 2},
		{Day: 3, Status: store.StatusTimedOut, Count: 1},
		{Day: 3, Status: store.StatusError, Count: 1},
		{Day: 6, Status: store.StatusSuccess, Count: 2},
		{Day: 6, Status: store.StatusCanceled, Count: 1},
		{Day: 7, Status: store.StatusSuccess, Count: 50}, // outside the window: not counted
	}}
	at := w.Since.Add(time.Hour)
	// web/test: 20 runs of 1 s to 20 s (the 5th and 6th failed), queued 10 ms each.
	for i := 1; i <= 20; i++ {
		st := store.StatusSuccess
		if i == 5 || i == 6 {
			st = store.StatusFailure
		}
		d.Jobs = append(d.Jobs, store.JobRun{BuildID: int64(i), BuildNumber: int64(100 + i), Project: "web", Name: "test", Status: st, Attempts: 1,
			Queued: 10 * time.Millisecond, QueueKnown: true, Ran: time.Duration(i) * time.Second, FinishedAt: at})
	}
	d.Jobs = append(d.Jobs,
		// api/build: a timed-out run of 90 s, queued 2 s, with a keyed hit
		// and a miss; a run of 30 s with a hit, on its second attempt.
		store.JobRun{BuildID: 30, BuildNumber: 7, Project: "api", Name: "build", Status: store.StatusTimedOut, Queued: 2 * time.Second, QueueKnown: true,
			Ran: 90 * time.Second, CacheRestores: 2, CacheHits: 1, CacheBytesRestored: 1000, FinishedAt: at},
		store.JobRun{BuildID: 31, BuildNumber: 8, Project: "api", Name: "build", Status: store.StatusSuccess, Attempts: 2, Queued: 3 * time.Second, QueueKnown: true,
			Ran: 30 * time.Second, CacheRestores: 1, CacheHits: 1, CacheBytesRestored: 500, FinishedAt: at},
		// An error and a cancel: in queue times and caches, not in durations.
		store.JobRun{BuildID: 32, BuildNumber: 9, Project: "api", Name: "build", Status: store.StatusError, Queued: time.Second, QueueKnown: true,
			Ran: 500 * time.Second, CacheRestores: 1, FinishedAt: at},
		store.JobRun{BuildID: 33, BuildNumber: 10, Project: "api", Name: "lint", Status: store.StatusCanceled, Ran: 400 * time.Second, FinishedAt: at},
	)
	d.Flaky = []store.FlakyRun{
		{Project: "web", Name: "test", Commit: "c1", FailedBuild: 5, FailedNumber: 105, FailedStatus: store.StatusFailure, PassedBuild: 7, PassedNumber: 107, PassedAt: at},
		{Project: "web", Name: "test", Commit: "c1", FailedBuild: 5, FailedNumber: 105, FailedStatus: store.StatusFailure, PassedBuild: 8, PassedNumber: 108, PassedAt: at},
		{Project: "web", Name: "test", Commit: "c2", FailedBuild: 6, FailedNumber: 106, FailedStatus: store.StatusFailure, PassedBuild: 9, PassedNumber: 109, PassedAt: at},
		{Project: "api", Name: "build", Commit: "c3", FailedBuild: 30, FailedNumber: 7, FailedStatus: store.StatusTimedOut, PassedBuild: 31, PassedNumber: 8, PassedAt: at},
	}
	r := Compute(w, d)

	if len(r.PerDay) != 7 || !r.PerDay[0].Date.Equal(w.Since) || !r.PerDay[6].Date.Equal(w.Since.Add(6*Day)) {
		t.Fatalf("days %+v", r.PerDay)
	}
	wantDays := map[int]Counts{0: {Success: 4, Failure: 2}, 3: {Failure: 1, Error: 1}, 6: {Success: 2, Canceled: 1}}
	for i, dc := range r.PerDay {
		if dc.Counts != wantDays[i] {
			t.Errorf("day %d: %+v, want %+v", i, dc.Counts, wantDays[i])
		}
	}
	if r.Builds != (Counts{Success: 6, Failure: 3, Error: 1, Canceled: 1}) || r.Builds.Total() != 11 {
		t.Errorf("builds %+v", r.Builds)
	}
	if r.FailureRate == nil || *r.FailureRate != 3.0/9 {
		t.Errorf("failure rate %v, want 3/9", r.FailureRate)
	}
	// 20 of 10 ms, then 1 s, 2 s, 3 s: p50 the 12th (10 ms), p95 the 22nd (2 s).
	if r.Queue != (Percentiles{N: 23, P50: 10 * time.Millisecond, P95: 2 * time.Second, Max: 3 * time.Second}) {
		t.Errorf("queue %+v", r.Queue)
	}
	wantJobs := []JobStats{
		{Project: "api", Name: "build", Runs: 2, Failures: 1, Retried: 1, Duration: Percentiles{N: 2, P50: 30 * time.Second, P95: 90 * time.Second, Max: 90 * time.Second}},
		{Project: "web", Name: "test", Runs: 20, Failures: 2, Duration: Percentiles{N: 20, P50: 10 * time.Second, P95: 19 * time.Second, Max: 20 * time.Second}},
	}
	if !reflect.DeepEqual(r.Jobs, wantJobs) {
		t.Errorf("jobs %+v\nwant %+v", r.Jobs, wantJobs)
	}
	if r.Cache.Restores != 4 || r.Cache.Hits != 2 || r.Cache.HitRate == nil || *r.Cache.HitRate != 0.5 || r.Cache.BytesRestored != 1500 {
		t.Errorf("cache %+v", r.Cache)
	}
	if len(r.Slowest) != SlowestRuns || r.Slowest[0].Ran != 90*time.Second || r.Slowest[0].BuildNumber != 7 || r.Slowest[0].Status != store.StatusTimedOut ||
		r.Slowest[1].Ran != 30*time.Second || r.Slowest[2].Ran != 20*time.Second || r.Slowest[9].Ran != 13*time.Second {
		t.Errorf("slowest %+v", r.Slowest)
	}
	wantFlaky := []Flaky{
		{Project: "web", Job: "test", Flips: 2, Commits: 2, LastFailedBuild: 6, LastFailedNumber: 106, LastPassedBuild: 9, LastPassedNumber: 109, LastCommit: "c2", LastPassedAt: at},
		{Project: "api", Job: "build", Flips: 1, Commits: 1, LastFailedBuild: 30, LastFailedNumber: 7, LastPassedBuild: 31, LastPassedNumber: 8, LastCommit: "c3", LastPassedAt: at},
	}
	if !reflect.DeepEqual(r.Flaky, wantFlaky) {
		t.Errorf("flaky %+v\nwant %+v", r.Flaky, wantFlaky)
	}
}

// An empty window has its days, and no rates.
func TestComputeEmpty(t *testing.T) {
	w, _ := NewWindow(time.Now(), 30)
	r := Compute(w, &store.InsightsData{})
	if len(r.PerDay) != 30 || r.FailureRate != nil || r.Cache.HitRate != nil || r.Queue.N != 0 || len(r.Jobs)+len(r.Slowest)+len(r.Flaky) != 0 {
		t.Errorf("empty report %+v", r)
	}
}
