package gitmirror

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
)

func TestRWLock(t *testing.T) {
	l := newRWLock()
	bg := context.Background()
	canceled, cancel := context.WithCancel(bg)
	cancel()

	// Readers share.
	if err := l.lock(bg, false); err != nil {
		t.Fatal(err)
	}
	if err := l.lock(canceled, false); err != nil {
		t.Fatalf("second reader: %v", err)
	}
	// A writer waits for them; its wait ends with its context.
	if err := l.lock(canceled, true); err != context.Canceled {
		t.Fatalf("writer with a canceled context: %v", err)
	}
	got := make(chan error)
	go func() { got <- l.lock(bg, true) }()
	waitFor(func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.waitingWriters == 1 })

	// A waiting writer holds new readers back.
	if err := l.lock(canceled, false); err != context.Canceled {
		t.Fatalf("reader behind a waiting writer: %v", err)
	}
	l.unlock(false)
	l.unlock(false)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := l.lock(canceled, false); err != context.Canceled {
		t.Fatalf("reader while a writer holds the lock: %v", err)
	}
	l.unlock(true)
	if err := l.lock(canceled, false); err != nil {
		t.Fatalf("reader after the writer: %v", err)
	}
}

func TestFileLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	bg := context.Background()
	canceled, cancel := context.WithCancel(bg)
	cancel()

	r1, err := fileLock(bg, path, false)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := fileLock(canceled, path, false) // shared with shared: no wait
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fileLock(canceled, path, true); err != context.Canceled {
		t.Fatalf("exclusive while shared: %v", err)
	}
	r1()
	r2()
	w, err := fileLock(canceled, path, true)
	if err != nil {
		t.Fatalf("exclusive when free: %v", err)
	}
	got := make(chan error)
	go func() {
		release, err := fileLock(bg, path, false)
		if err == nil {
			release()
		}
		got <- err
	}()
	w()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// waitFor yields until cond holds.
func waitFor(cond func() bool) {
	for !cond() {
		runtime.Gosched()
	}
}
