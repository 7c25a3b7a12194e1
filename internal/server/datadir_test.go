package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// syncBuffer is a log sink for one server.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// TestDataDirPrivate: with the usual umask (022), a new data directory is
// 0700 and the database (with its -wal and -shm), the secret key, the
// tokens, the reserve and the cache's directories are 0600 / 0700; a data
// directory an older Kiln left readable by everyone is narrowed at start,
// each change logged.
func TestDataDirPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(log *slog.Logger) (stop func()) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.DataDir = dir
		cfg.Listen = "127.0.0.1:0"
		cfg.ReserveBytes = 1 << 20
		srv, err := New(context.Background(), cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		// Writes: the tokens' rows and files.
		if _, _, err := srv.EnsureAdminToken(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.LocalAgentToken(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return func() { srv.Close() }
	}
	files := []string{"kiln.db", "kiln.db-wal", "kiln.db-shm", "secret.key", "admin-token", "agent-token", "reserve", "server.id"}
	dirs := []string{".", "tmp", "git", "cache", "cache/blobs", "artifacts"}
	check := func() {
		t.Helper()
		for _, f := range files {
			wantMode(t, filepath.Join(dir, f), 0o600)
		}
		for _, d := range dirs {
			wantMode(t, filepath.Join(dir, d), 0o700)
		}
	}

	stop := start(testLogger())
	check()
	stop() // one server per data dir (TestOneServerPerDataDir)

	// As an older Kiln left it: everything readable by everyone, a blob too.
	blob := filepath.Join(dir, "cache", "blobs", "1")
	if err := os.WriteFile(blob, []byte("cached"), 0o644); err != nil {
		t.Fatal(err)
	}
	widened := map[string]bool{}
	for _, f := range append(files, "cache/blobs/1") {
		// (SQLite removed its -wal and -shm when the server closed.)
		if os.Chmod(filepath.Join(dir, f), 0o644) == nil {
			widened[filepath.Join(dir, f)] = true
		}
	}
	for _, d := range dirs {
		os.Chmod(filepath.Join(dir, d), 0o755)
		widened[filepath.Clean(filepath.Join(dir, d))] = true
	}
	var logs syncBuffer
	start(slog.New(slog.NewJSONHandler(&logs, nil)))
	check()
	wantMode(t, blob, 0o600)

	fixed := map[string]bool{}
	for _, line := range bytes.Split(logs.b.Bytes(), []byte("\n")) {
		var rec struct{ Msg, Path, Was, Now string }
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "data directory: narrowed a mode other users could read or write" {
			continue
		}
		fixed[rec.Path] = true
		if rec.Was != "-rw-r--r--" && rec.Was != "-rwxr-xr-x" {
			t.Errorf("%s: logged as was %s", rec.Path, rec.Was)
		}
	}
	for p := range widened {
		if !fixed[p] {
			t.Errorf("%s narrowed without a log line (logged: %v)", p, fixed)
		}
	}
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// A second server on a data dir another one uses is refused (they would
// share the SQLite file, the mirrors and the leader lease's holder id);
// once the first has closed, a server on it is the same holder again.
func TestOneServerPerDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.ReserveBytes = 0
	first, err := New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := os.ReadFile(filepath.Join(dir, "server.id"))
	if _, err := New(context.Background(), cfg, testLogger()); err == nil || !strings.Contains(err.Error(), "in use by another kiln server") {
		t.Fatalf("a second server on the data dir: %v", err)
	}
	first.Close()
	again, err := New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	defer again.Close()
	if id2, _ := os.ReadFile(filepath.Join(dir, "server.id")); len(id) == 0 || string(id2) != string(id) {
		t.Fatalf("server id %q, then %q", id, id2)
	}
}
