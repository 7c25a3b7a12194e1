package cache

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBlobBlocksAnyOrderInParallel(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	u := a.create("k")
	var want []byte
	var ids []string
	for i := range 6 {
		want = append(want, bytes.Repeat([]byte{byte('a' + i)}, 1000+i)...)
		ids = append(ids, blockID(i))
	}
	var wg sync.WaitGroup
	for i := 5; i >= 0; i-- { // reverse order, all at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, body := a.putBlock(u, ids[i], bytes.Repeat([]byte{byte('a' + i)}, 1000+i)); st != 201 {
				t.Errorf("Put Block %d: %d %s", i, st, body)
			}
		}()
	}
	wg.Wait()
	// A block sent again replaces the first copy; an unlisted block is dropped.
	a.putBlock(u, ids[2], bytes.Repeat([]byte{'c'}, 1002))
	a.putBlock(u, blockID(99), []byte("unlisted"))
	if st, body := a.putBlockList(u, ids...); st != 201 {
		t.Fatalf("Put Block List: %d %s", st, body)
	}
	if st, resp := a.finalize("k", len(want)); st != 200 {
		t.Fatalf("finalize: %d %v", st, resp)
	}
	a.mustHave("k", want)
	if files := te.files(t); len(files) != 1 {
		t.Fatalf("left behind: %v", files)
	}
}

