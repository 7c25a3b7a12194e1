package sticky

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountSource is the source field of our overlay mounts in mountinfo, so an
// operator reading `mount` knows whose they are.
const mountSource = "kiln-sticky"

// safetyOptions are overlay features that must be off for Commit to read
// an upper layer as "the files the job wrote, whole". The probe tries each
// alone: a kernel that rejects one does not have that feature, so it
// cannot be on either.
var safetyOptions = []string{
	// On, renaming a lower directory records the old name in a redirect
	// xattr and leaves the directory's unchanged contents in lower: the
	// upper layer alone no longer describes the result. Off, rename(2) of
	// a lower directory fails with EXDEV and tools copy instead (mv does).
	"redirect_dir=off",
	// On, a chmod or chown copies up only metadata: the upper file has no
	// data, which Commit would then promote as the file.
	"metacopy=off",
	// On, copy-ups of hard-linked files go through an index in the work
	// directory and tie the upper layer to this lower; off, the upper
	// layer is self-contained.
	"index=off",
}

// probeOverlay mounts throwaway overlays under tmp to learn whether
// overlayfs works on this filesystem, and returns the option suffix for
// every view's mount. Besides mounting, it checks the two things Commit
// depends on: a deleted lower entry leaves a whiteout (char device 0:0)
// and a directory re-created over a deleted one is marked opaque.
func probeOverlay(tmp string) (opts string, err error) {
	dir, err := os.MkdirTemp(tmp, "probe-")
	if err != nil {
		return "", err
	}
	// Held while probing, so a Recover elsewhere leaves this directory alone.
	lock, err := lockFile(context.Background(), filepath.Join(dir, "lock"), unix.LOCK_EX, true)
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	defer func() {
		if rerr := removeTree(dir); rerr != nil && err == nil {
			err = rerr
		}
		lock.Close()
	}()
	lower, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "merged")
	for _, d := range []string{filepath.Join(lower, "d"), merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "d", "f"), []byte("f"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(lower, "gone"), []byte("g"), 0o644); err != nil {
		return "", err
	}
	n := 0
	// try mounts a fresh upper layer (an upper and work directory must not
	// be reused across mounts with different options) with opts.
	try := func(opts string) (upper string, err error) {
		n++
		upper, work := filepath.Join(dir, fmt.Sprint("upper", n)), filepath.Join(dir, fmt.Sprint("work", n))
		for _, d := range []string{upper, work} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return "", err
			}
		}
		return upper, mountOverlay(lower, upper, work, merged, opts)
	}
	if _, err := try(""); err != nil {
		return "", err
	}
	if err := unmount(merged, false); err != nil {
		return "", err
	}
	for _, o := range safetyOptions {
		_, err := try("," + o)
		if errors.Is(err, unix.EINVAL) {
			continue // this kernel has no such feature
		}
		if err != nil {
			return "", err
		}
		if err := unmount(merged, false); err != nil {
			return "", err
		}
		opts += "," + o
	}
	upper, err := try(opts)
	if err != nil {
		return "", err
	}
	err = errors.Join(
		os.RemoveAll(filepath.Join(merged, "d")),
		os.Mkdir(filepath.Join(merged, "d"), 0o755),
		os.Remove(filepath.Join(merged, "gone")),
	)
	if uerr := unmount(merged, false); err == nil {
		err = uerr
	}
	if err != nil {
		return "", err
	}
	if !isWhiteout(filepath.Join(upper, "gone")) {
		return "", errors.New("overlay: a deleted file left no whiteout in the upper layer")
	}
	if !isOpaque(filepath.Join(upper, "d")) {
		return "", errors.New("overlay: a re-created directory is not marked opaque (no trusted xattrs on this filesystem?)")
	}
	return opts, nil
}

// mountOverlay mounts an overlay of lower and upper at merged. opts is ""
// or starts with a comma.
func mountOverlay(lower, upper, work, merged, opts string) error {
	data := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + opts
	// nosuid, nodev: a cache is data; a job must not be able to plant a
	// setuid binary or a device node for a later job of the project.
	if err := unix.Mount(mountSource, merged, "overlay", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount overlay at %s (%s): %w", merged, data, err)
	}
	return nil
}

// freeze makes the overlay mounted at p read-only, superblock and all; it
// fails with EBUSY while a file in it is open for writing.
func freeze(p string) error {
	err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
	if err != nil {
		return fmt.Errorf("remount %s read-only: %w", p, err)
	}
	return nil
}

// unmount unmounts the mount at p. With force, a busy mount is detached
// (MNT_DETACH): it disappears from this namespace now and the kernel
// drops it when its last user goes. Not mounted is not an error.
func unmount(p string, force bool) error {
	for {
		err := unix.Unmount(p, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil, err == unix.EINVAL, err == unix.ENOENT:
			return nil
		case err == unix.EINTR:
			continue
		case err == unix.EBUSY && force:
			if err := unix.Unmount(p, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH); err != nil && err != unix.EINVAL {
				return fmt.Errorf("sticky: detach %s: %w", p, err)
			}
			return nil
		default:
			return fmt.Errorf("sticky: unmount %s: %w", p, err)
		}
	}
}

// mountsUnder returns the mount points at or below dir in this process's
// mount namespace, deepest first.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("sticky: %w", err)
	}
	var mps []string
	for line := range bytes.Lines(b) {
		// id parent major:minor root mountpoint options ...
		f := strings.Fields(string(line))
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts whatever is mounted at or below dir, and fails if
// anything still is: a RemoveAll, or a rename to the trash, of a
// directory with a mounted view inside would walk into the view.
func unmountAll(dir string) error {
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := unmount(mp, true); err != nil {
			return err
		}
	}
	if mps, err = mountsUnder(dir); err != nil {
		return err
	} else if len(mps) > 0 {
		return fmt.Errorf("sticky: %s is still mounted", mps[0])
	}
	return nil
}

// removeTree unmounts whatever is mounted at or below dir, then deletes dir.
func removeTree(dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("sticky: %w", err)
	}
	return nil
}

// copyTree makes dst (which must not exist) a full copy of src: cp -a, with
// reflinks where the filesystem has them (btrfs, XFS) so the copy shares
// blocks until written.
func copyTree(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", "--", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sticky: cp -a %s %s: %w: %s", src, dst, err, bytes.TrimSpace(out))
	}
	return nil
}
