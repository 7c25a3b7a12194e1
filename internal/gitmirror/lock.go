package gitmirror

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// A mirror is guarded at two levels. Inside the process, an rwLock: many
// readers (a clone, a file read) or one writer (init, fetch). Across
// processes sharing the directory, flock(2) on a lock file beside the
// mirror, shared or exclusive likewise. The in-process lock is taken first,
// so at most one goroutine per process waits in flock for a writer's turn.
// The lock file lives outside the mirror directory so that removing a
// broken mirror never removes the lock, and it is never deleted.

// rwLock is a readers-writer lock whose waits honour a context. Waiting
// writers go first, so a stream of readers cannot starve a fetch.
type rwLock struct {
	mu             sync.Mutex
	readers        int
	writer         bool
	waitingWriters int
	changed        chan struct{} // closed and replaced on every release
}

func newRWLock() *rwLock { return &rwLock{changed: make(chan struct{})} }

func (l *rwLock) lock(ctx context.Context, exclusive bool) error {
	l.mu.Lock()
	if exclusive {
		l.waitingWriters++
	}
	for {
		if exclusive && !l.writer && l.readers == 0 {
			l.waitingWriters--
			l.writer = true
			l.mu.Unlock()
			return nil
		}
		if !exclusive && !l.writer && l.waitingWriters == 0 {
			l.readers++
			l.mu.Unlock()
			return nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			if exclusive {
				l.waitingWriters--
				l.broadcast() // readers held back for us may go
			}
			l.mu.Unlock()
			return ctx.Err()
		}
		l.mu.Lock()
	}
}

func (l *rwLock) unlock(exclusive bool) {
	l.mu.Lock()
	if exclusive {
		l.writer = false
	} else {
		l.readers--
	}
	l.broadcast()
	l.mu.Unlock()
}

// broadcast wakes every waiter. Called with l.mu held.
func (l *rwLock) broadcast() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// fileLock takes flock(2) on path, shared or exclusive, and returns the
// func that releases it. flock cannot be interrupted, so it runs in its own
// goroutine; if ctx ends first, that goroutine releases the lock as soon as
// it gets it.
func fileLock(ctx context.Context, path string, exclusive bool) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("gitmirror: lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	// Uncontended, the common case: no goroutine.
	if err := flock(f, how|syscall.LOCK_NB); err == nil {
		return func() { f.Close() }, nil // closing the file releases the lock
	}
	got := make(chan error, 1)
	go func() { got <- flock(f, how) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("gitmirror: lock: %w", err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		go func() {
			<-got
			f.Close()
		}()
		return nil, ctx.Err()
	}
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}
