package cache

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeDisk is a filesystem of total bytes holding only the cache dir.
func fakeDisk(total uint64) func(string) (DiskUsage, error) {
	return func(dir string) (DiskUsage, error) {
		var used uint64
		filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					used += uint64(info.Size())
				}
			}
			return nil
		})
		return DiskUsage{Total: total, Free: total - min(used, total)}, nil
	}
}

func keys(t *testing.T, te *testEnv, project string) string {
	t.Helper()
	entries, err := te.svc.List(t.Context(), project)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Key)
	}
	return strings.Join(out, ",")
}

func TestEvictMaxAge(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		clock := &fakeClock{now: time.Now()}
		te := newTestEnv(t, func(c *Config) { c.Now = clock.Now; c.MaxAge = 7 * 24 * time.Hour })
		te.api(t, mainScope).save("old", []byte("1"))
		te.api(t, mainScope).save("used", []byte("2"))
		clock.Add(6 * 24 * time.Hour)
		te.api(t, mainScope).lookup("used") // a hit records last_used
		clock.Add(2 * 24 * time.Hour)
		st, err := te.svc.Evict(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Aged != 1 || st.FreedBytes != 1 || keys(t, te, "acme") != "used" {
			t.Fatalf("stats %+v, left %s", st, keys(t, te, "acme"))
		}
		if files := te.files(t); len(files) != 1 {
			t.Fatalf("files %v", files)
		}
	})
}

func TestEvictProjectBudgetOnUpload(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		clock := &fakeClock{now: time.Now()}
		te := newTestEnv(t, func(c *Config) { c.Now = clock.Now; c.ProjectBudgetBytes = 250 })
		a := te.api(t, mainScope)
		other := te.api(t, otherProject)
		data := bytes.Repeat([]byte("x"), 100)
		other.save("theirs-1", data)
		other.save("theirs-2", data)
		a.save("a", data)
		clock.Add(time.Second)
		a.save("b", data)
		clock.Add(time.Second)
		a.lookup("a") // b is now the least recently used
		clock.Add(time.Second)
		a.save("c", data) // 300 > 250: b goes
		if got := keys(t, te, "acme"); got != "c,a" {
			t.Fatalf("acme keeps %s", got)
		}
		if got := keys(t, te, "other"); got != "theirs-2,theirs-1" {
			t.Fatalf("other project lost entries: %s", got)
		}
		// One entry over the whole budget is refused, and evicts nothing.
		u := a.create("huge")
		if st := a.putBlob(u, bytes.Repeat([]byte("x"), 251)); st != 413 {
			t.Fatalf("huge upload: %d", st)
		}
		if got := keys(t, te, "acme"); got != "c,a" {
			t.Fatalf("acme keeps %s", got)
		}
		if st, _ := a.v1Reserve("huge-v1", 251); st != 400 {
			t.Fatalf("huge v1 reserve: %d", st)
		}
	})
}

func TestEvictProjectBudgetPeriodic(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	cfg := func(budget int64) func(*Config) {
		return func(c *Config) { c.Now = clock.Now; c.ProjectBudgetBytes = budget }
	}
	te := newTestEnv(t, cfg(1000))
	for _, k := range []string{"a", "b", "c"} {
		te.api(t, mainScope).save(k, bytes.Repeat([]byte("x"), 100))
		clock.Add(time.Second)
	}
	// The budget shrank (a config change): Evict brings the project under it.
	svc, err := New(func() Config { c := te.svc.cfg; cfg(150)(&c); return c }(), te.db)
	if err != nil {
		t.Fatal(err)
	}
	st, err := svc.Evict(t.Context())
	if err != nil || st.OverBudget != 2 || st.FreedBytes != 200 {
		t.Fatalf("%v %+v", err, st)
	}
	if got := keys(t, te, "acme"); got != "c" {
		t.Fatalf("kept %s", got)
	}
}

func TestEvictDiskHighWater(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	te := newTestEnv(t, func(c *Config) {
		c.Now = clock.Now
		c.DiskUsage = fakeDisk(1000)
		c.DiskHighWater = 0.5
	})
	a := te.api(t, mainScope)
	b := te.api(t, otherProject)
	b.save("b1", bytes.Repeat([]byte("x"), 200))
	clock.Add(time.Second)
	a.save("a1", bytes.Repeat([]byte("x"), 200))
	clock.Add(time.Second)
	// 400 used + 200 > 500: the least recently used entry, of any project, goes.
	a.save("a2", bytes.Repeat([]byte("x"), 200))
	if got := keys(t, te, "other") + "|" + keys(t, te, "acme"); got != "|a2,a1" {
		t.Fatalf("left %s", got)
	}
	// An upload that cannot fit even with everything evicted is refused
	// with a clear error, and evicts nothing.
	u := a.create("huge")
	st, body := a.do("PUT", u, bytes.NewReader(bytes.Repeat([]byte("x"), 600)), map[string]string{"x-ms-blob-type": "BlockBlob"})
	if st != 507 || !strings.Contains(string(body), "high-water mark") {
		t.Fatalf("huge upload: %d %s", st, body)
	}
	if got := keys(t, te, "acme"); got != "a2,a1" {
		t.Fatalf("left %s", got)
	}
}

