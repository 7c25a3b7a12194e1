package sticky

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// View is one job attempt's copy-on-write view of a volume. Use:
//
//	w, err := vols.Acquire(ctx, project, path, jobKey)
//	… bind-mount w.MountSource() at path into the job's sandbox, run it,
//	  and destroy the sandbox …
//	if jobSucceeded { stats, err = w.Commit(ctx) } else { err = w.Discard() }
//
// Commit and Discard must be called only after the sandbox is gone. An
// overlay view protects itself: Commit makes it read-only everywhere it is
// mounted before reading the job's writes, and refuses if a file in it is
// still open for writing. A copy cannot: a process still writing into it
// would write into the new generation. Both release the view; after
// either, Discard is a no-op. A View is safe for use by several goroutines.
type View struct {
	v       *Volumes
	project string
	path    string
	jobKey  string
	vdir    string // the volume's directory
	jdir    string // vdir/jobs/<jobKey>
	base    int64  // generation the view started from; 0: cold
	bytes   int64  // its size
	overlay bool   // an overlay mount, else a copy
	source  string

	mu       sync.Mutex
	released bool
	genLock  *os.File // shared lock on gens/<base>/lock; nil when cold
	jobLock  *os.File // exclusive lock on jdir/lock
}

// PromoteStats says what Commit did.
type PromoteStats struct {
	// Promoted: a new generation became current. When false, Reason says
	// why ("no changes", or over the budget) and the current generation is
	// untouched.
	Promoted bool
	Reason   string
	// Generation is the volume's current generation after Commit.
	Generation int64
	// Base is the generation the view started from (0: cold). Previous is
	// the generation that was current just before the switch: when it is
	// not Base, another job promoted in between and this job's generation,
	// built on Base, superseded it (last writer wins).
	Base, Previous int64
	// Bytes is the size of the new generation: the apparent size of its
	// regular files, hard links counted once (when over the budget, how
	// far the count got before it stopped). Entries counts its files,
	// directories and symlinks.
	Bytes, Entries int64
	// InPlace: the job's writes were applied to its base generation's
	// tree (it was current and nobody else used it) instead of a new
	// tree cloned from it; see inplace.go.
	InPlace bool
	// Written and Deleted count the entries the job wrote and deleted
	// (overlay mode only: a copy has no record of what changed).
	Written, Deleted int
}

// genInfo is gens/<n>/info.json.
type genInfo struct {
	Bytes   int64     `json:"bytes"`
	Entries int64     `json:"entries"`
	Created time.Time `json:"created"`
	Base    int64     `json:"base"`
	JobKey  string    `json:"job_key"`
}

// MountSource returns the host directory to bind-mount at the cache path.
func (w *View) MountSource() string { return w.source }

// Warm reports whether the view started from a generation (a hit), rather
// than empty (a miss).
func (w *View) Warm() bool { return w.base != 0 }

// Bytes returns the size of the generation the view started from (0 when
// cold).
func (w *View) Bytes() int64 { return w.bytes }

// Generation returns the generation the view started from (0 when cold).
func (w *View) Generation() int64 { return w.base }

// Acquire prepares a view of project's volume for path, for one job
// attempt; jobKey must be unique per attempt (e.g. "123-1") among the
// live views of the volume.
func (v *Volumes) Acquire(ctx context.Context, project, path, jobKey string) (*View, error) {
	vdir, err := v.volumeDir(project, path)
	if err != nil {
		return nil, err
	}
	if err := checkJobKey(jobKey); err != nil {
		return nil, err
	}
	w := &View{
		v: v, project: project, path: path, jobKey: jobKey,
		vdir: vdir, jdir: filepath.Join(vdir, "jobs", jobKey),
		overlay: v.overlay,
	}
	if err := w.reserve(ctx); err != nil {
		return nil, err
	}
	if err := w.prepare(ctx); err != nil {
		w.mu.Lock()
		w.released = true
		w.mu.Unlock()
		return nil, errors.Join(err, w.release())
	}
	w.v.log.Debug("sticky: view acquired", "project", project, "path", path, "job", jobKey,
		"warm", w.Warm(), "generation", w.base, "bytes", w.bytes, "mode", map[bool]string{true: "overlay", false: "copy"}[w.overlay])
	return w, nil
}

