package cache

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/kilnci/kiln/internal/blobstore"
)

// files is the on-disk layout under Config.Dir:
//
//	blobs/ID               a finalized entry's archive (the default
//	                       blob store, a blobstore.Disk; see Config.Blobs)
//	staging/ID/            an upload in progress
//	staging/ID/blocks/H    a staged v2 block; H is the hex SHA-256 of the block id
//	staging/ID/chunks/A-B  a received v1 chunk, bytes A to B inclusive
//	staging/ID/data        the whole archive, from v2 Put Blob or Put Block
//	                       List, or v1 chunks assembled at commit
//
// Every name is derived from an integer id or a hash, never from client
// input, so no key, block id or URL can point outside Dir. Bodies are
// streamed to disk, never held in memory.
type files struct{ root string }

func (f files) init() error {
	for _, d := range []string{"blobs", "staging"} {
		if err := os.MkdirAll(filepath.Join(f.root, d), 0o700); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
	}
	return nil
}

func (f files) staging(id int64) string {
	return filepath.Join(f.root, "staging", strconv.FormatInt(id, 10))
}
func (f files) data(id int64) string   { return filepath.Join(f.staging(id), "data") }
func (f files) blocks(id int64) string { return filepath.Join(f.staging(id), "blocks") }

func (f files) chunks(id int64) string { return filepath.Join(f.staging(id), "chunks") }

func (f files) chunk(id, start, end int64) string {
	return filepath.Join(f.chunks(id), fmt.Sprintf("%d-%d", start, end))
}

func (f files) block(id int64, blockID string) string {
	h := sha256.Sum256([]byte(blockID))
	return filepath.Join(f.blocks(id), hex.EncodeToString(h[:]))
}

// copyExact copies exactly n bytes from r to w and then requires r to be at
// its end: a body shorter than announced (a client that hung up, or a
// Content-Length that lies) or longer is an error, never a silent
// truncation.
func copyExact(w io.Writer, r io.Reader, n int64) error {
	got, err := io.CopyN(w, r, n)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errorf(ErrInvalid, "body ended after %d of %d bytes", got, n)
		}
		return errorf(ErrInvalid, "reading body after %d of %d bytes: %v", got, n, err)
	}
	var one [1]byte
	if k, _ := io.ReadFull(r, one[:]); k > 0 {
		return errorf(ErrInvalid, "body is longer than the %d bytes announced", n)
	}
	return nil
}

// assembleChunks checks that the received v1 chunks cover exactly bytes 0
// to size-1, without gaps or overlaps, and concatenates them into the
// entry's data file.
func (f files) assembleChunks(id, size int64) error {
	dirents, err := os.ReadDir(f.chunks(id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cache: %w", err)
	}
	type span struct{ start, end int64 }
	var spans []span
	for _, d := range dirents {
		var sp span
		if _, err := fmt.Sscanf(d.Name(), "%d-%d", &sp.start, &sp.end); err == nil {
			spans = append(spans, sp)
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	var next int64
	for _, sp := range spans {
		if sp.start != next {
			return errorf(ErrInvalid, "chunks do not cover the archive: expected a chunk at byte %d, got bytes %d-%d", next, sp.start, sp.end)
		}
		next = sp.end + 1
	}
	if next != size {
		return errorf(ErrInvalid, "committed size %d does not match the %d bytes received", size, next)
	}
	out, err := os.CreateTemp(f.staging(id), ".assemble-*")
	if errors.Is(err, fs.ErrNotExist) { // no chunk ever arrived: an empty archive
		err = os.MkdirAll(f.staging(id), 0o700)
		if err == nil {
			out, err = os.CreateTemp(f.staging(id), ".assemble-*")
		}
	}
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(out.Name())
	for _, sp := range spans {
		if _, err := appendFile(out, f.chunk(id, sp.start, sp.end)); err != nil {
			out.Close()
			return err
		}
		os.Remove(f.chunk(id, sp.start, sp.end))
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return os.Rename(out.Name(), f.data(id))
}

// assemble concatenates the staged blocks, in list order, into the entry's
// data file and discards every staged block (Azure drops uncommitted blocks
// not named in a committed list). All blocks are checked to exist before
// anything changes; each block file is removed right after its last use, so
// assembling needs little more disk than the archive itself.
func (f files) assemble(id int64, blockIDs []string) (int64, error) {
	last := map[string]int{}
	for i, b := range blockIDs {
		if _, err := os.Stat(f.block(id, b)); err != nil {
			return 0, errorf(ErrInvalid, "block list names block %q, which was not uploaded", b)
		}
		last[b] = i
	}
	out, err := os.CreateTemp(f.staging(id), ".assemble-*")
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(out.Name())
	var size int64
	for i, b := range blockIDs {
		n, err := appendFile(out, f.block(id, b))
		if err != nil {
			out.Close()
			return 0, err
		}
		size += n
		if last[b] == i {
			os.Remove(f.block(id, b))
		}
	}
	if err := out.Close(); err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	if err := os.Rename(out.Name(), f.data(id)); err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	if err := os.RemoveAll(f.blocks(id)); err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	return size, nil
}

func appendFile(out *os.File, path string) (int64, error) {
	in, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	defer in.Close()
	n, err := io.Copy(out, in) // copy_file_range on Linux
	if err != nil {
		return n, fmt.Errorf("cache: %w", err)
	}
	return n, nil
}

// publish syncs the entry's data file, checks its size and moves it into
// the blob store (a rename on disk; an upload, in parallel parts, to S3).
func (f files) publish(ctx context.Context, blobs blobstore.Store, id int64, want int64) error {
	d, err := os.OpenFile(f.data(id), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return errorf(ErrInvalid, "nothing was uploaded for this entry")
	}
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	st, err := d.Stat()
	if err == nil && st.Size() != want {
		err = errorf(ErrInvalid, "size %d does not match the %d bytes uploaded", want, st.Size())
	}
	if err == nil {
		err = d.Sync()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := blobs.PutFile(ctx, blobName(id), f.data(id)); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return os.RemoveAll(f.staging(id))
}

// stagedBytes is the disk an upload in progress holds.
func (f files) stagedBytes(id int64) int64 {
	var n int64
	filepath.WalkDir(f.staging(id), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
