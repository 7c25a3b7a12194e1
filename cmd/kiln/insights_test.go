package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

// kiln insights prints the summary and a table per figure, quoting the
// names it did not make.
func TestPrintInsights(t *testing.T) {
	since := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	rate, hit := 1.0/3, 0.5
	v := api.InsightsView{Project: "web", Days: 7, Since: since, Until: since.Add(6*24*time.Hour + time.Hour),
		Builds:      api.BuildCountsView{Total: 4, Success: 2, Failure: 1, Canceled: 1},
		FailureRate: &rate,
		PerDay:      []api.InsightsDayView{{Date: "2026-03-04", Success: 2, Failure: 1}, {Date: "2026-03-05", Canceled: 1}},
		QueueTime:   api.PercentilesView{Count: 3, P50MS: 4000, P95MS: 6000, MaxMS: 6000},
		Jobs:        []api.JobInsightsView{{Project: "web", Name: "te\x1bst", Runs: 3, Failures: 1, Duration: api.PercentilesView{Count: 3, P50MS: 20000, P95MS: 30000, MaxMS: 30000}}},
		Cache:       api.CacheInsightsView{Restores: 2, Hits: 1, HitRate: &hit, BytesRestored: 2048},
		Slowest:     []api.SlowRunView{{Project: "web", BuildID: 9, BuildNumber: 3, Job: "test", Status: "success", DurationMS: 30000, FinishedAt: since}},
		Flaky: []api.FlakyJobView{{Project: "web", Job: "test", Flips: 1, Commits: 1, LastFailedBuild: 7, LastFailedNumber: 1, LastPassedBuild: 8, LastPassedNumber: 2,
			LastCommit: "0123456789abcdef"}},
	}
	var b strings.Builder
	if err := printInsights(&b, v); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"project web, the last 7 days (2026-03-04 to 2026-03-10 UTC)",
		"builds: 4 (2 success, 1 failure, 0 error, 1 canceled); failure rate 33.3%",
		"queue time: p50 4s, p95 6s, max 6s (3 jobs)",
		"cache: 1 of 2 restores hit (50.0%), 2.0 KiB restored",
		"2026-03-04  2        1",
		`web/"te\x1bst"  3     1         0        20s  30s  30s`,
		"web/test  9 (#3)",
		"web/test  1      1        7 (#1)       8 (#2)       0123456789",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not have %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("an escape printed as is:\n%s", out)
	}
	b.Reset()
	if err := printInsights(&b, api.InsightsView{Days: 30, Since: since, Until: since}); err != nil || !strings.Contains(b.String(), "every project you may view") || !strings.Contains(b.String(), "failure rate -") {
		t.Errorf("empty overall: %v\n%s", err, b.String())
	}
}
