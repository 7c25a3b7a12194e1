package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// A build's logs, archived, read the same through the API (every page,
// and the stream), leave no rows in the store; retention then deletes the
// blob. On disk, and on S3 with KILN_TEST_S3.
func TestLogArchive(t *testing.T) {
	t.Run("disk", func(t *testing.T) { testLogArchive(t, nil) })
	t.Run("s3", func(t *testing.T) {
		cfg := blobstoretest.S3Config(t)
		testLogArchive(t, &cfg)
	})
}

func testLogArchive(t *testing.T, s3 *blobstore.S3Config) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database = storetest.Database(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.ReserveBytes = 0
	cfg.LogRetention = RetentionPolicy{MaxAge: 30 * 24 * time.Hour}
	cfg.LogArchiveAfter = 24 * time.Hour
	if s3 != nil {
		cfg.CacheS3 = *s3
		cfg.CacheS3.Prefix = s3.Prefix + "/cache"
		cfg.LogArchiveS3Prefix = s3.Prefix + "/logs"
	}
	ctx := context.Background()
	if s3 == nil && storetest.Postgres() {
		if _, err := New(ctx, cfg, testLogger()); err == nil || !strings.Contains(err.Error(), "must be in S3") {
			t.Fatalf("a local archive on a shared database: %v", err)
		}
		t.Skip("a local log archive is refused on PostgreSQL (other servers could not read it)")
	}
	srv, err := New(ctx, cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	now := time.Now()
	srv.now = func() time.Time { return now }
	srv.Store.SetClock(srv.now)
	st := srv.Store
	p := &store.Project{Name: "app", CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	old, oldJob := finishedBuild(t, st, p, 2500) // more than one page of 1000
	tok, _, _ := srv.EnsureAdminToken(ctx)
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		srv.API.ServeHTTP(rec, req)
		return rec
	}
	// Every page of the job's log, as the API answers them, and the stream.
	pages := func() []string {
		var out []string
		after := int64(0)
		for {
			rec := get(fmt.Sprintf("/api/v1/builds/%d/logs?job=%d&limit=1000&after=%d", old, oldJob, after))
			if rec.Code != http.StatusOK {
				t.Fatalf("logs: %d %s", rec.Code, rec.Body.String())
			}
			out = append(out, rec.Body.String())
			var page []struct {
				Lines     []store.LogLine `json:"lines"`
				Truncated bool            `json:"truncated"`
				Next      int64           `json:"next"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || len(page) != 1 {
				t.Fatalf("logs: %v %s", err, rec.Body.String())
			}
			if !page[0].Truncated {
				return out
			}
			after = page[0].Next
		}
	}
	streamLines := func() []string {
		rec := get(fmt.Sprintf("/api/v1/builds/%d/logs/stream", old))
		var out []string
		sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
		event := ""
		for sc.Scan() {
			if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				event = e
			} else if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && event == "line" {
				out = append(out, d)
			}
		}
		return out
	}
	before, beforeStream := pages(), streamLines()
	if len(before) != 3 || len(beforeStream) != 2500 {
		t.Fatalf("before archiving: %d pages, %d streamed lines; want 3, 2500", len(before), len(beforeStream))
	}

	if n, err := srv.ArchiveLogs(ctx); err != nil || n != 0 {
		t.Fatalf("archived %d (%v) at once, want none", n, err)
	}
	now = now.Add(25 * time.Hour)
	young, youngJob := finishedBuild(t, st, p, 10)
	if n, err := srv.ArchiveLogs(ctx); err != nil || n != 1 {
		t.Fatalf("archived %d (%v) after a day, want the old build", n, err)
	}
	if logCount(t, st, oldJob) != 0 {
		t.Fatalf("archived build: %d lines left in the store", logCount(t, st, oldJob))
	}
	if logCount(t, st, youngJob) != 10 {
		t.Fatal("a young build's logs were archived")
	}
	if b, _ := st.Build(ctx, young); b.LogsArchivedAt != nil {
		t.Fatal("young build marked archived")
	}
	after, afterStream := pages(), streamLines()
	if strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("pages differ after archiving:\nbefore %.300s\nafter  %.300s", before[0], after[0])
	}
	if strings.Join(afterStream, "\n") != strings.Join(beforeStream, "\n") {
		t.Fatalf("stream differs after archiving: %d lines, first %.200s", len(afterStream), afterStream[0])
	}
	name := fmt.Sprintf("builds/%d.jsonl.zst", old)
	if _, err := srv.logArchive.Blobs.Stat(ctx, name); err != nil {
		t.Fatalf("archive blob: %v", err)
	}
	if s3 == nil { // private on disk: the directories 0700, the blob 0600
		for path, want := range map[string]os.FileMode{
			filepath.Join(cfg.DataDir, "log-archive"):           0o700,
			filepath.Join(cfg.DataDir, "log-archive", "builds"): 0o700,
			filepath.Join(cfg.DataDir, "log-archive", name):     0o600,
		} {
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: %v %v, want mode %v", path, fi.Mode(), err, want)
			}
		}
	}

	// Deleting a project deletes its archived logs.
	gone := &store.Project{Name: "gone", CloneURL: "/tmp/y", DefaultBranch: "main"}
	if err := st.CreateProject(ctx, gone); err != nil {
		t.Fatal(err)
	}
	goneBuild, _ := finishedBuild(t, st, gone, 5)
	now = now.Add(25 * time.Hour)
	if n, err := srv.ArchiveLogs(ctx); err != nil || n != 2 { // and the young build of app
		t.Fatalf("archived %d (%v), want 2", n, err)
	}
	goneName := fmt.Sprintf("builds/%d.jsonl.zst", goneBuild)
	if _, err := srv.logArchive.Blobs.Stat(ctx, goneName); err != nil {
		t.Fatalf("archive blob: %v", err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("DELETE", "/api/v1/projects/gone", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	srv.API.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", rec.Code, rec.Body.String())
	}
	if _, err := srv.logArchive.Blobs.Stat(ctx, goneName); err == nil {
		t.Fatal("a deleted project's archived logs are left")
	}

	// Retention deletes the blob with the build's logs.
	now = now.Add(30 * 24 * time.Hour)
	if n, err := srv.PruneLogs(ctx); err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want both builds", n, err)
	}
	if _, err := srv.logArchive.Blobs.Stat(ctx, name); err == nil {
		t.Fatal("the archive blob outlived log retention")
	}
	if _, err := srv.logArchive.Blobs.Stat(ctx, fmt.Sprintf("builds/%d.jsonl.zst", young)); err == nil {
		t.Fatal("the young build's archive blob outlived log retention")
	}
	rec = get(fmt.Sprintf("/api/v1/builds/%d/logs", old))
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"seq"`) {
		t.Fatalf("pruned build's logs: %d %.300s", rec.Code, rec.Body.String())
	}
}

// Off by default, nothing of the archive is made.
func TestLogArchiveOffByDefault(t *testing.T) {
	srv, _ := newRetentionServer(t, RetentionPolicy{})
	if srv.logArchive != nil {
		t.Fatal("a log archive opened with archiving off and none before")
	}
	if _, err := os.Stat(filepath.Join(srv.cfg.DataDir, "log-archive")); err == nil {
		t.Fatal("DATA_DIR/log-archive made with archiving off")
	}
	if n, err := srv.ArchiveLogs(context.Background()); n != 0 || err != nil {
		t.Fatalf("archived %d %v", n, err)
	}
}

// Bad archive settings are refused with the flag's name.
func TestLogArchiveConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	if err := cfg.Validate(); err != nil || cfg.LogArchiveAfter != 0 || cfg.LogArchiveS3Prefix != "kiln-logs" {
		t.Fatalf("default: %v %v %q (want off, kiln-logs)", err, cfg.LogArchiveAfter, cfg.LogArchiveS3Prefix)
	}
	cfg.LogArchiveAfter = -time.Hour
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "log-archive-after") {
		t.Fatalf("negative: %v", err)
	}
	cfg.LogArchiveAfter = 24 * time.Hour
	cfg.CacheS3 = blobstore.S3Config{Endpoint: "s3.example.test", Bucket: "b", Prefix: "kiln"}
	for _, prefix := range []string{"kiln", "kiln/logs", "", "/kiln/"} {
		cfg.LogArchiveS3Prefix = prefix
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "log-archive-s3-prefix") {
			t.Errorf("prefix %q within the cache's %q: %v", prefix, cfg.CacheS3.Prefix, err)
		}
	}
	cfg.LogArchiveS3Prefix = "kiln-logs"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("apart from the cache: %v", err)
	}
}
