// Package diskquota gives a job a disk of a fixed size on the agent's host:
// an ext4 filesystem in a sparse image file, loop-mounted on the job's
// workspace directory. Everything a job writes there (its checkout, its
// restored keyed caches, its /tmp, bound from a directory of the same disk)
// counts against one quota; a write past it fails with ENOSPC ("No space
// left on device") inside the sandbox, as on a full disk, instead of
// filling the host's.
//
// The engines' own per-container quotas need overlay on XFS with project
// quotas (`--storage-opt size=`): Docker refuses the option on any other
// backing filesystem, and Podman accepts it and ignores it (docs/security.md,
// "Sandbox disk"). A loop mount works wherever the agent runs as root with
// mkfs.ext4 and loop devices, under either engine.
package diskquota

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MinBytes is the smallest disk Make makes (ext4's metadata needs room).
const MinBytes = 1 << 20

// cmdTimeout bounds mkfs, mount and umount.
const cmdTimeout = time.Minute

// Disk is a mounted quota disk.
type Disk struct {
	// Dir is where it is mounted.
	Dir string
	// Image is its image file.
	Image string
	// Bytes is its size.
	Bytes int64
}

// Make creates an image file of size bytes at image (which must not exist),
// makes an ext4 filesystem in it and mounts it on dir (created if needed;
// it must be empty). The image is sparse: it takes host disk only for what
// is written.
func Make(ctx context.Context, dir, image string, size int64) (*Disk, error) {
	if size < MinBytes {
		return nil, fmt.Errorf("diskquota: size %d is below the minimum %d", size, MinBytes)
	}
	if err := os.MkdirAll(filepath.Dir(image), 0o700); err != nil {
		return nil, fmt.Errorf("diskquota: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("diskquota: %w", err)
	}
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("diskquota: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(image)
		return nil, fmt.Errorf("diskquota: %w", err)
	}
	// No journal (the disk lives as long as one job), no blocks reserved
	// for root (the job gets the whole size), metadata initialised lazily.
	if err := run(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", "-L", "kiln-job", image); err != nil {
		_ = os.Remove(image)
		return nil, err
	}
	if err := run(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev", image, dir); err != nil {
		_ = os.Remove(image)
		return nil, err
	}
	// The filesystem's root belongs to root, mode 0755, as the directory did.
	_ = os.Remove(filepath.Join(dir, "lost+found"))
	return &Disk{Dir: dir, Image: image, Bytes: size}, nil
}

// Full reports whether the disk is (nearly) full: less than 2% of it, or
// 1 MiB, is free (ext4 refuses a large write somewhat before the last
// block: it reserves room for the metadata the write may need). A job
// whose step failed on a full disk is told so.
func (d *Disk) Full() bool {
	var st unix.Statfs_t
	if unix.Statfs(d.Dir, &st) != nil {
		return false
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	return free < max(d.Bytes/50, 1<<20)
}

// Used is how much of the disk is used, in bytes.
func (d *Disk) Used() int64 {
	var st unix.Statfs_t
	if unix.Statfs(d.Dir, &st) != nil {
		return 0
	}
	return int64(st.Blocks-st.Bfree) * int64(st.Bsize)
}

// Remove unmounts the disk and deletes its image. Idempotent.
func (d *Disk) Remove(ctx context.Context) error {
	err := Unmount(ctx, d.Dir)
	if rerr := os.Remove(d.Image); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = fmt.Errorf("diskquota: %w", rerr)
	}
	return err
}

// Unmount unmounts whatever is mounted on dir (nothing: no error). A mount
// still busy is detached lazily: the kernel frees it, and its loop device,
// when the last user goes.
func Unmount(ctx context.Context, dir string) error {
	if !Mounted(dir) {
		return nil
	}
	if err := run(ctx, "umount", dir); err != nil {
		if lerr := run(ctx, "umount", "-l", dir); lerr != nil {
			return err
		}
	}
	return nil
}

// Mounted reports whether something is mounted exactly on dir.
func Mounted(dir string) bool {
	ms, err := MountsUnder(dir)
	return err == nil && len(ms) > 0 && ms[0] == filepath.Clean(dir)
}

// MountsUnder lists the mount points at or under root, shallowest first
// (so unmount them in reverse), from /proc/self/mountinfo.
func MountsUnder(root string) ([]string, error) {
	root = filepath.Clean(root)
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescape(f[4])
		if mp == root || strings.HasPrefix(mp, root+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Check makes and removes a small disk under dir: it fails where quota
// disks cannot be made (not root, no mkfs.ext4, no loop devices).
func Check(ctx context.Context, dir string) error {
	probe := filepath.Join(dir, fmt.Sprintf("probe-%d", os.Getpid()))
	d, err := Make(ctx, probe, probe+".img", MinBytes*4)
	if err != nil {
		return err
	}
	err = d.Remove(ctx)
	if rerr := os.Remove(probe); err == nil && rerr != nil {
		err = rerr
	}
	return err
}

func run(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("diskquota: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
