package logarchive

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/store"
)

func newArchive(t *testing.T) *Archive {
	t.Helper()
	blobs, err := blobstore.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Archive{Blobs: blobs, TmpDir: t.TempDir()}
}

func lines(jobs, attempts, per int) []store.LogLine {
	var out []store.LogLine
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for j := 1; j <= jobs; j++ {
		for a := 1; a <= attempts; a++ {
			for s := 1; s <= per; s++ {
				out = append(out, store.LogLine{JobID: int64(j), Attempt: a, Seq: int64(s), Step: s % 3, Time: t0.Add(time.Duration(s) * time.Millisecond), Text: "line \x00\xff ünï"})
			}
		}
	}
	return out
}

func feed(ls []store.LogLine) func(func(store.LogLine) error) (int64, error) {
	return func(f func(store.LogLine) error) (int64, error) {
		for _, l := range ls {
			if err := f(l); err != nil {
				return 0, err
			}
		}
		return int64(len(ls)), nil
	}
}

func TestWriteAndPage(t *testing.T) {
	a, ctx := newArchive(t), context.Background()
	all := lines(2, 2, 50)
	if n, err := a.Write(ctx, 7, feed(all)); err != nil || n != 200 {
		t.Fatalf("write: %d %v", n, err)
	}
	got, err := a.Lines(ctx, 7, 2, 1, 10, 15)
	if err != nil || len(got) != 15 || got[0].Seq != 11 || got[14].Seq != 25 || got[0].JobID != 2 || got[0].Attempt != 1 {
		t.Fatalf("page: %d %v %+v", len(got), err, got)
	}
	// Text is a JSON string: invalid UTF-8 reads back as U+FFFD, as in
	// every API answer.
	if want := all[100+10]; !got[0].Time.Equal(want.Time) || got[0].Text != strings.ToValidUTF8(want.Text, "\uFFFD") || got[0].Step != want.Step {
		t.Fatalf("line %+v, want %+v", got[0], want)
	}
	if got, _ := a.Lines(ctx, 7, 2, 2, 45, 0); len(got) != 5 {
		t.Fatalf("rest: %d lines, want 5", len(got))
	}
	if got, _ := a.Lines(ctx, 7, 3, 1, 0, 10); len(got) != 0 {
		t.Fatalf("another job: %d lines", len(got))
	}
	// Written again (a crash before the rows were deleted): replaced.
	if n, err := a.Write(ctx, 7, feed(all[:3])); err != nil || n != 3 {
		t.Fatalf("rewrite: %d %v", n, err)
	}
	if err := a.Delete(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Lines(ctx, 7, 1, 1, 0, 10); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("deleted: %v, want ErrNotFound", err)
	}
	if err := a.Delete(ctx, 7); err != nil {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestWriteFailsCleanly(t *testing.T) {
	a, ctx := newArchive(t), context.Background()
	if _, err := a.Write(ctx, 1, func(func(store.LogLine) error) (int64, error) { return 0, errors.New("store gone") }); err == nil || !strings.Contains(err.Error(), "store gone") {
		t.Fatalf("write: %v", err)
	}
	if _, err := a.Blobs.Stat(ctx, name(1)); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("a failed write left a blob: %v", err)
	}
	// A count that does not match what the blob holds is refused.
	if _, err := a.Write(ctx, 2, func(f func(store.LogLine) error) (int64, error) { return 5, nil }); err == nil || !strings.Contains(err.Error(), "read back 0") {
		t.Fatalf("miscounted write: %v", err)
	}
	// A blob that is not an archive is a clear error.
	if err := a.Blobs.Put(ctx, name(3), strings.NewReader("not zstd"), 8); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Lines(ctx, 3, 1, 1, 0, 10); err == nil || !strings.Contains(err.Error(), "build 3") {
		t.Fatalf("corrupt blob: %v", err)
	}
}
