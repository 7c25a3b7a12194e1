package cacheclient

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestLargeTree saves and restores a 110 MiB tree of random (so
// incompressible) files: several 32 MiB blocks, uploaded in parallel and
// committed in order, and a streamed download. It logs the throughput and
// the memory the save allocated (figures, not assertions: no timed test),
// and checks that a save with small blocks allocates far less than the
// archive's size.
func TestLargeTree(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 440 MiB to disk")
	}
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	src := t.TempDir()
	randomTree(t, filepath.Join(src, "big"), 5, 12<<20, 3)     // 60 MiB in large files
	randomTree(t, filepath.Join(src, "small"), 800, 64<<10, 4) // 50 MiB in 800 files
	version := Version([]string{"/large"})
	te.requests()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := c.Save(ctx, "large", version, []string{src})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	// TotalAlloc counts the server's allocations too (same process).
	alloc := after.TotalAlloc - before.TotalAlloc
	blocks := 0
	for _, r := range te.requests() {
		if r == "PUT block" {
			blocks++
		}
	}
	if want := int(st.ArchiveBytes/defaultBlockSize) + 1; blocks != want || st.Bytes != 110<<20 {
		t.Errorf("%d blocks, %d bytes; want %d blocks, %d bytes", blocks, st.Bytes, want, 110<<20)
	}

	// Streaming: with 4 MiB blocks, a save allocates a fraction of the
	// archive's size (the blocks in flight, the encoder's window, buffers).
	small := *c
	small.BlockSize = 4 << 20
	runtime.GC()
	runtime.ReadMemStats(&before)
	sst, err := small.Save(ctx, "large-small-blocks", version, []string{src})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	smallAlloc := after.TotalAlloc - before.TotalAlloc
	if smallAlloc > uint64(sst.ArchiveBytes)/2 {
		t.Errorf("a save with 4 MiB blocks allocated %d MiB for a %d MiB archive: is it held in memory?", smallAlloc>>20, sst.ArchiveBytes>>20)
	}

	dst := filepath.Join(t.TempDir(), "restored")
	matched, rst, err := c.Restore(ctx, "large", nil, version, []string{dst})
	if err != nil || matched != "large" {
		t.Fatalf("restore: %q, %v", matched, err)
	}
	compareTrees(t, snapshot(t, src), snapshot(t, dst))
	if rst.ArchiveBytes != st.ArchiveBytes {
		t.Errorf("restored %d archive bytes, saved %d", rst.ArchiveBytes, st.ArchiveBytes)
	}
	// The baseline, in the same run: a plain copy of the same files.
	t0 := time.Now()
	copyTree(t, src, filepath.Join(t.TempDir(), "copy"))
	copyTime := time.Since(t0)
	mibs := func(n int64, s Stats) float64 { return float64(n) / (1 << 20) / s.Duration.Seconds() }
	t.Logf("save:    %d MiB in %d entries -> %d MiB archive, %d blocks, in %v: %.0f MiB/s; allocated %d MiB (%d MiB with 4 MiB blocks)",
		st.Bytes>>20, st.Entries, st.ArchiveBytes>>20, blocks, st.Duration.Round(1e6), mibs(st.Bytes, st), alloc>>20, smallAlloc>>20)
	t.Logf("restore: %d MiB in %d entries in %v: %.0f MiB/s", rst.Bytes>>20, rst.Entries, rst.Duration.Round(1e6), mibs(rst.Bytes, rst))
	t.Logf("plain copy of the tree: %v: %.0f MiB/s; save takes %.1fx as long, restore %.1fx",
		copyTime.Round(1e6), float64(st.Bytes)/(1<<20)/copyTime.Seconds(), st.Duration.Seconds()/copyTime.Seconds(), rst.Duration.Seconds()/copyTime.Seconds())
	if got := slices.Sorted(slices.Values(entries(t, filepath.Dir(dst)))); !slices.Equal(got, []string{"restored"}) {
		t.Errorf("beside the target: %q", got)
	}
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
