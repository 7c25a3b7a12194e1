package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// reserve is a file of preallocated space in the data directory. When the
// disk fills, SQLite cannot even delete (a delete writes to its
// write-ahead log), so nothing could be freed through Kiln; a delete that
// fails on a full disk releases the reserve (store.Reserve) and is tried
// again. The reserve is made again once the disk has room for it twice
// over (ensure, from the health loop).
type reserve struct {
	path string
	size int64
	log  *slog.Logger

	mu sync.Mutex
}

func newReserve(path string, size int64, log *slog.Logger) *reserve {
	return &reserve{path: path, size: size, log: log}
}

// Release deletes the reserve file; it reports whether there was one.
func (r *reserve) Release() bool {
	if r == nil || r.size <= 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.Remove(r.path); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.log.Error("disk full: cannot release the reserve", "path", r.path, "err", err)
		}
		return false
	}
	r.log.Warn("disk full: released the reserve so deletes can run; free space in the data directory (it is made again once there is room)",
		"path", r.path, "bytes", r.size)
	return true
}

// ensure makes the reserve file when it is missing (or short) and the disk
// has room for it twice over. It reports whether the reserve is in place.
func (r *reserve) ensure() (bool, error) {
	if r == nil || r.size <= 0 {
		return true, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if fi, err := os.Stat(r.path); err == nil && fi.Size() >= r.size {
		return true, nil
	}
	free, err := freeBytes(r.path)
	if err != nil {
		return false, err
	}
	if free < 2*r.size {
		return false, nil
	}
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	// Allocated, not sparse: the space must really be taken to be freed later.
	err = unix.Fallocate(int(f.Fd()), 0, 0, r.size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = writeZeros(f, r.size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(r.path)
		return false, fmt.Errorf("reserve %s: %w", r.path, err)
	}
	return true, nil
}

func writeZeros(f *os.File, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// freeBytes is the space left for unprivileged writers on path's filesystem.
func freeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	dir := path
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// diskHealth fails while dir's filesystem has less than min bytes free.
func diskHealth(dir string, min int64) func(context.Context) error {
	return func(context.Context) error {
		if min <= 0 {
			return nil
		}
		free, err := freeBytes(dir)
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		if free < min {
			return fmt.Errorf("data directory %s: disk full: %d bytes free (under %d)", dir, free, min)
		}
		return nil
	}
}
