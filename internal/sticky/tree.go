package sticky

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Building a generation from a base generation and a job's upper layer.
//
// Nothing here follows a symlink: every stat is an lstat, links and
// renames act on the link itself, and a path is only ever extended below a
// directory we have just checked (or made) is a real directory. A job can
// leave any symlink it likes in its cache; the host never walks through it.

// overlayXattrPrefix is the namespace of overlayfs's own metadata (opaque,
// origin, impure, redirect, ...). It is meaningful only in the upper layer
// that overlayfs wrote it in, and must not reach a generation, which will
// be the lower layer of later mounts.
const overlayXattrPrefix = "trusted.overlay."

// isWhiteout reports whether p is an overlay whiteout: a character device
// with device number 0:0.
func isWhiteout(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil && isWhiteoutStat(&st)
}

func isWhiteoutStat(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// isOpaque reports whether the upper directory p hides everything below
// the same path in lower (trusted.overlay.opaque = "y").
func isOpaque(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(p, overlayXattrPrefix+"opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// listXattrs returns the names of p's extended attributes.
func listXattrs(p string) ([]string, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listxattr %s: %w", p, err)
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

// stripOverlayXattrs removes overlayfs's xattrs from p.
func stripOverlayXattrs(p string) error {
	names, err := listXattrs(p)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, overlayXattrPrefix) {
			if err := unix.Lremovexattr(p, name); err != nil && err != unix.ENODATA {
				return fmt.Errorf("removexattr %s %s: %w", p, name, err)
			}
		}
	}
	return nil
}

// copyDirMeta gives the directory dst src's owner, mode, xattrs (except
// overlayfs's) and times. Called after dst's entries are in place, since
// adding them changes dst's mtime.
func copyDirMeta(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return fmt.Errorf("lstat %s: %w", src, err)
	}
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	// After chown, which may clear set-id bits.
	if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, overlayXattrPrefix) {
			continue
		}
		val, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			return fmt.Errorf("setxattr %s %s: %w", dst, name, err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("utimes %s: %w", dst, err)
	}
	return nil
}

func getXattr(p, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		return buf[:n], nil
	}
}

// readNames returns the names in directory p, unsorted.
func readNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// cloneTree makes dst, which must not exist, a copy of the directory src
// in which every directory is new and every other entry is a hard link to
// src's. That is safe only because no file of a generation is ever written
// in place: a job changes a file through its overlay, which copies it up
// into the job's upper layer first, so the inode shared by the old and the
// new generation never changes. (In-place promotion changes a tree's
// names, never an inode's contents: it removes and renames entries.)
func cloneTree(ctx context.Context, src, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	names, err := readNames(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		s, d := filepath.Join(src, name), filepath.Join(dst, name)
		var st unix.Stat_t
		if err := unix.Lstat(s, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", s, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := cloneTree(ctx, s, d); err != nil {
				return err
			}
			continue
		}
		// link(2) does not follow a symlink: the link itself is linked.
		err := unix.Link(s, d)
		if err == unix.EMLINK {
			// The inode has as many links as the filesystem allows
			// (65000 on ext4): give this generation its own copy.
			err = copyTree(ctx, s, d)
		}
		if err != nil {
			return fmt.Errorf("link %s: %w", d, err)
		}
	}
	return copyDirMeta(src, dst)
}

// applyStats counts what an upper layer changed.
type applyStats struct {
	written int // files, symlinks and new directories taken from the job
	deleted int // paths deleted (whiteouts) or directories replaced (opaque)
	// What went out of dst and came into it: the bytes of regular files
	// and the entries, for in-place promotion's accounting.
	removedBytes, removedEntries int64
	addedBytes, addedEntries     int64
}

// entrySize returns the bytes of regular files and the number of entries
// at p (lstat'ed as st), itself included.
func entrySize(ctx context.Context, p string, st *unix.Stat_t) (bytes, entries int64, err error) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		bytes, entries, err = treeSize(ctx, p, -1)
	case unix.S_IFREG:
		bytes = st.Size
	}
	return bytes, entries + 1, err
}

// add counts the entry u (lstat'ed as st) about to be moved into dst.
func (s *applyStats) add(ctx context.Context, u string, st *unix.Stat_t) error {
	b, e, err := entrySize(ctx, u, st)
	s.addedBytes += b
	s.addedEntries += e
	return err
}

