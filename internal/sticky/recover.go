package sticky

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// trashPath returns a new name in <Dir>/trash. Deleting is a rename there
// (atomic, and quick under a lock) followed by a RemoveAll outside any
// lock; Recover empties whatever a crash left in the trash.
func (v *Volumes) trashPath() string {
	return filepath.Join(v.root, "trash", rand.Text())
}

// gcVolume deletes the volume's generations that are neither current nor
// the base of a live view (whose gens/<n>/lock it cannot take).
func (v *Volumes) gcVolume(ctx context.Context, vdir string) error {
	unlock, err := lockVolume(ctx, vdir, false)
	if err != nil {
		return err
	}
	cur, err := readCurrent(vdir)
	if err != nil && !errors.Is(err, errBrokenCurrent) {
		unlock()
		return err
	}
	gens, err := generations(vdir)
	var doomed []string
	for _, n := range gens {
		if n == cur {
			continue
		}
		gdir := genDir(vdir, n)
		f, held, lerr := tryLock(filepath.Join(gdir, "lock"))
		if held {
			continue
		}
		if lerr == nil {
			trash := v.trashPath()
			if lerr = os.Rename(gdir, trash); lerr == nil {
				doomed = append(doomed, trash)
			}
		}
		if f != nil {
			f.Close()
		}
		err = errors.Join(err, lerr)
	}
	unlock()
	for _, d := range doomed {
		err = errors.Join(err, os.RemoveAll(d))
	}
	if err != nil {
		return fmt.Errorf("sticky: gc: %w", err)
	}
	return nil
}

// removeDeadJobs deletes the job directories of the volume whose view lock
// is free: views of jobs whose process is gone, with their mounts and any
// half-built generation (jobs/<k>/next). It returns how many it removed and
// how many views are alive. Called with the volume lock held, so no
// Acquire is between creating a job directory and locking it.
func (v *Volumes) removeDeadJobs(vdir string) (removed, live int, err error) {
	jobs := filepath.Join(vdir, "jobs")
	names, err := readNames(jobs)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("sticky: %w", err)
	}
	for _, name := range names {
		jdir := filepath.Join(jobs, name)
		f, held, lerr := tryLock(filepath.Join(jdir, "lock"))
		if held {
			live++
			continue
		}
		if lerr == nil {
			mps, _ := mountsUnder(jdir)
			_, nerr := os.Lstat(filepath.Join(jdir, "next"))
			if lerr = removeTree(jdir); lerr == nil {
				removed++
				v.log.Info("sticky: removed a dead job's view", "volume", filepath.Base(vdir), "job", name,
					"mounted", len(mps) > 0, "half_built_generation", nerr == nil)
			}
		}
		if f != nil {
			f.Close()
		}
		err = errors.Join(err, lerr)
	}
	return removed, live, err
}

// Recover cleans up after a crash; the agent calls it once at start,
// before any Acquire. For every volume it unmounts and deletes the views
// of dead jobs (mounted or not, with their half-built generations),
// deletes generations nobody uses, and leaves `current` as it was. Views
// alive in this or another process are left alone, so a Recover at the
// wrong time does no harm.
func (v *Volumes) Recover(ctx context.Context) error {
	dirs, err := v.volumeDirs()
	if err != nil {
		return err
	}
	var errs []error
	for _, vdir := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		errs = append(errs, v.recoverVolume(ctx, vdir))
	}
	// Probes that died mid-way (a probe holds its lock while it runs).
	tmp := filepath.Join(v.root, "tmp")
	names, err := readNames(tmp)
	errs = append(errs, err)
	for _, name := range names {
		d := filepath.Join(tmp, name)
		f, held, err := tryLock(filepath.Join(d, "lock"))
		if !held && err == nil {
			err = removeTree(d)
		}
		if f != nil {
			f.Close()
		}
		errs = append(errs, err)
	}
	trash := filepath.Join(v.root, "trash")
	names, err = readNames(trash)
	errs = append(errs, err)
	for _, name := range names {
		errs = append(errs, os.RemoveAll(filepath.Join(trash, name)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sticky: recover: %w", err)
	}
	return nil
}

func (v *Volumes) recoverVolume(ctx context.Context, vdir string) error {
	unlock, err := lockVolume(ctx, vdir, false)
	if errors.Is(err, errNoVolume) {
		return nil
	}
	if err != nil {
		return err
	}
	_, _, err = v.removeDeadJobs(vdir)
	// An interrupted publish or meta write.
	for _, name := range []string{"current.new", "meta.json.tmp"} {
		if rerr := os.Remove(filepath.Join(vdir, name)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if _, cerr := readCurrent(vdir); errors.Is(cerr, errBrokenCurrent) {
		v.log.Warn("sticky: volume's current generation is missing; it starts over cold", "volume", filepath.Base(vdir), "err", cerr)
		err = errors.Join(err, os.Remove(filepath.Join(vdir, "current")))
	}
	unlock()
	return errors.Join(err, v.gcVolume(ctx, vdir))
}

// Prune deletes the volumes not acquired or committed for olderThan, unless
// a view of them is alive. It returns how many it deleted.
func (v *Volumes) Prune(ctx context.Context, olderThan time.Duration) (removed int, err error) {
	cutoff := time.Now().Add(-olderThan)
	dirs, err := v.volumeDirs()
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, vdir := range dirs {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if !lastUsed(vdir).Before(cutoff) {
			continue
		}
		ok, err := v.pruneVolume(ctx, vdir, cutoff)
		if ok {
			removed++
		}
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

func (v *Volumes) pruneVolume(ctx context.Context, vdir string, cutoff time.Time) (bool, error) {
	unlock, err := lockVolume(ctx, vdir, false)
	if errors.Is(err, errNoVolume) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !lastUsed(vdir).Before(cutoff) { // used while we waited for the lock
		unlock()
		return false, nil
	}
	// Dead views go first: moving a volume with a mounted view inside to
	// the trash would let RemoveAll walk into the mount.
	if _, live, err := v.removeDeadJobs(vdir); err != nil || live > 0 {
		unlock()
		return false, err
	}
	trash := v.trashPath()
	err = os.Rename(vdir, trash)
	// Processes waiting for this lock find the lock file gone from its
	// path once they get it, and start over (see lockVolume).
	unlock()
	if err != nil {
		return false, fmt.Errorf("sticky: prune: %w", err)
	}
	v.log.Info("sticky: pruned an unused volume", "volume", filepath.Base(vdir), "unused_since", lastUsed(trash))
	if err := os.RemoveAll(trash); err != nil {
		return true, fmt.Errorf("sticky: prune: %w", err)
	}
	return true, nil
}

// lastUsed returns when the volume was last acquired or committed.
func lastUsed(vdir string) time.Time {
	fi, err := os.Stat(filepath.Join(vdir, "used"))
	if err != nil {
		if fi, err = os.Stat(vdir); err != nil {
			return time.Time{}
		}
	}
	return fi.ModTime()
}
