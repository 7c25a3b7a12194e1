// Package artifact packs a job's artifacts, the workspace files its
// `artifacts:` paths select, into one archive (tar, PAX format,
// compressed with zstd: what the cache's archives are), and unpacks one
// safely. The agent packs; `kiln artifacts get -x` unpacks.
//
// An archive holds regular files only, named by their workspace-relative
// path ("dist/app.tar.gz"), with their permission bits and modification
// time; directories are implied by the names. Files are chosen and read
// through an os.Root on the workspace (cachekey.Files): a symbolic link is
// kept, as the file it points to, only when that file is inside the
// workspace.
package artifact

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/kilnci/kiln/internal/cachekey"
)

// File is one file of a job's artifacts.
type File struct {
	Path string // relative to the workspace, "/"-separated
	Size int64
}

// Set is what a job's paths select.
type Set struct {
	Files []File
	Bytes int64 // their sizes' sum
	// Skipped are the symbolic links the globs select but that are left
	// out: leading out of the workspace, to a directory or to nothing.
	Skipped []string
}

// Collect returns the files under workspace that globs select (sorted).
func Collect(workspace string, globs []string) (Set, error) {
	names, skipped, err := cachekey.Files(workspace, globs)
	if err != nil {
		return Set{}, fmt.Errorf("artifacts: %w", err)
	}
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return Set{}, fmt.Errorf("artifacts: %w", err)
	}
	defer root.Close()
	s := Set{Skipped: skipped}
	for _, n := range names {
		fi, err := root.Stat(n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Set{}, fmt.Errorf("artifacts: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		s.Files = append(s.Files, File{Path: n, Size: fi.Size()})
		s.Bytes += fi.Size()
	}
	return s, nil
}

// Write writes the archive of set's files, read from workspace, to w. A
// file gone since Collect is left out; one that changed size is archived
// with the size it has once open (padded with zeros if it shrinks while
// read, cut if it grows): the archive stays well-formed either way. It
// returns the files and bytes archived.
func Write(ctx context.Context, w io.Writer, workspace string, set Set) (files int, bytes int64, err error) {
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return 0, 0, fmt.Errorf("artifacts: %w", err)
	}
	defer root.Close()
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true))
	if err != nil {
		return 0, 0, err
	}
	tw := tar.NewWriter(zw)
	buf := make([]byte, 1<<20)
	for _, f := range set.Files {
		if err := ctx.Err(); err != nil {
			zw.Close()
			return 0, 0, err
		}
		n, ok, err := writeFile(tw, root, f.Path, buf)
		if err != nil {
			zw.Close()
			return 0, 0, fmt.Errorf("artifacts: %s: %w", f.Path, err)
		}
		if ok {
			files++
			bytes += n
		}
	}
	if err := tw.Close(); err != nil {
		zw.Close()
		return 0, 0, err
	}
	return files, bytes, zw.Close()
}

func writeFile(tw *tar.Writer, root *os.Root, name string, buf []byte) (int64, bool, error) {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	if !fi.Mode().IsRegular() {
		return 0, false, nil
	}
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: fi.Size(), Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return 0, false, err
	}
	n, err := io.CopyBuffer(tw, io.LimitReader(f, fi.Size()), buf)
	if err != nil {
		return 0, false, err
	}
	if n < fi.Size() {
		if _, err := io.CopyN(tw, zeros{}, fi.Size()-n); err != nil {
			return 0, false, err
		}
	}
	return fi.Size(), true, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// CheckName says why an archive entry's name is refused ("" when it is
// fine): it must be a clean relative path inside the target directory.
func CheckName(name string) string {
	switch {
	case name == "" || name == ".":
		return "empty name"
	case strings.HasPrefix(name, "/"):
		return "absolute path"
	case strings.ContainsRune(name, 0) || strings.Contains(name, `\`):
		return "NUL or backslash in the name"
	case path.Clean(name) != name:
		return "not a clean path"
	case name == ".." || strings.HasPrefix(name, "../"):
		return "outside the target directory"
	}
	return ""
}

// Extract unpacks an archive into dir (made if missing), which nothing in
// it can leave: entries are only regular files with clean relative names
// (anything else is an error), written through an os.Root on dir, never
// executable by more than their owner's bits allow and never setuid. A
// file already there is overwritten. It returns the files and bytes
// written.
func Extract(r io.Reader, dir string) (files int, bytes int64, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, 0, err
	}
	defer root.Close()
	zr, err := zstd.NewReader(r)
	if err != nil {
		return 0, 0, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, bytes, nil
		}
		if err != nil {
			return files, bytes, fmt.Errorf("read the archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			return files, bytes, fmt.Errorf("archive entry %q: not a regular file (type %q): refused", h.Name, h.Typeflag)
		}
		if msg := CheckName(h.Name); msg != "" {
			return files, bytes, fmt.Errorf("archive entry %q: %s: refused", h.Name, msg)
		}
		if d := path.Dir(h.Name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return files, bytes, err
			}
		}
		f, err := root.OpenFile(h.Name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fs.FileMode(h.Mode)&0o755|0o600)
		if err != nil {
			return files, bytes, err
		}
		n, err := io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return files, bytes, fmt.Errorf("%s: %w", h.Name, err)
		}
		_ = root.Chtimes(h.Name, h.ModTime, h.ModTime)
		files++
		bytes += n
	}
}

// Entries lists an archive's files (name and size), reading it through.
func Entries(r io.Reader) ([]File, error) {
	zr, err := zstd.NewReader(r)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out []File
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, File{Path: h.Name, Size: h.Size})
	}
}
