package sticky

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// publish makes next the volume's newest generation and its current one,
// under the volume lock. Two renames, each atomic: next to gens/<n>, then
// a fresh symlink over `current`. A crash between them leaves a generation
// nothing points to, which GC deletes.
func (w *View) publish(ctx context.Context, next string, stats *PromoteStats) error {
	unlock, err := lockVolume(ctx, w.vdir, true)
	if err != nil {
		return err
	}
	defer unlock()
	stats.Previous, err = readCurrent(w.vdir)
	if err != nil {
		stats.Previous = 0
	}
	n, err := lastGen(w.vdir)
	if err != nil {
		return err
	}
	n++
	gens := filepath.Join(w.vdir, "gens")
	if err := os.MkdirAll(gens, 0o700); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	if err := os.Rename(next, genDir(w.vdir, n)); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	if err := fsyncDir(gens); err != nil {
		return err
	}
	if err := switchCurrent(w.vdir, n); err != nil {
		return err
	}
	stats.Generation = n
	return touchUsed(w.vdir)
}

func genDir(vdir string, n int64) string {
	return filepath.Join(vdir, "gens", strconv.FormatInt(n, 10))
}

// readCurrent returns the volume's current generation, 0 if none.
func readCurrent(vdir string) (int64, error) {
	target, err := os.Readlink(filepath.Join(vdir, "current"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sticky: %w", err)
	}
	name, ok := strings.CutPrefix(target, "gens/")
	n, perr := strconv.ParseInt(name, 10, 64)
	if !ok || perr != nil || n <= 0 {
		return 0, fmt.Errorf("%w: current -> %q: not a generation", errBrokenCurrent, target)
	}
	if _, err := os.Lstat(filepath.Join(genDir(vdir, n), "tree")); errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%w: current -> %q: %w", errBrokenCurrent, target, err)
	} else if err != nil {
		return 0, fmt.Errorf("sticky: %w", err)
	}
	// An in-place promotion that did not finish (see inplace.go).
	if _, err := os.Lstat(filepath.Join(genDir(vdir, n), applyingMarker)); err == nil {
		return 0, fmt.Errorf("%w: current -> %q: an in-place promotion did not finish", errBrokenCurrent, target)
	}
	return n, nil
}

// errBrokenCurrent: `current` names no generation. Publishing never leaves
// it so (the generation is in place before the symlink); only damage from
// outside does, and the volume then starts over cold.
var errBrokenCurrent = errors.New("sticky: broken current pointer")

// generations lists the volume's generation numbers.
func generations(vdir string) ([]int64, error) {
	names, err := readNames(filepath.Join(vdir, "gens"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sticky: %w", err)
	}
	var gens []int64
	for _, name := range names {
		if n, err := strconv.ParseInt(name, 10, 64); err == nil && n > 0 {
			gens = append(gens, n)
		}
	}
	return gens, nil
}

func lastGen(vdir string) (int64, error) {
	gens, err := generations(vdir)
	var last int64
	for _, n := range gens {
		last = max(last, n)
	}
	return last, err
}

func syncfs(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sticky: syncfs: %w", err)
	}
	return nil
}

func fsyncDir(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sticky: fsync %s: %w", p, err)
	}
	return nil
}
