package cacheclient

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"
)

// The archive is a tar stream (PAX format, so names of any length and
// nanosecond modification times survive) compressed with zstd. Path number
// i of the cache is the top-level directory entry "i/", its contents below
// it ("i/sub/file"), every directory before what it holds (the order
// filepath.WalkDir gives). An index, not the path, names each tree: a cache
// restores onto whatever host directories the agent picks, and the paths
// are in the entry's version anyway.
//
// An entry records its type (directory, regular file or symbolic link),
// permission bits, owner ids and modification time. Sockets, devices and
// pipes are left out (counted in Stats.Skipped); a hard link is stored as
// the file it names.

// copyBufSize is the read size for file contents: large, so that the
// encoder gets large writes.
const copyBufSize = 1 << 20

// checkDirs refuses an empty list and directories that are relative, not
// clean, repeated or nested in one another (their trees would overlap).
func checkDirs(dirs []string) error {
	if len(dirs) == 0 {
		return errors.New("cacheclient: no paths given")
	}
	for i, d := range dirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
			return fmt.Errorf("cacheclient: path %q must be absolute, clean and not /", d)
		}
		for _, e := range dirs[:i] {
			if e == d || strings.HasPrefix(d, e+"/") || strings.HasPrefix(e, d+"/") {
				return fmt.Errorf("cacheclient: paths %q and %q overlap", e, d)
			}
		}
	}
	return nil
}

// existingDirs reports which of dirs exist; each that does must be a
// directory (not a symbolic link to one).
func existingDirs(dirs []string) ([]bool, error) {
	present := make([]bool, len(dirs))
	found := false
	for i, d := range dirs {
		fi, err := os.Lstat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("cacheclient: %w", err)
		case !fi.IsDir():
			return nil, fmt.Errorf("cacheclient: %s is not a directory", d)
		}
		present[i], found = true, true
	}
	if !found {
		return nil, nil
	}
	return present, nil
}

// newEncoder is the zstd encoder Save uses: the default level (zstd -3,
// what @actions/cache uses too), with a CRC so that a corrupted archive is
// detected on restore.
func newEncoder(w io.Writer) (*zstd.Encoder, error) {
	return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true))
}

// writeArchive writes the compressed archive of the present dirs to w.
func writeArchive(ctx context.Context, w io.Writer, dirs []string, present []bool, st *Stats) error {
	zw, err := newEncoder(w)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	a := &archiver{ctx: ctx, tw: tw, st: st, buf: make([]byte, copyBufSize)}
	for i, d := range dirs {
		if !present[i] {
			continue
		}
		if err := a.tree(strconv.Itoa(i), d); err != nil {
			zw.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

type archiver struct {
	ctx context.Context
	tw  *tar.Writer
	st  *Stats
	buf []byte
}

// tree archives the directory root as the top-level entry name.
func (a *archiver) tree(name, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			err = a.ctx.Err()
		}
		if errors.Is(err, fs.ErrNotExist) && p != root {
			return nil // removed while we walked
		}
		if err != nil {
			return fmt.Errorf("cacheclient: archive: %w", err)
		}
		rel, _ := filepath.Rel(root, p)
		entry := name
		if rel != "." {
			entry = name + "/" + filepath.ToSlash(rel)
		}
		if err := a.entry(entry, p, d); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return fmt.Errorf("cacheclient: archive %s: %w", p, err)
		}
		return nil
	})
}

// entry archives one file system entry.
func (a *archiver) entry(name, p string, d fs.DirEntry) error {
	fi, err := d.Info()
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		return a.tw.WriteHeader(a.header(name+"/", tar.TypeDir, fi, 0, ""))
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return a.tw.WriteHeader(a.header(name, tar.TypeSymlink, fi, 0, target))
	case fi.Mode().IsRegular():
		return a.file(name, p)
	default:
		a.st.Skipped++
		return nil
	}
}

// file archives a regular file: its size and metadata as it is once open,
// and exactly that many bytes (a file that shrinks while it is read is
// padded with zeros, one that grows is cut; either way the archive stays
// well-formed).
func (a *archiver) file(name, p string) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		a.st.Skipped++ // replaced by something else since the walk saw it
		return nil
	}
	if err := a.tw.WriteHeader(a.header(name, tar.TypeReg, fi, fi.Size(), "")); err != nil {
		return err
	}
	n, err := io.CopyBuffer(a.tw, io.LimitReader(f, fi.Size()), a.buf)
	if err != nil {
		return err
	}
	if n < fi.Size() {
		if _, err := io.CopyN(a.tw, zeros{}, fi.Size()-n); err != nil {
			return err
		}
	}
	a.st.Bytes += fi.Size()
	return nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func (a *archiver) header(name string, typ byte, fi fs.FileInfo, size int64, link string) *tar.Header {
	a.st.Entries++
	h := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Linkname: link,
		Size:     size,
		Mode:     int64(fi.Mode().Perm()),
		ModTime:  fi.ModTime(),
		Format:   tar.FormatPAX,
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		h.Mode |= 0o1000
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		h.Uid, h.Gid = int(st.Uid), int(st.Gid)
	}
	return h
}
