package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// testClock is the store's clock in a test: moved by hand, read by the
// server's goroutines too.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// runPlanned plays the agent for build id's one job: it waits queue
// (store time), claims it, reports the cache restores, runs for ran
// (heartbeating, so the lease holds) and finishes with status.
func (e *env) runPlanned(c *testClock, id int64, queue, ran time.Duration, status store.Status, caches ...protocol.CacheEvent) {
	e.t.Helper()
	e.waitPlanned(id)
	c.advance(queue)
	a := e.mustClaim("a1")
	if a.BuildID != id {
		e.t.Fatalf("claimed build %d's job, want %d's", a.BuildID, id)
	}
	for _, ev := range caches {
		ev.Attempt = a.Attempt
		e.agentAPI(fmt.Sprintf("/jobs/%d/caches", a.JobID), ev).want(e.t, http.StatusNoContent, nil)
	}
	for left := ran; left > 0; left -= 10 * time.Second {
		c.advance(min(left, 10*time.Second))
		e.heartbeat(a.JobID, a.Attempt).want(e.t, http.StatusOK, nil)
	}
	e.finish(a.JobID, a.Attempt, status).want(e.t, http.StatusNoContent, nil)
}

// The insights of builds run through the agent protocol with known
// queue and run times, results, cache restores and a retry: every
// figure, per project and overall, and only over what the caller may
// view.
func TestInsights(t *testing.T) {
	e := newEnv(t)
	c := &testClock{t: time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)}
	e.srv.Store.SetClock(c.now)
	dir, _ := newRepo(t)
	e.project("web", dir, nil)
	e.project("api", dir, nil)
	e.register("a1")

	b1 := e.trigger("web", "main")
	e.runPlanned(c, b1.ID, 2*time.Second, 10*time.Second, store.StatusFailure)
	var b2 api.BuildView
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/retry", b1.ID), nil).want(t, http.StatusCreated, &b2)
	e.runPlanned(c, b2.ID, 4*time.Second, 20*time.Second, store.StatusSuccess,
		protocol.CacheEvent{Kind: "keyed", Op: "restore", Result: "hit", Key: "k", Bytes: 1000},
		protocol.CacheEvent{Kind: "keyed", Op: "restore", Result: "miss", Key: "k2"},
		protocol.CacheEvent{Kind: "keyed", Op: "save", Result: "saved", Key: "k2", Bytes: 99}, // a save: not a restore
	)
	a := e.trigger("api", "main")
	e.runPlanned(c, a.ID, time.Second, 5*time.Second, store.StatusSuccess)

	c.advance(24 * time.Hour) // the next day, 2026-03-10
	b3 := e.trigger("web", "main")
	e.runPlanned(c, b3.ID, 6*time.Second, 30*time.Second, store.StatusSuccess,
		protocol.CacheEvent{Kind: "sticky", Op: "restore", Result: "hit", Key: "/cache", Bytes: 500})
	b4 := e.trigger("web", "main")
	e.waitPlanned(b4.ID)
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", b4.ID), nil).want(t, http.StatusAccepted, nil)
	// A cache report of an attempt that is over records nothing.
	e.agentAPI(fmt.Sprintf("/jobs/%d/caches", e.build(b3.ID).Jobs[0].ID), protocol.CacheEvent{Attempt: 1, Kind: "keyed", Op: "restore", Result: "hit", Bytes: 7}).
		want(t, http.StatusNoContent, nil)

	var web api.InsightsView
	e.api("GET", "/api/v1/insights?project=web&days=7", nil).want(t, http.StatusOK, &web)
	if web.Project != "web" || web.Days != 7 || !web.Since.Equal(time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)) || len(web.PerDay) != 7 {
		t.Fatalf("window: %s", dump(web))
	}
	if web.Builds != (api.BuildCountsView{Total: 4, Success: 2, Failure: 1, Canceled: 1}) || web.FailureRate == nil || *web.FailureRate != 1.0/3 {
		t.Errorf("builds %+v, failure rate %v", web.Builds, web.FailureRate)
	}
	if d := web.PerDay[5]; d != (api.InsightsDayView{Date: "2026-03-09", Success: 1, Failure: 1}) {
		t.Errorf("2026-03-09: %+v", d)
	}
	if d := web.PerDay[6]; d != (api.InsightsDayView{Date: "2026-03-10", Success: 1, Canceled: 1}) {
		t.Errorf("2026-03-10: %+v", d)
	}
	if web.PerDay[0] != (api.InsightsDayView{Date: "2026-03-04"}) {
		t.Errorf("2026-03-04: %+v", web.PerDay[0])
	}
	// Queued 2 s, 4 s, 6 s: the 2nd and 3rd by nearest rank.
	if web.QueueTime != (api.PercentilesView{Count: 3, P50MS: 4000, P95MS: 6000, MaxMS: 6000}) {
		t.Errorf("queue time %+v", web.QueueTime)
	}
	if len(web.Jobs) != 1 || web.Jobs[0] != (api.JobInsightsView{Project: "web", Name: "test", Runs: 3, Failures: 1,
		Duration: api.PercentilesView{Count: 3, P50MS: 20000, P95MS: 30000, MaxMS: 30000}}) {
		t.Errorf("jobs %+v", web.Jobs)
	}
	if web.Cache.Restores != 3 || web.Cache.Hits != 2 || web.Cache.HitRate == nil || *web.Cache.HitRate != 2.0/3 || web.Cache.BytesRestored != 1500 {
		t.Errorf("cache %+v", web.Cache)
	}
	if len(web.Slowest) != 3 || web.Slowest[0].BuildID != b3.ID || web.Slowest[0].DurationMS != 30000 || web.Slowest[1].BuildID != b2.ID ||
		web.Slowest[2].BuildID != b1.ID || web.Slowest[2].Status != store.StatusFailure {
		t.Errorf("slowest %+v", web.Slowest)
	}
	if len(web.Flaky) != 1 || web.Flaky[0].Job != "test" || web.Flaky[0].Flips != 1 || web.Flaky[0].Commits != 1 ||
		web.Flaky[0].LastFailedBuild != b1.ID || web.Flaky[0].LastPassedBuild != b2.ID || web.Flaky[0].LastCommit != e.build(b1.ID).Commit {
		t.Errorf("flaky %+v", web.Flaky)
	}

	// The dashboard's page shows the same figures, in its charts and
	// tables.
	page := e.do(e.admin, "GET", "/insights?project=web&days=7", nil, nil)
	for _, want := range []string{`id="f-builds">4<`, `id="f-failure">33.3%<`, `id="f-queue">4s / 6s<`, `id="f-cache">66.7%<`,
		`<td>web</td><td>test</td><td>3</td><td>1</td><td>0</td><td>20s</td><td>30s</td><td>30s</td>`,
		`<tr><td>2026-03-09</td><td>1</td><td>1</td><td>0</td><td>0</td></tr>`, `<title>passed: 1</title>`, `p50 20s · p95 30s`,
		fmt.Sprintf(`href="/builds/%d">#%d failed</a>`, b1.ID, b1.Number)} {
		if page.code != http.StatusOK || !strings.Contains(string(page.body), want) {
			t.Errorf("insights page (HTTP %d) lacks %s", page.code, want)
		}
	}
	if t.Failed() {
		t.Logf("the page:\n%s", page.body)
	}

	// Overall, an admin sees both projects.
	var all api.InsightsView
	e.api("GET", "/api/v1/insights?days=30", nil).want(t, http.StatusOK, &all)
	if all.Project != "" || all.Days != 30 || len(all.PerDay) != 30 || all.Builds.Total != 5 || all.Builds.Success != 3 || len(all.Jobs) != 2 || all.QueueTime.Count != 4 {
		t.Errorf("overall: %s", dump(all))
	}

	// A viewer of web: overall is web's; api's and an unknown project's
	// are refused alike.
	e.setRole("web", "sub-v", "", "viewer")
	viewer := e.signIn("sub-v", "v@example.com")
	var mine api.InsightsView
	e.do(viewer, "GET", "/api/v1/insights", nil, nil).want(t, http.StatusOK, &mine)
	if mine.Builds != web.Builds || len(mine.Jobs) != 1 || mine.Jobs[0].Project != "web" || mine.Cache.Hits != web.Cache.Hits || mine.Cache.Restores != web.Cache.Restores {
		t.Errorf("viewer's overall: %s", dump(mine))
	}
	e.do(viewer, "GET", "/api/v1/insights?project=api", nil, nil).wantError(t, http.StatusForbidden, "forbidden", `"api"`)
	e.do(viewer, "GET", "/api/v1/insights?project=nope", nil, nil).wantError(t, http.StatusForbidden, "forbidden", `"nope"`)
	nobody := e.signIn("sub-n", "n@example.com")
	var none api.InsightsView
	e.do(nobody, "GET", "/api/v1/insights", nil, nil).want(t, http.StatusOK, &none)
	if none.Builds.Total != 0 || len(none.Jobs)+len(none.Slowest)+len(none.Flaky) != 0 || none.FailureRate != nil {
		t.Errorf("a user with no role sees %s", dump(none))
	}
	e.api("GET", "/api/v1/insights?project=nope", nil).wantError(t, http.StatusNotFound, "not_found", "nope")
	for _, days := range []string{"14", "x", "0"} {
		e.api("GET", "/api/v1/insights?days="+days, nil).wantError(t, http.StatusBadRequest, "invalid", "days")
	}
	e.do("", "GET", "/api/v1/insights", nil, nil).wantError(t, http.StatusUnauthorized, "unauthorized")
}
