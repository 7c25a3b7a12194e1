package cacheclient

import (
	"path/filepath"
	"runtime"
	"slices"
	"testing"
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
	mibs := func(n int64, s Stats) float64 { return float64(n) / (1 << 20) / s.Duration.Seconds() }
	t.Logf("save:    %d MiB in %d entries -> %d MiB archive, %d blocks, in %v: %.0f MiB/s; allocated %d MiB (%d MiB with 4 MiB blocks)",
		st.Bytes>>20, st.Entries, st.ArchiveBytes>>20, blocks, st.Duration.Round(1e6), mibs(st.Bytes, st), alloc>>20, smallAlloc>>20)
	t.Logf("restore: %d MiB in %d entries in %v: %.0f MiB/s", rst.Bytes>>20, rst.Entries, rst.Duration.Round(1e6), mibs(rst.Bytes, rst))
	if got := slices.Sorted(slices.Values(entries(t, filepath.Dir(dst)))); !slices.Equal(got, []string{"restored"}) {
		t.Errorf("beside the target: %q", got)
	}
}
