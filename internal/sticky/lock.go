package sticky

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Locks are flock(2) locks on files, never counters or pid files: the
// kernel drops them when the process that holds them dies, so a crashed
// agent can never leave a volume looking busy forever. flock locks belong
// to an open file description, so two views in one process conflict (or
// share) exactly as two processes would.
//
// Three kinds:
//   - <vol>/lock, exclusive, held only for short critical sections that
//     read or change which generations and views exist;
//   - gens/<n>/lock, shared by every view based on generation n; GC
//     deletes a generation only if it can take this one exclusively;
//   - jobs/<k>/lock, exclusive while view k is alive; Recover and Prune
//     treat a job directory whose lock is free as a dead job's leftovers.

// lockFile opens path, creating it if create, and flocks it with how
// (unix.LOCK_SH or unix.LOCK_EX), waiting while ctx allows. Close the file
// to release the lock.
func lockFile(ctx context.Context, path string, how int, create bool) (*os.File, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	// Polling rather than a blocking flock in a goroutine: every lock here
	// is held for milliseconds, and a poll honours ctx without leaving a
	// goroutine stuck in the kernel.
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("sticky: flock %s: %w", path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// tryLock takes an exclusive flock on an existing path without waiting and
// returns the locked file. If another open file holds a lock on it, it
// returns held. If the file does not exist, it returns nil, false, nil:
// nobody can hold it then either.
func tryLock(path string) (f *os.File, held bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EWOULDBLOCK {
		f.Close()
		return nil, true, nil
	}
	if err != nil {
		f.Close()
		return nil, false, err
	}
	return f, false, nil
}

// errNoVolume: lockVolume(create=false) of a volume that does not exist
// (any more).
var errNoVolume = errors.New("sticky: no such volume")

// lockVolume takes the volume's lock exclusively. With create, it makes the
// volume directory first if needed.
//
// Prune deletes a volume by renaming its directory to the trash while
// holding this lock. A process that was waiting for the lock then holds it
// on a file that is no longer at <vol>/lock, so after locking we check that
// the path still names the file we locked, and start again if not.
func lockVolume(ctx context.Context, vdir string, create bool) (unlock func(), err error) {
	lockPath := filepath.Join(vdir, "lock")
	for {
		if create {
			if err := os.MkdirAll(vdir, 0o700); err != nil {
				return nil, fmt.Errorf("sticky: %w", err)
			}
		}
		f, err := lockFile(ctx, lockPath, unix.LOCK_EX, create)
		if errors.Is(err, os.ErrNotExist) {
			if create {
				continue // pruned between MkdirAll and open
			}
			return nil, errNoVolume
		}
		if err != nil {
			return nil, err
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, fmt.Errorf("sticky: %w", err)
		}
		err = unix.Stat(lockPath, &now)
		if err == nil && now.Dev == held.Dev && now.Ino == held.Ino {
			return func() { f.Close() }, nil
		}
		f.Close()
		switch {
		case err != nil && err != unix.ENOENT:
			return nil, fmt.Errorf("sticky: %w", err)
		case err != nil && !create:
			return nil, errNoVolume
		}
	}
}
