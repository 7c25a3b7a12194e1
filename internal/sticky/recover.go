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

// toTrash moves dir to the trash, after unmounting what is mounted in it,
// and returns its new path. Callers hold the volume lock and delete the
// returned path once they have released it.
func (v *Volumes) toTrash(dir string) (string, error) {
	if err := unmountAll(dir); err != nil {
		return "", err
	}
	trash := v.trashPath()
	if err := os.Rename(dir, trash); err != nil {
		return "", fmt.Errorf("sticky: %w", err)
	}
	return trash, nil
}

// emptyTrash deletes paths returned by toTrash.
func emptyTrash(paths []string) error {
	var errs []error
	for _, p := range paths {
		errs = append(errs, os.RemoveAll(p))
	}
	return errors.Join(errs...)
}

// gcVolume deletes the volume's generations that are neither current nor
// the base of a live view.
func (v *Volumes) gcVolume(ctx context.Context, vdir string) error {
	unlock, err := lockVolume(ctx, vdir, false)
	if err != nil {
		return err
	}
	doomed, err := v.sweep(vdir)
	unlock()
	return errors.Join(err, emptyTrash(doomed))
}

// sweep moves to the trash the volume's generations that are neither
// current nor the base of a live view (whose gens/<n>/lock it cannot
// take). Called with the volume lock held, which is what makes the
// check-then-delete safe: a view locks its base only under that lock too.
func (v *Volumes) sweep(vdir string) (doomed []string, err error) {
	cur, err := readCurrent(vdir)
	if err != nil && !errors.Is(err, errBrokenCurrent) {
		return nil, err
	}
	gens, err := generations(vdir)
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
			var trash string
			if trash, lerr = v.toTrash(gdir); lerr == nil {
				doomed = append(doomed, trash)
			}
		}
		if f != nil {
			f.Close()
		}
		err = errors.Join(err, lerr)
	}
	if err != nil {
		return doomed, fmt.Errorf("sticky: gc: %w", err)
	}
	return doomed, nil
}

// removeDeadJobs moves to the trash the job directories of the volume
// whose view lock is free: views of jobs whose process is gone, with their
// mounts and any half-built generation (jobs/<k>/next). It returns them,
// and how many views are alive. Called with the volume lock held, so no
// Acquire is between creating a job directory and locking it.
func (v *Volumes) removeDeadJobs(vdir string) (doomed []string, live int, err error) {
	jobs := filepath.Join(vdir, "jobs")
	names, err := readNames(jobs)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sticky: %w", err)
	}
	for _, name := range names {
		d, alive, jerr := v.removeDeadJob(vdir, name)
		if alive {
			live++
		}
		if d != "" {
			doomed = append(doomed, d)
		}
		err = errors.Join(err, jerr)
	}
	return doomed, live, err
}

// removeDeadJob moves the job directory jobs/<name> to the trash unless its
// view is alive. Called with the volume lock held.
func (v *Volumes) removeDeadJob(vdir, name string) (trash string, alive bool, err error) {
	jdir := filepath.Join(vdir, "jobs", name)
	f, held, err := tryLock(filepath.Join(jdir, "lock"))
	if held || err != nil {
		return "", held, err
	}
	if f != nil {
		defer f.Close()
	}
	mps, _ := mountsUnder(jdir)
	_, nerr := os.Lstat(filepath.Join(jdir, "next"))
	if trash, err = v.toTrash(jdir); err != nil {
		return "", false, err
	}
	v.log.Info("sticky: removed a dead job's view", "volume", filepath.Base(vdir), "job", name,
		"mounted", len(mps) > 0, "half_built_generation", nerr == nil)
	return trash, false, nil
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
	doomed, _, err := v.removeDeadJobs(vdir)
	defer func() { emptyTrash(doomed) }()
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
	doomed, live, err := v.removeDeadJobs(vdir)
	if err != nil || live > 0 {
		unlock()
		return false, errors.Join(err, emptyTrash(doomed))
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
