// Package logarchive keeps finished builds' log lines out of the hot
// database: one blob per build (JSON lines, zstd-compressed) in a
// blobstore, written once and read back whole. The store records which
// builds are archived (store.Build.LogsArchivedAt); the API reads their
// lines from here with the same paging as from the store. A line's text is
// a JSON string, so invalid UTF-8 reads back as U+FFFD: what every API
// answer made of it already.
package logarchive

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/store"
)

// Archive is the log archive in a blob store.
type Archive struct {
	Blobs blobstore.Store
	// TmpDir is where a blob is staged before it is put (default: the
	// system's).
	TmpDir string
}

func name(buildID int64) string { return fmt.Sprintf("builds/%d.jsonl.zst", buildID) }

// Write archives a build's lines: each(f) calls f with every line, in
// (job, attempt, seq) order (Lines relies on it), and returns how many. The blob replaces any earlier one of the
// build. It returns the count of lines the blob holds, read back.
func (a *Archive) Write(ctx context.Context, buildID int64, each func(f func(store.LogLine) error) (int64, error)) (int64, error) {
	tmp, err := os.CreateTemp(a.TmpDir, "logarchive-*")
	if err != nil {
		return 0, fmt.Errorf("logarchive: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return 0, fmt.Errorf("logarchive: %w", err)
	}
	zw, err := zstd.NewWriter(tmp)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriter(zw)
	enc := json.NewEncoder(bw)
	n, err := each(func(l store.LogLine) error { return enc.Encode(l) })
	if err != nil {
		zw.Close()
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("logarchive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("logarchive: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("logarchive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("logarchive: %w", err)
	}
	if err := a.Blobs.PutFile(ctx, name(buildID), tmp.Name()); err != nil {
		return 0, fmt.Errorf("logarchive: build %d: %w", buildID, err)
	}
	got := int64(0)
	if err := a.each(ctx, buildID, func(store.LogLine) error { got++; return nil }); err != nil {
		return 0, err
	}
	if got != n {
		return got, fmt.Errorf("logarchive: build %d: wrote %d lines, read back %d", buildID, n, got)
	}
	return got, nil
}

// Lines returns the archived lines of a build's job attempt with seq >
// after, in order, at most limit (0: no limit).
func (a *Archive) Lines(ctx context.Context, buildID, jobID int64, attempt int, after int64, limit int) ([]store.LogLine, error) {
	var out []store.LogLine
	errFull := errors.New("full")
	err := a.Each(ctx, buildID, jobID, attempt, after, func(l store.LogLine) error {
		out = append(out, l)
		if limit > 0 && len(out) == limit {
			return errFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, err
	}
	return out, nil
}

// Each calls f with every archived line of a build's job attempt with seq
// > after, in order, reading the blob once (a stream of a long log).
func (a *Archive) Each(ctx context.Context, buildID, jobID int64, attempt int, after int64, f func(store.LogLine) error) error {
	errPast := errors.New("past")
	err := a.each(ctx, buildID, func(l store.LogLine) error {
		if l.JobID > jobID || l.JobID == jobID && l.Attempt > attempt {
			return errPast // the blob is in (job, attempt, seq) order: none follow
		}
		if l.JobID != jobID || l.Attempt != attempt || l.Seq <= after {
			return nil
		}
		return f(l)
	})
	if errors.Is(err, errPast) {
		return nil
	}
	return err
}

// Delete removes a build's archive (none is not an error).
func (a *Archive) Delete(ctx context.Context, buildID int64) error {
	return a.Blobs.Delete(ctx, name(buildID))
}

// each decodes a build's blob line by line.
func (a *Archive) each(ctx context.Context, buildID int64, f func(store.LogLine) error) error {
	b, err := a.Blobs.Open(ctx, name(buildID))
	if err != nil {
		return fmt.Errorf("logarchive: build %d: %w", buildID, err)
	}
	defer b.Close()
	zr, err := zstd.NewReader(b, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("logarchive: %w", err)
	}
	defer zr.Close()
	dec := json.NewDecoder(bufio.NewReader(zr))
	for {
		var l store.LogLine
		if err := dec.Decode(&l); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("logarchive: build %d: %w", buildID, err)
		}
		if err := f(l); err != nil {
			return err
		}
	}
}
