package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store/storetest"

	"github.com/kilnci/kiln/internal/store"
)

// newRetentionServer is a server that is not serving (no loops run): the
// test drives PruneLogs itself, with its own clock.
func newRetentionServer(t *testing.T, policy RetentionPolicy) (*Server, *time.Time) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database = storetest.Database(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.LogRetention = policy
	cfg.ReserveBytes = 0
	srv, err := New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	now := time.Now()
	srv.now = func() time.Time { return now }
	srv.Store.SetClock(srv.now) // builds finish by the same clock
	return srv, &now
}

// finishedBuild stores a finished build of p whose job logged n lines of 100 bytes.
func finishedBuild(t *testing.T, st *store.Store, p *store.Project, n int) (buildID, jobID int64) {
	t.Helper()
	ctx := context.Background()
	b := &store.Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := st.PlanBuild(ctx, b.ID, "abc", []*store.Job{{Name: "test", Spec: []byte(`{}`), TimeoutSeconds: 60, MaxAttempts: 1}}); err != nil {
		t.Fatal(err)
	}
	j, err := st.ClaimJob(ctx, store.Claim{AgentID: "a1", Lease: time.Minute, StepNames: func([]byte) []string { return nil }, AliveWithin: time.Minute})
	if err != nil || j == nil {
		t.Fatalf("claim: %v %v", j, err)
	}
	var lines []store.LogLine
	for i := range n {
		lines = append(lines, store.LogLine{Seq: int64(i + 1), Time: time.Now(), Text: strings.Repeat("x", 100)})
	}
	if err := st.AppendLogs(ctx, j.ID, j.Attempt, lines); err != nil {
		t.Fatal(err)
	}
	zero := 0
	if _, err := st.FinishJob(ctx, j.ID, j.Attempt, store.StatusSuccess, &zero, "", 0); err != nil {
		t.Fatal(err)
	}
	return b.ID, j.ID
}

func logCount(t *testing.T, st *store.Store, jobID int64) int {
	t.Helper()
	lines, err := st.Logs(context.Background(), jobID, 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(lines)
}

func prunedAt(t *testing.T, st *store.Store, buildID int64) *time.Time {
	t.Helper()
	b, err := st.Build(context.Background(), buildID)
	if err != nil {
		t.Fatal(err)
	}
	return b.LogsPrunedAt
}

// Logs older than the retention are pruned (in batches: more lines than
// one batch), the build records when, and the API shows it; younger
// builds and projects that keep their logs forever are left alone.
func TestLogRetentionByAge(t *testing.T) {
	srv, now := newRetentionServer(t, RetentionPolicy{MaxAge: 30 * 24 * time.Hour})
	st, ctx := srv.Store, context.Background()
	app := &store.Project{Name: "app", CloneURL: "/tmp/x", DefaultBranch: "main"}
	keep := &store.Project{Name: "keep", CloneURL: "/tmp/y", DefaultBranch: "main"}
	for _, p := range []*store.Project{app, keep} {
		if err := st.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	zero := 0
	if err := st.SetLogRetention(ctx, keep.ID, store.LogRetention{Days: &zero}); err != nil {
		t.Fatal(err)
	}
	oldBuild, oldJob := finishedBuild(t, st, app, 4500)
	keptBuild, keptJob := finishedBuild(t, st, keep, 10)

	*now = now.Add(20 * 24 * time.Hour)
	newBuild, newJob := finishedBuild(t, st, app, 10) // 20 days younger
	if n, err := srv.PruneLogs(ctx); err != nil || n != 0 {
		t.Fatalf("pruned %d (%v) at 20 days, want none", n, err)
	}
	*now = now.Add(11 * 24 * time.Hour)
	if n, err := srv.PruneLogs(ctx); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v) at 31 days, want the old build", n, err)
	}
	if logCount(t, st, oldJob) != 0 || prunedAt(t, st, oldBuild) == nil {
		t.Fatalf("old build: %d lines left, pruned at %v", logCount(t, st, oldJob), prunedAt(t, st, oldBuild))
	}
	if logCount(t, st, newJob) != 10 || prunedAt(t, st, newBuild) != nil {
		t.Fatal("a build younger than the retention lost its logs")
	}
	if logCount(t, st, keptJob) != 10 || prunedAt(t, st, keptBuild) != nil {
		t.Fatal("a project with log_retention_days 0 lost logs")
	}

	// The API shows it.
	rec := httptest.NewRecorder()
	tok, _, _ := srv.EnsureAdminToken(ctx)
	req := httptest.NewRequest("GET", fmt.Sprintf("/api/v1/builds/%d", oldBuild), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	srv.API.ServeHTTP(rec, req)
	var view map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &view) != nil || view["logs_pruned_at"] == nil {
		t.Fatalf("build view: %d %s", rec.Code, rec.Body.String())
	}
	// Pruned once: a later pass prunes only what has aged since.
	*now = now.Add(20 * 24 * time.Hour)
	if n, err := srv.PruneLogs(ctx); err != nil || n != 1 || prunedAt(t, st, newBuild) == nil {
		t.Fatalf("later pass pruned %d (%v), want only the newer build", n, err)
	}
}

// A project over its log size budget loses its oldest builds' logs first,
// down to the budget; a per-project budget overrides the server's.
func TestLogRetentionBySize(t *testing.T) {
	srv, _ := newRetentionServer(t, RetentionPolicy{MaxBytes: 1 << 30})
	st, ctx := srv.Store, context.Background()
	p := &store.Project{Name: "app", CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	var builds, jobs []int64
	for range 4 {
		b, j := finishedBuild(t, st, p, 100) // 10,000 bytes each
		builds, jobs = append(builds, b), append(jobs, j)
	}
	if n, err := srv.PruneLogs(ctx); err != nil || n != 0 {
		t.Fatalf("pruned %d (%v) under the server's budget", n, err)
	}
	// Through the API, as `kiln project set app -log-max-bytes 25000` does.
	tok, _, _ := srv.EnsureAdminToken(ctx)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("PATCH", "/api/v1/projects/app", strings.NewReader(`{"log_max_bytes": 25000}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	srv.API.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"log_max_bytes":25000`) {
		t.Fatalf("PATCH: %d %s", rec.Code, rec.Body.String())
	}
	if n, err := srv.PruneLogs(ctx); err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want the two oldest builds", n, err)
	}
	for i, j := range jobs {
		pruned := i < 2
		if got := logCount(t, st, j) == 0; got != pruned || (prunedAt(t, st, builds[i]) != nil) != pruned {
			t.Errorf("build %d: pruned %v, want %v", i, got, pruned)
		}
	}
	// A negative size is refused, not stored.
	rec = httptest.NewRecorder()
	req = httptest.NewRequest("PATCH", "/api/v1/projects/app", strings.NewReader(`{"log_max_bytes": -5}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	srv.API.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("PATCH -5: %d %s", rec.Code, rec.Body.String())
	}
}
