package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// v1Save reserves key, uploads data in chunks of size chunk (all at once,
// last chunk first) and commits it.
func (a *api) v1Save(key string, data []byte, chunk int) int64 {
	a.t.Helper()
	st, id := a.v1Reserve(key, len(data))
	if st != 201 || id == 0 {
		a.t.Fatalf("reserve %s: %d", key, st)
	}
	var wg sync.WaitGroup
	for off := (len(data) - 1) / chunk * chunk; off >= 0; off -= chunk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st := a.v1Patch(id, off, data[off:min(off+chunk, len(data))]); st != 204 {
				a.t.Errorf("PATCH at %d: %d", off, st)
			}
		}()
	}
	wg.Wait()
	if st, body := a.v1Commit(id, len(data)); st != 204 {
		a.t.Fatalf("commit %s: %d %s", key, st, body)
	}
	return id
}

// v1Lookup returns the v1 lookup's status and entry.
func (a *api) v1Lookup(keys, version string) (int, v1CacheEntry) {
	a.t.Helper()
	st, body := a.v1("GET", "cache?keys="+keys+"&version="+version, nil, nil)
	var e v1CacheEntry
	if st == 200 {
		json.Unmarshal(body, &e)
	}
	return st, e
}

func TestV1RoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		te := newTestEnv(t, nil)
		a := te.api(t, mainScope)
		data := bytes.Repeat([]byte("abcdefghij"), 2000)
		id := a.v1Save("k", data, 3000)

		st, e := a.v1Lookup("nope,k", testVersion)
		if st != 200 || e.CacheKey != "k" || e.Scope != "main" || e.ArchiveLocation == "" {
			t.Fatalf("lookup: %d %+v", st, e)
		}
		if st, body := a.do("GET", e.ArchiveLocation, nil, nil); st != 200 || !bytes.Equal(body, data) {
			t.Fatalf("download: %d, %d bytes", st, len(body))
		}
		// A retried commit succeeds; the entry is also visible over v2.
		if st, _ := a.v1Commit(id, len(data)); st != 204 {
			t.Fatalf("retried commit: %d", st)
		}
		a.mustHave("k", data)
		if st, _ := a.v1Lookup("absent", testVersion); st != 204 {
			t.Fatalf("miss: %d", st)
		}
		if st, _ := a.v1Lookup("k", "other-version"); st != 204 {
			t.Fatalf("other version: %d", st)
		}
		st, body := a.v1("GET", "caches?key=k", nil, nil)
		if st != 200 || !strings.Contains(string(body), `"totalCount":1`) {
			t.Fatalf("list: %d %s", st, body)
		}
		if st, _ := a.v1Reserve("k", 10); st != 409 {
			t.Fatalf("second reserve: %d", st)
		}
	})
}

