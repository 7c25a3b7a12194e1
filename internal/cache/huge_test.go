package cache

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestHugeArchiveStreams uploads and downloads a multi-GiB archive in
// 256 MiB blocks and checks that the bytes allocated by the whole process
// stay far below the archive's size: nothing holds an archive in memory.
// It needs several GiB of disk, so it runs only with KILN_CACHE_HUGE_GIB=N
// (on disk, and on S3 with KILN_TEST_S3, where the download is S3's).
func TestHugeArchiveStreams(t *testing.T) {
	gib, _ := strconv.Atoi(os.Getenv("KILN_CACHE_HUGE_GIB"))
	if gib <= 0 {
		t.Skip("set KILN_CACHE_HUGE_GIB=N to stream an N GiB archive")
	}
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		const block = 256 << 20
		size := int64(gib) << 30
		te := newTestEnv(t, func(c *Config) { c.ProjectBudgetBytes = size + 1 })
		a := te.api(t, mainScope)
		u := a.create("huge")

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		want := sha256.New()
		var ids []string
		for off, i := int64(0), 0; off < size; off, i = off+block, i+1 {
			ids = append(ids, blockID(i))
			body := io.TeeReader(io.LimitReader(&pattern{off}, block), want)
			req, _ := http.NewRequest("PUT", u+"&comp=block&blockid="+blockID(i), body)
			req.ContentLength = block
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 201 {
				t.Fatalf("block %d: %v %v", i, err, resp)
			}
			resp.Body.Close()
		}
		if st, body := a.putBlockList(u, ids...); st != 201 {
			t.Fatalf("block list: %d %s", st, body)
		}
		start := time.Now()
		if st, resp := a.finalize("huge", int(size)); st != 200 {
			t.Fatalf("finalize: %d %v", st, resp)
		}
		// A figure, not an assertion: on S3 this is the archive's upload.
		t.Logf("finalize took %v", time.Since(start).Round(time.Millisecond))
		_, resp := a.twirp("GetCacheEntryDownloadURL", map[string]any{"key": "huge", "version": testVersion})
		dl, err := http.Get(resp["signed_download_url"].(string))
		if err != nil {
			t.Fatal(err)
		}
		defer dl.Body.Close()
		got := sha256.New()
		n, _ := io.Copy(got, dl.Body)
		if n != size || fmt.Sprintf("%x", got.Sum(nil)) != fmt.Sprintf("%x", want.Sum(nil)) {
			t.Fatalf("downloaded %d bytes, want %d, hashes differ: %v", n, size, n == size)
		}
		runtime.ReadMemStats(&after)
		allocated := after.TotalAlloc - before.TotalAlloc
		t.Logf("%d GiB up and down; the process allocated %d MiB in all", gib, allocated>>20)
		if allocated > uint64(size/8) {
			t.Fatalf("allocated %d MiB for a %d GiB archive: something buffers it", allocated>>20, gib)
		}
	})
}

// pattern is an endless, position-dependent byte stream.
type pattern struct{ off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte((p.off + int64(i)) * 2654435761 >> 13)
	}
	p.off += int64(len(b))
	return len(b), nil
}
