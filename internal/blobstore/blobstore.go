// Package blobstore keeps immutable blobs (finalized cache archives, and
// later artifacts and archived logs) by name: on local disk (Disk, the
// default) or in an S3-compatible object store (S3). Writers stage their
// bytes elsewhere and put a blob once it is whole; a blob is never
// changed in place, only put again or deleted.
//
// The conformance suite in blobstoretest runs on both implementations.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
)

// ErrNotFound is returned (wrapped) for a blob that does not exist.
var ErrNotFound = errors.New("blob not found")

// Store is a flat namespace of immutable blobs.
type Store interface {
	// Put stores exactly size bytes read from r as name, replacing any blob
	// of that name. A reader that ends early or has bytes past size is an
	// error, and then no blob of that name is visible (or the old one is).
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// PutFile moves the local file at path into the store as name; the
	// file is gone afterwards on success. Disk renames it (no copy).
	PutFile(ctx context.Context, name, path string) error
	// Open opens name for reading, seeking and ranged reads
	// (http.ServeContent serves it as is).
	Open(ctx context.Context, name string) (Blob, error)
	// Stat reports name's size and modification time.
	Stat(ctx context.Context, name string) (Info, error)
	// Delete removes name; deleting a missing blob is not an error.
	Delete(ctx context.Context, name string) error
	// List returns the names of every blob, in no particular order.
	List(ctx context.Context) ([]string, error)
	// PresignGet returns a URL anyone may GET name from until ttl passes,
	// without credentials, or "" when the store cannot presign (Disk):
	// the caller then serves the bytes itself.
	PresignGet(ctx context.Context, name string, ttl time.Duration) (string, error)
}

// Blob is an open blob.
type Blob interface {
	io.ReadSeekCloser
	io.ReaderAt
	Info() Info
}

// Info describes a blob.
type Info struct {
	Size    int64
	ModTime time.Time
}

// A name is one or more slash-separated segments of letters, digits, dots,
// dashes and underscores, none starting with a dot: it maps to a file
// under Disk's root and to an object key under S3's prefix without
// escaping either.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$`)

// CheckName reports whether name is a valid blob name.
func CheckName(name string) error {
	if len(name) > 512 || !nameRE.MatchString(name) {
		return fmt.Errorf("blobstore: invalid blob name %q", name)
	}
	return nil
}
