package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// waitLimit bounds every wait; it is a safety net, not a timing assertion.
const waitLimit = time.Minute

func waitUntil(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never %s; %s", what, state())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("KILN_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// smallDisk mounts a tmpfs of size bytes on a fresh directory (root only).
func smallDisk(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes path until the disk is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// The last bytes, block by block.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
}

type client struct {
	t     *testing.T
	base  string
	token string
}

func (c *client) do(token, method, path string, body any) (int, string) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set(protocol.Header, protocol.Version) // for the agent protocol's routes
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// A full data directory: /healthz says 503 and why; an agent's heartbeat is
// refused with 503; `project rm` still works (the reserve is released for
// it); once space returns the store writes again, the reserve is made
// again, and the lease that expired meanwhile is blamed on the store, not
// on the agent.
func TestDiskFull(t *testing.T) {
	dir := smallDisk(t, 16<<20)
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.ReserveBytes = 2 << 20
	cfg.MinFreeBytes = 1 << 20
	cfg.HealthEvery = 100 * time.Millisecond
	cfg.Scheduler.Lease = 5 * time.Second
	cfg.Scheduler.PollInterval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := srv.Listen()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	reservePath := filepath.Join(dir, "reserve")
	if fi, err := os.Stat(reservePath); err != nil || fi.Size() != cfg.ReserveBytes {
		t.Fatalf("reserve not made: %v %v", fi, err)
	}
	admin, _, err := srv.EnsureAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agentTok, err := srv.LocalAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, base: "http://" + ln.Addr().String()}
	st := srv.Store

	// A project with a running job, and one with logs to delete.
	app := &store.Project{Name: "app", CloneURL: "/tmp/x", DefaultBranch: "main"}
	old := &store.Project{Name: "old", CloneURL: "/tmp/y", DefaultBranch: "main"}
	for _, p := range []*store.Project{app, old} {
		if err := st.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		b := &store.Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
		if err := st.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := st.PlanBuild(ctx, b.ID, "abc", []*store.Job{{Name: "test", Spec: []byte(`{}`), TimeoutSeconds: 600, MaxAttempts: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func() *store.Job {
		j, err := st.ClaimJob(ctx, store.Claim{AgentID: "a1", Lease: cfg.Scheduler.Lease, StepNames: func([]byte) []string { return nil }, AliveWithin: time.Minute})
		if err != nil || j == nil {
			t.Fatalf("claim: %v %v", j, err)
		}
		return j
	}
	running, oldJob := claim(), claim()
	if running.BuildID > oldJob.BuildID {
		running, oldJob = oldJob, running
	}
	var lines []store.LogLine
	for i := range 2000 {
		lines = append(lines, store.LogLine{Seq: int64(i + 1), Time: time.Now(), Text: strings.Repeat("log line ", 20)})
	}
	if err := st.AppendLogs(ctx, oldJob.ID, oldJob.Attempt, lines); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FinishJob(ctx, oldJob.ID, oldJob.Attempt, store.StatusFailure, nil, "", 0); err != nil {
		t.Fatal(err)
	}
	if code, body := c.do("", "GET", "/healthz", nil); code != http.StatusOK {
		t.Fatalf("healthz before: %d %s", code, body)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// A running job goes on logging: it takes what room SQLite's
	// write-ahead log still had, batch by batch, to the last line.
	seq := int64(0)
	for _, n := range []int{1000, 100, 10, 1} {
		for {
			var batch []store.LogLine
			for range n {
				seq++
				batch = append(batch, store.LogLine{Seq: seq, Time: time.Now(), Text: strings.Repeat("x", 200)})
			}
			err := st.AppendLogs(ctx, running.ID, running.Attempt, batch)
			if errors.Is(err, store.ErrCannotWrite) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	code, body := c.do("", "GET", "/healthz", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "full") {
		t.Fatalf("healthz on a full disk: %d %s, want 503 naming the full disk", code, body)
	}
	hb := fmt.Sprintf("/api/v1/agent/jobs/%d/heartbeat", running.ID)
	if code, body := c.do(agentTok, "POST", hb, map[string]int{"attempt": running.Attempt}); code != http.StatusServiceUnavailable {
		t.Fatalf("heartbeat on a full disk: %d %s, want 503", code, body)
	}

	// Deleting works: the reserve is given up for it.
	if code, body := c.do(admin, "DELETE", "/api/v1/projects/old", nil); code != http.StatusNoContent {
		t.Fatalf("project rm on a full disk: %d %s", code, body)
	}
	if _, err := os.Stat(reservePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reserve still there after the delete it made possible: %v", err)
	}
	if _, err := st.ProjectByName(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("project still there: %v", err)
	}

	// Space returns: the store writes, the reserve comes back.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "healthy again", func() bool { code, _ := c.do("", "GET", "/healthz", nil); return code == http.StatusOK },
		func() string { _, b := c.do("", "GET", "/healthz", nil); return b })
	waitUntil(t, "the reserve made again", func() bool { fi, err := os.Stat(reservePath); return err == nil && fi.Size() == cfg.ReserveBytes },
		func() string { return "no reserve file" })

	// The lease the agent could not renew expires, blamed on the store.
	var j *store.Job
	waitUntil(t, "the lease expired", func() bool {
		j, err = st.Job(ctx, running.ID)
		return err == nil && j.Status == store.StatusQueued
	}, func() string { return fmt.Sprintf("job %+v %v", j, err) })
	if !strings.Contains(j.Error, "server could not write to its store") || !strings.Contains(j.Error, "full") || strings.Contains(j.Error, "agent lost") {
		t.Fatalf("lease expiry error %q: want it to name the store's full disk", j.Error)
	}
}