// remove deletes dst's entry at d (lstat'ed as st), counting what goes.
func (s *applyStats) remove(ctx context.Context, d string, st *unix.Stat_t) error {
	b, e, err := entrySize(ctx, d, st)
	if err != nil {
		return err
	}
	s.removedBytes += b
	s.removedEntries += e
	return os.RemoveAll(d)
}

// applyUpper applies the upper directory up onto dst, a clone of the lower
// directory at the same path, so that dst becomes what the job saw at that
// path in its view. Entries of up are moved, not copied: the upper layer
// is the job's and is thrown away afterwards.
//
//   - a whiteout deletes the path;
//   - a directory over a lower directory is merged into it, unless it is
//     opaque: then it replaces it;
//   - a directory over nothing or over a non-directory, and every other
//     entry, replaces whatever is at the path.
func applyUpper(ctx context.Context, up, dst string, stats *applyStats) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := readNames(up)
	if err != nil {
		return err
	}
	for _, name := range names {
		u, d := filepath.Join(up, name), filepath.Join(dst, name)
		var ust, dst2 unix.Stat_t
		if err := unix.Lstat(u, &ust); err != nil {
			return fmt.Errorf("lstat %s: %w", u, err)
		}
		dErr := unix.Lstat(d, &dst2)
		exists := dErr == nil
		if dErr != nil && dErr != unix.ENOENT {
			return fmt.Errorf("lstat %s: %w", d, dErr)
		}
		switch {
		case isWhiteoutStat(&ust):
			if exists {
				if err := stats.remove(ctx, d, &dst2); err != nil {
					return err
				}
				stats.deleted++
			}
		case ust.Mode&unix.S_IFMT == unix.S_IFDIR:
			if exists && (dst2.Mode&unix.S_IFMT != unix.S_IFDIR || isOpaque(u)) {
				if err := stats.remove(ctx, d, &dst2); err != nil {
					return err
				}
				stats.deleted++
				exists = false
			}
			if exists {
				if err := applyUpper(ctx, u, d, stats); err != nil {
					return err
				}
				continue
			}
			if err := stats.add(ctx, u, &ust); err != nil {
				return err
			}
			if err := os.Rename(u, d); err != nil {
				return err
			}
			if err := scrub(ctx, d); err != nil {
				return err
			}
			stats.written++
		default:
			if exists {
				if err := stats.remove(ctx, d, &dst2); err != nil {
					return err
				}
			}
			if err := stats.add(ctx, u, &ust); err != nil {
				return err
			}
			if err := os.Rename(u, d); err != nil {
				return err
			}
			if err := stripOverlayXattrs(d); err != nil {
				return err
			}
			stats.written++
		}
	}
	// In a merged directory the attributes shown are the upper directory's.
	return copyDirMeta(up, dst)
}

// scrub removes overlayfs's traces from a directory moved in whole from an
// upper layer: its xattrs, and any whiteout (none should be there, since
// nothing lies under such a directory, but a stray one must not become a
// file of the generation).
func scrub(ctx context.Context, dir string) error {
	if err := stripOverlayXattrs(dir); err != nil {
		return err
	}
	return walk(ctx, dir, func(p string, st *unix.Stat_t) error {
		if isWhiteoutStat(st) {
			return os.Remove(p)
		}
		return stripOverlayXattrs(p)
	})
}

// walk calls fn for every entry below dir, lstat'ed, a directory before
// its entries. It never follows a symlink.
func walk(ctx context.Context, dir string, fn func(p string, st *unix.Stat_t) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := readNames(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		p := filepath.Join(dir, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		if err := fn(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := walk(ctx, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// errOverBudget stops treeSize once the tree is known to be too large.
var errOverBudget = errors.New("over budget")

// treeSize returns the apparent size of the regular files under dir (each
// inode once, however many hard links it has) and the number of entries.
// With limit >= 0 it stops with errOverBudget as soon as the size passes
// limit, returning the size so far.
func treeSize(ctx context.Context, dir string, limit int64) (bytes, entries int64, err error) {
	seen := map[uint64]bool{}
	err = walk(ctx, dir, func(_ string, st *unix.Stat_t) error {
		entries++
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		if st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		bytes += st.Size
		if limit >= 0 && bytes > limit {
			return errOverBudget
		}
		return nil
	})
	return bytes, entries, err
}