func TestBlobUploadResponseHeaders(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	u := a.create("k")
	for _, tc := range []struct {
		name string
		do   func() (*httpResult, error)
	}{
		{"put block", func() (*httpResult, error) { return te.raw("PUT", u+"&comp=block&blockid="+blockID(1), "abc", nil) }},
		{"put block list", func() (*httpResult, error) {
			return te.raw("PUT", u+"&comp=blocklist", "<BlockList><Latest>"+blockID(1)+"</Latest></BlockList>", nil)
		}},
		{"put blob", func() (*httpResult, error) {
			return te.raw("PUT", u, "abc", map[string]string{"x-ms-blob-type": "BlockBlob"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			res, err := tc.do()
			if err != nil {
				t.Fatal(err)
			}
			if res.status != 201 {
				t.Fatalf("%d %s", res.status, res.body)
			}
			for _, h := range []string{"x-ms-request-id", "x-ms-version", "Date"} {
				if res.header.Get(h) == "" {
					t.Errorf("missing %s", h)
				}
			}
			if tc.name != "put block" && (res.header.Get("ETag") == "" || res.header.Get("Last-Modified") == "") {
				t.Errorf("missing ETag/Last-Modified: %v", res.header)
			}
		})
	}
}

func TestBlobBadInput(t *testing.T) {
	te, a := newBystanderEnv(t)
	n := 0
	// Each case gets its own reservation; none may become visible, and
	// the bystander must stay intact.
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, key, u string)
	}{
		{"block id not base64", func(t *testing.T, key, u string) {
			if st, body := a.putBlock(u, url.QueryEscape("../../etc/passwd"), []byte("x")); st != 400 || !strings.Contains(string(body), "InvalidQueryParameterValue") {
				t.Fatalf("%d %s", st, body)
			}
		}},
		{"block id too long", func(t *testing.T, key, u string) {
			id := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), 65))
			if st, _ := a.putBlock(u, id, []byte("x")); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"block id decoding to a path", func(t *testing.T, key, u string) {
			id := url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("../../../../escape")))
			if st, _ := a.putBlock(u, id, []byte("x")); st != 201 {
				t.Fatalf("%d", st)
			}
			for _, f := range te.files(t) {
				if !strings.HasPrefix(f, "blobs/") && !strings.HasPrefix(f, "staging/") {
					t.Fatalf("file outside the layout: %s", f)
				}
			}
			if _, err := os.Stat(filepath.Join(te.dir, "..", "escape")); err == nil {
				t.Fatal("block escaped the cache dir")
			}
		}},
		{"block list names an unknown block", func(t *testing.T, key, u string) {
			a.putBlock(u, blockID(1), []byte("one"))
			st, body := a.putBlockList(u, blockID(1), blockID(2))
			if st != 400 || !strings.Contains(string(body), "InvalidBlockList") {
				t.Fatalf("%d %s", st, body)
			}
			// Nothing changed: the known block is still there to commit.
			if st, _ := a.putBlockList(u, blockID(1)); st != 201 {
				t.Fatalf("retry: %d", st)
			}
			a.mustMiss(key)
		}},
		{"block list names a committed block", func(t *testing.T, key, u string) {
			a.putBlock(u, blockID(1), []byte("one"))
			st, _ := a.do("PUT", u+"&comp=blocklist", strings.NewReader("<BlockList><Committed>"+blockID(1)+"</Committed></BlockList>"), nil)
			if st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"block list not XML", func(t *testing.T, key, u string) {
			if st, _ := a.do("PUT", u+"&comp=blocklist", strings.NewReader("<BlockList"), nil); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"put blob without blob type", func(t *testing.T, key, u string) {
			if st, _ := a.do("PUT", u, strings.NewReader("abc"), nil); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"no content length", func(t *testing.T, key, u string) {
			res, err := te.raw("PUT", u+"&comp=block&blockid="+blockID(1), "", map[string]string{"Transfer-Encoding": "chunked"})
			if err != nil || res.status != 411 {
				t.Fatalf("%v %+v", err, res)
			}
		}},
		{"finalize size larger than upload", func(t *testing.T, key, u string) {
			a.putBlob(u, []byte("12345"))
			st, resp := a.finalize(key, 6)
			if st != 400 || resp["code"] != "invalid_argument" {
				t.Fatalf("%d %v", st, resp)
			}
			// The bad upload was discarded: the key can be saved again.
			a.save(key, []byte("fresh"))
			a.mustHave(key, []byte("fresh"))
			te.svc.Delete(t.Context(), "acme", mustEntry(t, te, key).ID)
		}},
		{"finalize size smaller than upload", func(t *testing.T, key, u string) {
			a.putBlob(u, []byte("12345"))
			if st, _ := a.finalize(key, 4); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"finalize with nothing uploaded", func(t *testing.T, key, u string) {
			if st, _ := a.finalize(key, 0); st != 400 {
				t.Fatalf("%d", st)
			}
		}},
		{"truncated put block", func(t *testing.T, key, u string) {
			r := te.sendRaw(t, "PUT", pathOf(u)+"&comp=block&blockid="+blockID(1), nil, 1<<20, bytes.Repeat([]byte("x"), 1000))
			if r.Status < 400 {
				t.Fatalf("truncated block answered %d", r.Status)
			}
			if st, _ := a.putBlockList(u, blockID(1)); st != 400 {
				t.Fatalf("truncated block was staged: %d", st)
			}
		}},
		{"truncated put blob", func(t *testing.T, key, u string) {
			te.sendRaw(t, "PUT", pathOf(u), map[string]string{"x-ms-blob-type": "BlockBlob"}, 1<<20, bytes.Repeat([]byte("x"), 1000))
			if st, _ := a.finalize(key, 1000); st != 400 {
				t.Fatalf("truncated blob was kept: %d", st)
			}
		}},
		{"body longer than Content-Length", func(t *testing.T, key, u string) {
			// HTTP framing stops the body at 5 bytes; the finalize size
			// (what the client really sent) then does not match.
			te.sendRaw(t, "PUT", pathOf(u), map[string]string{"x-ms-blob-type": "BlockBlob"}, 5, []byte("0123456789"))
			if st, resp := a.finalize(key, 10); st != 400 {
				t.Fatalf("%d %v", st, resp)
			}
		}},
		{"tampered signature", func(t *testing.T, key, u string) {
			bad := strings.Replace(u, "sig=", "sig=A", 1)
			if st := a.putBlob(bad, []byte("x")); st != 403 {
				t.Fatalf("%d", st)
			}
		}},
		{"read URL used to write", func(t *testing.T, key, u string) {
			if st := a.putBlob(te.svc.blobURL(entryIDOf(u), opRead, time.Hour), []byte("x")); st != 403 {
				t.Fatalf("%d", st)
			}
		}},
		{"URL of another entry", func(t *testing.T, key, u string) {
			id := strings.Split(pathOf(u), "/")[2]
			other := strings.Replace(u, "/"+id+"/", "/"+mustEntryID(t, te, "bystander")+"/", 1)
			if st := a.putBlob(other, []byte("x")); st != 403 {
				t.Fatalf("%d", st)
			}
		}},
		{"expired URL", func(t *testing.T, key, u string) {
			if st := a.putBlob(te.svc.blobURL(entryIDOf(u), opWrite, -time.Second), []byte("x")); st != 403 {
				t.Fatalf("%d", st)
			}
		}},
		{"path traversal URLs", func(t *testing.T, key, u string) {
			q := u[strings.Index(u, "?"):]
			for _, p := range []string{
				"/cache-blobs/../../../etc/passwd" + q,
				"/cache-blobs/%2e%2e/%2e%2e/cache" + q,
				"/cache-blobs/1/..%2F..%2F..%2Fetc%2Fpasswd" + q,
				"/cache-blobs/-1/cache" + q,
				"/cache-blobs/1/cache/../../../x" + q,
			} {
				for _, m := range []string{"GET", "PUT"} {
					if st, _ := a.do(m, p, strings.NewReader("x"), map[string]string{"x-ms-blob-type": "BlockBlob"}); st < 300 {
						t.Fatalf("%s %s: %d", m, p, st)
					}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			n++
			key := fmt.Sprintf("case-%d", n)
			tc.run(t, key, a.create(key))
			a.mustMiss(key)
			a.assertUnharmed()
		})
	}
}

func mustEntry(t *testing.T, te *testEnv, key string) Entry {
	t.Helper()
	entries, err := te.svc.List(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Key == key {
			return e
		}
	}
	t.Fatalf("no entry %s", key)
	return Entry{}
}

func mustEntryID(t *testing.T, te *testEnv, key string) string {
	return fmt.Sprint(mustEntry(t, te, key).ID)
}

// entryIDOf is the entry id in a blob URL.
func entryIDOf(u string) int64 {
	var id int64
	fmt.Sscan(strings.Split(pathOf(u), "/")[2], &id)
	return id
}
