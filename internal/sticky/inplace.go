package sticky

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Promoting in place
//
// The general Commit builds a new generation by cloning its base with hard
// links and applying the job's upper layer: its cost grows with the size
// of the volume (a Go module cache is tens of thousands of files), not with
// what the job wrote. In the common case nobody needs the base any more
// once the job is done: it is still the current generation and no other
// view is mounted on it. Then Commit applies the upper layer to the base's
// tree directly and renumbers it, and its cost is that of what the job
// wrote. This is the only place a generation's tree is ever written after
// it was made, and only under both locks that exclude every reader: the
// volume lock (no Acquire can start a view of it) and the generation's own
// lock taken exclusively (no view has it as its base).
//
// Crash safety: gens/<n>/applying is created (and made durable) before the
// tree is touched and removed only once the result is complete and
// durable. A generation with that marker is never used: readCurrent treats
// it as missing (the volume starts over cold) and GC deletes it. A crash
// mid-way therefore loses the volume's contents, never mixes two trees.

// applyingMarker marks a generation whose tree is being written in place.
const applyingMarker = "applying"

// commitInPlace tries the in-place promotion. It returns false, having
// changed nothing, when it does not apply (the view was cold, the base is
// no longer current, another view uses it, or the result might be over
// the budget): Commit then builds a new generation the general way. Called
// from Commit with w.mu held, after the overlay is frozen and unmounted.
func (w *View) commitInPlace(ctx context.Context, stats *PromoteStats) (done bool, err error) {
	if !w.overlay || w.base == 0 || w.genLock == nil {
		return false, nil
	}
	upper := filepath.Join(w.jdir, "upper")
	upBytes, _, err := treeSize(ctx, upper, -1)
	if err != nil {
		return false, fmt.Errorf("sticky: %w", err)
	}
	base := genDir(w.vdir, w.base)
	var info genInfo
	if b, err := os.ReadFile(filepath.Join(base, "info.json")); err != nil || json.Unmarshal(b, &info) != nil {
		return false, nil // no size on record: let the general path count
	}
	if w.v.maxBytes >= 0 && info.Bytes+upBytes > w.v.maxBytes {
		return false, nil // might be over: the general path counts exactly
	}

	unlock, err := lockVolume(ctx, w.vdir, true)
	if err != nil {
		return false, err
	}
	defer unlock()
	if cur, err := readCurrent(w.vdir); err != nil || cur != w.base {
		return false, nil
	}
	// Our own shared lock would conflict with an exclusive one taken
	// through another open file, so drop it first. Under the volume lock a
	// current generation cannot be deleted meanwhile, and if another view
	// holds it we take our shared lock back (nobody else takes a
	// generation lock without the volume lock, so this cannot block).
	w.genLock.Close()
	w.genLock = nil
	lockPath := filepath.Join(base, "lock")
	excl, held, err := tryLock(lockPath)
	if held || err != nil || excl == nil {
		if w.genLock, err = lockFile(ctx, lockPath, unix.LOCK_SH, false); err != nil {
			return false, fmt.Errorf("sticky: lock generation: %w", err)
		}
		return false, nil
	}
	w.genLock = excl

	marker := filepath.Join(base, applyingMarker)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		return false, fmt.Errorf("sticky: %w", err)
	}
	if err := fsyncDir(base); err != nil {
		return false, err
	}
	stats.InPlace = true
	// From here on, an error leaves the generation marked: it is never
	// used again and GC deletes it once we release it.
	fail := func(err error) (bool, error) {
		w.v.log.Warn("sticky: in-place promotion failed; the volume starts over cold", "project", w.project, "path", w.path, "job", w.jobKey, "err", err)
		return false, err
	}
	var as applyStats
	if err := applyUpper(ctx, upper, filepath.Join(base, "tree"), &as); err != nil {
		return fail(fmt.Errorf("sticky: promote in place: %w", err))
	}
	stats.Written, stats.Deleted = as.written, as.deleted
	stats.Bytes = max(info.Bytes+as.addedBytes-as.removedBytes, 0)
	stats.Entries = max(info.Entries+as.addedEntries-as.removedEntries, 0)
	ninfo, _ := json.Marshal(genInfo{Bytes: stats.Bytes, Entries: stats.Entries, Created: time.Now().UTC(), Base: w.base, JobKey: w.jobKey})
	if err := writeFileAtomic(filepath.Join(base, "info.json"), ninfo); err != nil {
		return fail(fmt.Errorf("sticky: %w", err))
	}
	if err := syncfs(base); err != nil {
		return fail(err)
	}

	// Renumber: the changed tree becomes generation n, and current names
	// it. Until the marker is gone it is unusable, so a crash anywhere in
	// between leaves a volume that starts over cold.
	n, err := lastGen(w.vdir)
	if err != nil {
		return fail(err)
	}
	n++
	next := genDir(w.vdir, n)
	if err := os.Rename(base, next); err != nil {
		return fail(fmt.Errorf("sticky: %w", err))
	}
	if err := os.Remove(filepath.Join(next, applyingMarker)); err != nil {
		return fail(fmt.Errorf("sticky: %w", err))
	}
	if err := errors.Join(fsyncDir(next), fsyncDir(filepath.Join(w.vdir, "gens"))); err != nil {
		return fail(err)
	}
	if err := switchCurrent(w.vdir, n); err != nil {
		return fail(err)
	}
	stats.Previous, stats.Generation = w.base, n
	return true, touchUsed(w.vdir)
}

// switchCurrent points the volume's `current` at generation n with one
// rename(2), and makes that durable. Called with the volume lock held.
func switchCurrent(vdir string, n int64) error {
	tmp := filepath.Join(vdir, "current.new")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("gens", strconv.FormatInt(n, 10)), tmp); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(vdir, "current")); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	return fsyncDir(vdir)
}