func TestDiskFullRefusesNewUploads(t *testing.T) {
	te := newTestEnv(t, func(c *Config) {
		c.DiskUsage = func(string) (DiskUsage, error) { return DiskUsage{Total: 1000, Free: 100}, nil }
	})
	a := te.api(t, mainScope)
	status, resp := a.twirp("CreateCacheEntry", map[string]any{"key": "k", "version": testVersion})
	if status != 200 || resp["ok"] != false || !strings.HasPrefix(resp["message"].(string), "insufficient storage: cache disk would be 90.0% full, over its high-water mark of 75.0%") {
		t.Fatalf("create: %d %v", status, resp)
	}
	st, body := a.v1("POST", "caches", strings.NewReader(`{"key":"k","version":"v","cacheSize":10}`), nil)
	if st != 400 || !strings.Contains(string(body), "high-water mark") {
		t.Fatalf("v1 reserve: %d %s", st, body)
	}
	if entries, _ := te.svc.List(t.Context(), "acme"); len(entries) != 0 || len(te.files(t)) != 0 {
		t.Fatalf("left behind: %v %v", entries, te.files(t))
	}
	// The real filesystem with a tiny high-water mark refuses too.
	tiny := newTestEnv(t, func(c *Config) { c.DiskHighWater = 1e-9 })
	if _, resp := tiny.api(t, mainScope).twirp("CreateCacheEntry", map[string]any{"key": "k", "version": testVersion}); resp["ok"] != false {
		t.Fatalf("tiny high-water mark: %v", resp)
	}
}

func TestEvictAbandonedUploadsAndOrphans(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		clock := &fakeClock{now: time.Now()}
		te := newTestEnv(t, func(c *Config) { c.Now = clock.Now; c.UploadTTL = time.Hour })
		a := te.api(t, mainScope)
		a.save("done", []byte("kept"))
		u := a.create("abandoned")
		a.putBlock(u, blockID(1), []byte("partial"))
		st1, id := a.v1Reserve("abandoned-v1", 10)
		a.v1Patch(id, 0, []byte("01234"))
		if st1 != 201 {
			t.Fatal(st1)
		}
		// Files a crash could leave: a blob and a staging dir no entry owns.
		if err := te.svc.blobs.Put(t.Context(), "99999", strings.NewReader("orphan"), 6); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(te.dir, "staging", "88888", "blocks"), 0o755)

		clock.Add(30 * time.Minute)
		st, err := te.svc.Evict(t.Context())
		if err != nil || st.ExpiredUploads != 0 || st.Orphans != 2 {
			t.Fatalf("before the TTL: %v %+v", err, st)
		}
		clock.Add(time.Hour)
		a = te.api(t, mainScope) // the first token expired
		st, err = te.svc.Evict(t.Context())
		if err != nil || st.ExpiredUploads != 2 {
			t.Fatalf("after the TTL: %v %+v", err, st)
		}
		if files := te.files(t); len(files) != 1 || !strings.HasPrefix(files[0], "blobs/") {
			t.Fatalf("files %v", files)
		}
		a.mustHave("done", []byte("kept"))
		a.save("abandoned", []byte("second try"))
	})
}

// RemoveOrphans (what a server that is not the leader runs) removes files
// no entry owns and evicts nothing.
func TestRemoveOrphansOnly(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	te := newTestEnv(t, func(c *Config) { c.Now = clock.Now; c.UploadTTL = time.Hour; c.MaxAge = time.Hour })
	a := te.api(t, mainScope)
	a.save("done", []byte("kept"))
	a.putBlock(a.create("abandoned"), blockID(1), []byte("partial"))
	os.WriteFile(filepath.Join(te.dir, "blobs", "99999"), []byte("orphan"), 0o644)
	clock.Add(2 * time.Hour) // past the upload TTL and the entry's age: Evict would take both
	n, err := te.svc.RemoveOrphans(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("removed %d, %v", n, err)
	}
	if entries, _ := te.svc.List(t.Context(), "acme"); len(entries) != 1 {
		t.Fatalf("entries %+v", entries)
	}
	staged := false
	for _, f := range te.files(t) {
		if strings.HasSuffix(f, "99999") {
			t.Fatalf("orphan left: %v", te.files(t))
		}
		staged = staged || strings.HasPrefix(f, "staging/")
	}
	if !staged {
		t.Fatalf("the abandoned upload's files went: %v", te.files(t))
	}
}

func TestStaleReservationDoesNotBlockTheKey(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	te := newTestEnv(t, func(c *Config) { c.Now = clock.Now; c.UploadTTL = time.Hour })
	te.api(t, mainScope).create("k")
	clock.Add(2 * time.Hour)
	a := te.api(t, mainScope)
	a.save("k", []byte("saved without waiting for Evict"))
	a.mustHave("k", []byte("saved without waiting for Evict"))
}

func TestListAndDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		te := newTestEnv(t, nil)
		a := te.api(t, featureScope)
		a.save("k", []byte("12345"))
		entries, err := te.svc.List(t.Context(), "acme")
		if err != nil || len(entries) != 1 {
			t.Fatalf("%v %v", err, entries)
		}
		e := entries[0]
		if e.Key != "k" || e.Version != testVersion || e.Scope != "feature" || e.Size != 5 || e.Created.IsZero() || e.LastUsed.IsZero() || e.Hits != 0 {
			t.Fatalf("entry %+v", e)
		}
		// Each restore that finds it counts; a miss counts nothing.
		a.mustHave("k", []byte("12345"))
		a.mustHave("k", []byte("12345"))
		a.mustMiss("other-key")
		if entries, err = te.svc.List(t.Context(), "acme"); err != nil || len(entries) != 1 || entries[0].Hits != 2 {
			t.Fatalf("after two restores: %v %+v", err, entries)
		}
		if err := te.svc.Delete(t.Context(), "other", e.ID); err == nil {
			t.Fatal("deleted another project's entry")
		}
		if err := te.svc.Delete(t.Context(), "acme", e.ID); err != nil {
			t.Fatal(err)
		}
		a.mustMiss("k")
		if files := te.files(t); len(files) != 0 {
			t.Fatalf("files %v", files)
		}
	})
}
