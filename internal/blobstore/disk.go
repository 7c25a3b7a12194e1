package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Disk keeps each blob as a file under a root directory (root/name).
// Writes go to a temporary file beside the blob (a dot name, which no blob
// can have) and are renamed into place, so a blob is always whole.
type Disk struct{ root string }

// NewDisk opens (and creates) a disk store rooted at dir.
func NewDisk(dir string) (*Disk, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	return &Disk{root: dir}, nil
}

func (d *Disk) path(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

func (d *Disk) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	dst, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".put-*")
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	err = CopyExact(tmp, r, size)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("blobstore: %w", cerr)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	return nil
}

func (d *Disk) PutFile(ctx context.Context, name, path string) error {
	dst, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	err = os.Rename(path, dst)
	if !errors.Is(err, syscall.EXDEV) {
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		return nil
	}
	// Another filesystem: copy, then remove the source.
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	if err := d.Put(ctx, name, f, st.Size()); err != nil {
		return err
	}
	return os.Remove(path)
}

type diskBlob struct {
	*os.File
	info Info
}

func (b diskBlob) Info() Info { return b.info }

func (d *Disk) Open(ctx context.Context, name string) (Blob, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, diskErr(name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, diskErr(name, err)
	}
	return diskBlob{f, Info{Size: st.Size(), ModTime: st.ModTime()}}, nil
}

func (d *Disk) Stat(ctx context.Context, name string) (Info, error) {
	p, err := d.path(name)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, diskErr(name, err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("blobstore: %s: %w", name, ErrNotFound)
	}
	return Info{Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (d *Disk) Delete(ctx context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: %w", err)
	}
	return nil
}

// List walks the root; temporary files (dot names) are not blobs.
func (d *Disk) List(ctx context.Context) ([]string, error) {
	var out []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); CheckName(name) == nil {
			out = append(out, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	return out, nil
}

// PresignGet returns "": a disk's bytes are served by whoever holds it.
func (d *Disk) PresignGet(ctx context.Context, name string, ttl time.Duration) (string, error) {
	return "", CheckName(name)
}

func diskErr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: %s: %w", name, ErrNotFound)
	}
	return fmt.Errorf("blobstore: %w", err)
}

// CopyExact copies exactly n bytes from r to w and then requires r to be
// at its end: a reader shorter or longer than announced is an error, never
// a silent truncation.
func CopyExact(w io.Writer, r io.Reader, n int64) error {
	got, err := io.CopyN(w, r, n)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: body ended after %d of %d bytes", ErrSize, got, n)
		}
		return fmt.Errorf("blobstore: reading after %d of %d bytes: %w", got, n, err)
	}
	var one [1]byte
	if k, _ := io.ReadFull(r, one[:]); k > 0 {
		return fmt.Errorf("%w: body is longer than the %d bytes announced", ErrSize, n)
	}
	return nil
}

// ErrSize is returned (wrapped) when a Put's reader does not hold exactly
// the announced size.
var ErrSize = errors.New("blobstore: size mismatch")