func TestV1BadInput(t *testing.T) {
	te, a := newBystanderEnv(t)
	n := 0
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, key string, id int64)
	}{
		{"commit size larger than received", func(t *testing.T, key string, id int64) {
			a.v1Patch(id, 0, []byte("0123456789"))
			if st, body := a.v1Commit(id, 20); st != 400 || !strings.Contains(string(body), "does not match") {
				t.Fatalf("%d %s", st, body)
			}
			// The bad upload was discarded: the key can be saved again.
			a.v1Save(key, []byte("fresh"), 2)
			if st, _ := a.v1Lookup(key, testVersion); st != 200 {
				t.Fatalf("resave: %d", st)
			}
			te.svc.Delete(t.Context(), "acme", mustEntry(t, te, key).ID)
		}},
		{"commit size smaller than received", func(t *testing.T, key string, id int64) {
			a.v1Patch(id, 0, []byte("0123456789"))
			if st, _ := a.v1Commit(id, 5); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"gap between chunks", func(t *testing.T, key string, id int64) {
			a.v1Patch(id, 0, []byte("01234"))
			a.v1Patch(id, 10, []byte("abcde"))
			if st, body := a.v1Commit(id, 15); st != 400 || !strings.Contains(string(body), "expected a chunk at byte 5") {
				t.Fatalf("%d %s", st, body)
			}
		}},
		{"overlapping chunks", func(t *testing.T, key string, id int64) {
			a.v1Patch(id, 0, []byte("01234"))
			a.v1Patch(id, 3, []byte("34567"))
			if st, _ := a.v1Commit(id, 8); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"chunk body longer than its range", func(t *testing.T, key string, id int64) {
			res, err := te.raw("PATCH", te.srv.URL+v1Prefix+fmt.Sprintf("caches/%d", id), "0123456789",
				map[string]string{"Authorization": "Bearer " + a.token, "Content-Range": "bytes 0-4/*", "Transfer-Encoding": "chunked"})
			if err != nil || res.status != 400 {
				t.Fatalf("%v %+v", err, res)
			}
			if st, _ := a.v1Commit(id, 5); st != 400 {
				t.Fatalf("commit: %d", st)
			}
		}},
		{"chunk body shorter than its range", func(t *testing.T, key string, id int64) {
			res, err := te.raw("PATCH", te.srv.URL+v1Prefix+fmt.Sprintf("caches/%d", id), "012",
				map[string]string{"Authorization": "Bearer " + a.token, "Content-Range": "bytes 0-4/*", "Transfer-Encoding": "chunked"})
			if err != nil || res.status != 400 {
				t.Fatalf("%v %+v", err, res)
			}
		}},
		{"Content-Length disagrees with Content-Range", func(t *testing.T, key string, id int64) {
			st, _ := a.v1("PATCH", fmt.Sprintf("caches/%d", id), strings.NewReader("0123456789"), map[string]string{"Content-Range": "bytes 0-4/*"})
			if st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"bad Content-Range", func(t *testing.T, key string, id int64) {
			for _, cr := range []string{"", "bytes 5-1/*", "bytes -1-3/*", "items 0-4/*", "bytes 0-x/*"} {
				st, _ := a.v1("PATCH", fmt.Sprintf("caches/%d", id), strings.NewReader("01234"), map[string]string{"Content-Range": cr})
				if st != 400 {
					t.Fatalf("%q: %d", cr, st)
				}
			}
		}},
		{"chunk beyond the reserved size", func(t *testing.T, key string, id int64) {
			if st := a.v1Patch(id, 95, []byte("0123456789")); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"truncated chunk", func(t *testing.T, key string, id int64) {
			r := te.sendRaw(t, "PATCH", v1Prefix+fmt.Sprintf("caches/%d", id),
				map[string]string{"Authorization": "Bearer " + a.token, "Content-Range": "bytes 0-99/*"}, 100, []byte("0123456789"))
			if r.Status < 400 {
				t.Fatalf("answered %d", r.Status)
			}
			if st, _ := a.v1Commit(id, 100); st != 400 {
				t.Fatalf("truncated chunk was kept: %d", st)
			}
		}},
		{"ids that are not ids", func(t *testing.T, key string, id int64) {
			for _, p := range []string{"caches/..%2F..%2Fetc", "caches/-1", "caches/1.5", "caches/99999"} {
				if st, _ := a.v1("PATCH", p, strings.NewReader("x"), map[string]string{"Content-Range": "bytes 0-0/*"}); st != 404 {
					t.Fatalf("PATCH %s: %d", p, st)
				}
				if st, _ := a.v1("POST", p, strings.NewReader(`{"size":1}`), nil); st != 404 {
					t.Fatalf("POST %s: %d", p, st)
				}
			}
		}},
		{"another project's reservation", func(t *testing.T, key string, id int64) {
			b := te.api(t, otherProject)
			if st := b.v1Patch(id, 0, []byte("x")); st != 404 {
				t.Fatalf("PATCH: %d", st)
			}
			if st, _ := b.v1Commit(id, 1); st != 404 {
				t.Fatalf("commit: %d", st)
			}
		}},
		{"another branch's reservation", func(t *testing.T, key string, id int64) {
			if st := te.api(t, featureScope).v1Patch(id, 0, []byte("x")); st != 404 {
				t.Fatalf("PATCH: %d", st)
			}
		}},
		{"commit without size", func(t *testing.T, key string, id int64) {
			if st, _ := a.v1("POST", fmt.Sprintf("caches/%d", id), strings.NewReader(`{}`), nil); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			n++
			key := fmt.Sprintf("case-%d", n)
			st, id := a.v1Reserve(key, 100)
			if st != 201 {
				t.Fatalf("reserve: %d", st)
			}
			tc.run(t, key, id)
			if st, _ := a.v1Lookup(key, testVersion); st != 204 {
				t.Fatalf("entry %s visible: %d", key, st)
			}
			a.assertUnharmed()
		})
	}
}

func TestV1BadKeys(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	for _, tc := range []struct{ name, key, msg string }{
		{"long", strings.Repeat("k", 513), "cannot be larger than 512 characters"},
		{"comma", "a,b", "cannot contain commas"},
		{"empty", "", "key is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			b, _ := json.Marshal(map[string]any{"key": tc.key, "version": testVersion})
			st, body := a.v1("POST", "caches", bytes.NewReader(b), map[string]string{"Content-Type": "application/json"})
			var resp struct{ Message string }
			json.Unmarshal(body, &resp)
			if st != 400 || !strings.Contains(resp.Message, tc.msg) {
				t.Fatalf("%d %s", st, body)
			}
		})
	}
	if st, _ := a.v1Lookup(strings.Repeat("k", 513), testVersion); st != 400 {
		t.Fatalf("long lookup key: %d", st)
	}
	if st, _ := a.v1Lookup("a,b,c,d,e,f,g,h,i,j,k", testVersion); st != 400 {
		t.Fatalf("eleven keys: %d", st)
	}
	if entries, _ := te.svc.List(t.Context(), "acme"); len(entries) != 0 || len(te.files(t)) != 0 {
		t.Fatalf("left behind: %v %v", entries, te.files(t))
	}
}