// reserve, under the volume lock, picks the base generation and takes the
// locks that keep it and the job directory alive for the view's lifetime.
// It is the only place a generation lock is taken, and GC only deletes a
// generation under the same volume lock, so a generation cannot be
// deleted between "read current" and "lock it".
func (w *View) reserve(ctx context.Context) (err error) {
	unlock, err := lockVolume(ctx, w.vdir, true)
	if err != nil {
		return err
	}
	defer unlock()
	defer func() {
		if err != nil {
			w.closeLocks()
		}
	}()
	if err := w.writeMeta(); err != nil {
		return err
	}
	if err := touchUsed(w.vdir); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	base, cerr := readCurrent(w.vdir)
	if cerr != nil {
		w.v.log.Warn("sticky: volume has a broken current generation; starting cold", "project", w.project, "path", w.path, "err", cerr)
	}
	w.base = base
	if w.base != 0 {
		gdir := genDir(w.vdir, w.base)
		if w.genLock, err = lockFile(ctx, filepath.Join(gdir, "lock"), unix.LOCK_SH, false); err != nil {
			return fmt.Errorf("sticky: lock generation: %w", err)
		}
		var info genInfo
		if b, err := os.ReadFile(filepath.Join(gdir, "info.json")); err == nil && json.Unmarshal(b, &info) == nil {
			w.bytes = info.Bytes
		}
	}
	if err := os.MkdirAll(filepath.Join(w.vdir, "jobs"), 0o700); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	// A job directory already here is a live view with the same key, or
	// the leftovers of a dead one (its lock is free) that no Recover has
	// removed yet.
	if _, err := os.Lstat(w.jdir); err == nil {
		trash, alive, err := w.v.removeDeadJob(w.vdir, w.jobKey)
		if alive {
			return fmt.Errorf("%w: %s for %s %s", ErrViewBusy, w.jobKey, w.project, w.path)
		}
		if err != nil {
			return err
		}
		// Deleted after the volume lock is released (defers run last first).
		defer func() { emptyTrash([]string{trash}) }()
	}
	if err := os.Mkdir(w.jdir, 0o700); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	if w.jobLock, err = lockFile(ctx, filepath.Join(w.jdir, "lock"), unix.LOCK_EX, true); err != nil {
		return fmt.Errorf("sticky: lock view: %w", err)
	}
	return nil
}

// writeMeta records the volume's project and path, once.
func (w *View) writeMeta() error {
	p := filepath.Join(w.vdir, "meta.json")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	b, _ := json.Marshal(meta{Project: w.project, Path: w.path})
	if err := writeFileAtomic(p, b); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	return nil
}

// prepare makes the view's directory: an overlay mount, or a copy. It runs
// outside the volume lock (a copy can take long); the generation lock
// keeps the base alive meanwhile.
func (w *View) prepare(ctx context.Context) error {
	lower := filepath.Join(w.jdir, "empty")
	if w.base != 0 {
		lower = filepath.Join(genDir(w.vdir, w.base), "tree")
	} else if err := os.Mkdir(lower, 0o755); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	if w.overlay {
		err := w.mountView(lower)
		if err == nil {
			return nil
		}
		w.v.log.Warn("sticky: overlay mount failed; this view is a full copy", "project", w.project, "path", w.path, "job", w.jobKey, "err", err)
		if err := removeTree(filepath.Join(w.jdir, "merged")); err != nil {
			return err
		}
		w.overlay = false
	}
	w.source = filepath.Join(w.jdir, "copy")
	if w.base == 0 {
		if err := os.Mkdir(w.source, 0o755); err != nil {
			return fmt.Errorf("sticky: %w", err)
		}
		return nil
	}
	return copyTree(ctx, lower, w.source)
}

func (w *View) mountView(lower string) error {
	upper, work, merged := filepath.Join(w.jdir, "upper"), filepath.Join(w.jdir, "work"), filepath.Join(w.jdir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	// The merged root shows the upper root's owner, mode and times, so the
	// upper root starts as a copy of the lower root's; what the job then
	// changes on it is what Commit carries over.
	if err := copyDirMeta(lower, upper); err != nil {
		return err
	}
	if err := mountOverlay(lower, upper, work, merged, w.v.overlayOpts); err != nil {
		return err
	}
	w.source = merged
	return nil
}

// Discard drops the job's writes and releases the view. Safe to call
// after Commit (a no-op) and more than once.
func (w *View) Discard() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.released {
		return nil
	}
	w.released = true
	return w.release()
}

// Commit promotes the job's writes into a new generation, makes it the
// volume's current one atomically, and releases the view. It promotes
// nothing, and says why in the stats, when the job wrote nothing or the
// result is over the budget. On error nothing is promoted; the view is
// released either way.
func (w *View) Commit(ctx context.Context) (stats PromoteStats, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.released {
		return PromoteStats{}, ErrReleased
	}
	w.released = true
	defer func() {
		if rerr := w.release(); rerr != nil && err == nil {
			err = rerr
		}
		if !stats.Promoted {
			stats.Generation, _ = readCurrent(w.vdir)
		}
	}()
	stats = PromoteStats{Base: w.base}
	if w.overlay {
		// Freeze the view before reading its upper layer. A read-only
		// remount changes the overlay's superblock, not just our mount, so
		// it also stops writes through every bind mount of the view (a
		// sandbox that is somehow still alive included), and the kernel
		// refuses it while any file in the view is open for writing. After
		// it, nothing can change the upper layer, and a mount still busy
		// (a reader, a cwd) can safely be detached.
		if err := freeze(w.source); err != nil {
			return stats, fmt.Errorf("sticky: commit %s: the view is still being written (is the sandbox gone?): %w", w.jobKey, err)
		}
		if err := unmount(w.source, true); err != nil {
			return stats, fmt.Errorf("sticky: commit %s: %w", w.jobKey, err)
		}
	}
	if w.overlay {
		// An empty upper layer: the job changed nothing.
		names, err := readNames(filepath.Join(w.jdir, "upper"))
		if err != nil {
			return stats, fmt.Errorf("sticky: %w", err)
		}
		if len(names) == 0 {
			stats.Reason = "no changes"
			return stats, touchUsed(w.vdir)
		}
	}
	if done, err := w.commitInPlace(ctx, &stats); done || err != nil {
		stats.Promoted = done
		return stats, err
	}
	next := filepath.Join(w.jdir, "next")
	tree := filepath.Join(next, "tree")
	if err := w.build(ctx, next, &stats); err != nil {
		return stats, err
	}

	stats.Bytes, stats.Entries, err = treeSize(ctx, tree, max(w.v.maxBytes, -1))
	if errors.Is(err, errOverBudget) {
		stats.Reason = fmt.Sprintf("over budget: the new generation is over %d bytes (counted %d before stopping); keeping the current one", w.v.maxBytes, stats.Bytes)
		w.v.log.Warn("sticky: not promoting: "+stats.Reason, "project", w.project, "path", w.path, "job", w.jobKey)
		return stats, nil
	}
	if err != nil {
		return stats, fmt.Errorf("sticky: %w", err)
	}
	info, _ := json.Marshal(genInfo{Bytes: stats.Bytes, Entries: stats.Entries, Created: time.Now().UTC(), Base: w.base, JobKey: w.jobKey})
	if err := os.WriteFile(filepath.Join(next, "info.json"), info, 0o600); err != nil {
		return stats, fmt.Errorf("sticky: %w", err)
	}
	if err := os.WriteFile(filepath.Join(next, "lock"), nil, 0o600); err != nil {
		return stats, fmt.Errorf("sticky: %w", err)
	}
	// Make the whole generation durable before anything points at it.
	// syncfs flushes the filesystem once, instead of one fsync per file of
	// a cache that may hold a hundred thousand; most of what it writes is
	// this job's output anyway.
	if err := syncfs(next); err != nil {
		return stats, err
	}
	if err := w.publish(ctx, next, &stats); err != nil {
		return stats, err
	}
	stats.Promoted = true
	return stats, nil
}

// build makes next/tree the generation the job leaves: in overlay mode,
// its base cloned with hard links and its upper layer applied; in copy
// mode, its copy as it stands.
func (w *View) build(ctx context.Context, next string, stats *PromoteStats) error {
	if err := os.Mkdir(next, 0o700); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	tree := filepath.Join(next, "tree")
	if !w.overlay {
		if err := os.Rename(w.source, tree); err != nil {
			return fmt.Errorf("sticky: %w", err)
		}
		return nil
	}
	var err error
	if w.base != 0 {
		err = cloneTree(ctx, filepath.Join(genDir(w.vdir, w.base), "tree"), tree)
	} else {
		err = os.Mkdir(tree, 0o700)
	}
	var as applyStats
	if err == nil {
		err = applyUpper(ctx, filepath.Join(w.jdir, "upper"), tree, &as)
	}
	if err != nil {
		return fmt.Errorf("sticky: build generation: %w", err)
	}
	stats.Written, stats.Deleted = as.written, as.deleted
	return nil
}

// release unmounts and deletes the job directory, drops the view's locks,
// and deletes generations nobody uses any more. Called once, with w.mu held.
//
// The job directory is moved to the trash under the volume lock, and
// deleted after it: a copy-mode view can be large, and an Acquire that
// reuses the job key must never see a directory being deleted under it.
func (w *View) release() error {
	// Unmounting first, outside the lock; a busy mount is detached.
	err := unmountAll(w.jdir)
	unlock, lerr := lockVolume(context.Background(), w.vdir, false)
	if lerr != nil {
		w.closeLocks()
		return errors.Join(err, lerr)
	}
	var doomed []string
	if err == nil {
		var trash string
		if trash, err = w.v.toTrash(w.jdir); err == nil {
			doomed = append(doomed, trash)
		}
	}
	// The base generation may just have lost its last user.
	w.closeLocks()
	gens, serr := w.v.sweep(w.vdir)
	unlock()
	return errors.Join(err, serr, emptyTrash(append(doomed, gens...)))
}

func (w *View) closeLocks() {
	if w.genLock != nil {
		w.genLock.Close()
		w.genLock = nil
	}
	if w.jobLock != nil {
		w.jobLock.Close()
		w.jobLock = nil
	}
}
