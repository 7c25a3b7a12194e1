package cache

import (
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
)

// envMaker makes a test env (newTestEnv, or one on another blob store).
type envMaker func(t *testing.T, mutate func(*Config)) *testEnv

// forEachStore runs f on the default disk store and on S3 (skipped without
// KILN_TEST_S3). f's newTestEnv parameter shadows the package's, so a
// test's body reads the same on both.
func forEachStore(t *testing.T, f func(t *testing.T, newTestEnv envMaker)) {
	t.Run("disk", func(t *testing.T) { f(t, newTestEnv) })
	t.Run("s3", func(t *testing.T) { f(t, newS3Env) })
}

// newS3Env is newTestEnv with the archives in the test S3 server, under a
// prefix of the test's own.
func newS3Env(t *testing.T, mutate func(*Config)) *testEnv {
	t.Helper()
	blobs := blobstoretest.S3(t)
	return newTestEnv(t, func(c *Config) {
		c.Blobs = blobs
		if mutate != nil {
			mutate(c)
		}
	})
}

// With S3, the real client saves through Kiln and restores straight from
// S3: the download URL is S3's presigned GET, and no archive byte goes
// down through the service (its recorder sees no blob GET or HEAD).
func TestS3DownloadsBypassTheService(t *testing.T) {
	cfg := blobstoretest.S3Config(t)
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			te := newS3Env(t, nil)
			j := te.job(t, proto, mainScope)
			j.save(t, "deps", map[string][]byte{"a.txt": []byte("from S3")})
			other := te.job(t, proto, mainScope)
			if got := other.restore(t, "deps"); got != "deps" {
				t.Fatalf("matched %q", got)
			}
			if string(other.read(t, "a.txt")) != "from S3" {
				t.Fatalf("restored %q", other.read(t, "a.txt"))
			}
			if down := te.rec.matching(func(r request) bool {
				return strings.HasPrefix(r.Path, blobPrefix) && (r.Method == "GET" || r.Method == "HEAD")
			}); len(down) != 0 {
				t.Fatalf("the archive came down through the service: %v", down)
			}
			if up := te.rec.matching(func(r request) bool {
				return r.Method == "PUT" && strings.HasPrefix(r.Path, blobPrefix) || r.Method == "PATCH"
			}); len(up) == 0 {
				t.Fatal("no upload went through the service")
			}
			entries, err := te.svc.List(t.Context(), "acme")
			if err != nil || len(entries) != 1 {
				t.Fatalf("entries %v %v", entries, err)
			}
			if _, err := te.svc.blobs.Stat(t.Context(), blobName(entries[0].ID)); err != nil {
				t.Fatalf("the archive is not in S3: %v", err)
			}
			if files := te.files(t); len(files) != 1 || !strings.HasPrefix(files[0], "blobs/") {
				t.Fatalf("want only the blob in S3, nothing on disk: %v", files)
			}
		})
	}

	t.Run("download URL", func(t *testing.T) {
		te := newS3Env(t, nil)
		a := te.api(t, mainScope)
		a.save("k", []byte("presigned"))
		_, resp := a.twirp("GetCacheEntryDownloadURL", map[string]any{"key": "k", "version": testVersion})
		u, err := url.Parse(resp["signed_download_url"].(string))
		if err != nil {
			t.Fatal(err)
		}
		ep, _ := url.Parse(cfg.Endpoint)
		q := u.Query()
		if u.Host != ep.Host || q.Get("X-Amz-Signature") == "" || q.Get("X-Amz-Expires") != "3600" {
			t.Fatalf("download URL %s is not S3's presigned GET for an hour", u.Redacted())
		}
		if strings.Contains(u.String(), cfg.SecretKey) {
			t.Fatal("the download URL carries the secret key")
		}
		_, e := a.v1Lookup("k", testVersion)
		if v1u, _ := url.Parse(e.ArchiveLocation); v1u == nil || v1u.Host != ep.Host {
			t.Fatalf("v1 archiveLocation %q is not on S3", e.ArchiveLocation)
		}
		a.mustHave("k", []byte("presigned"))
		if n := len(te.rec.matching(func(r request) bool { return strings.HasPrefix(r.Path, blobPrefix) && r.Method == "GET" })); n != 0 {
			t.Fatalf("%d downloads through the service", n)
		}
		// A URL of the service's own (handed out before the switch to S3)
		// still downloads, the service reading the object from S3, ranges
		// included.
		entries, _ := te.svc.List(t.Context(), "acme")
		own := te.svc.blobURL(entries[0].ID, opRead, time.Hour)
		if st, body := a.do("GET", own, nil, map[string]string{"Range": "bytes=3-5"}); st != 206 || string(body) != "sig" {
			t.Fatalf("service URL on S3: %d %q", st, body)
		}
	})
}

// Eviction and deletion remove the S3 object; the orphan sweep removes
// objects no entry owns.
func TestS3EvictAndDeleteRemoveTheObject(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	te := newS3Env(t, func(c *Config) { c.Now = clock.Now; c.MaxAge = time.Hour })
	a := te.api(t, mainScope)
	a.save("old", []byte("old"))
	a.save("gone", []byte("gone"))
	entries, _ := te.svc.List(t.Context(), "acme")
	ids := map[string]int64{}
	for _, e := range entries {
		ids[e.Key] = e.ID
	}
	if err := te.svc.Delete(t.Context(), "acme", ids["gone"]); err != nil {
		t.Fatal(err)
	}
	if _, err := te.svc.blobs.Stat(t.Context(), blobName(ids["gone"])); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("deleted entry's object: %v, want ErrNotFound", err)
	}
	clock.Add(2 * time.Hour)
	a = te.api(t, mainScope)
	st, err := te.svc.Evict(t.Context())
	if err != nil || st.Aged != 1 {
		t.Fatalf("%v %+v", err, st)
	}
	if _, err := te.svc.blobs.Stat(t.Context(), blobName(ids["old"])); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("evicted entry's object: %v, want ErrNotFound", err)
	}
	if files := te.files(t); len(files) != 0 {
		t.Fatalf("left %v", files)
	}
}

// With the archives in S3 the local disk holds only uploads in progress:
// a full disk refuses new uploads with a message that says so, and evicts
// nothing (that would free nothing here).
func TestS3FullStagingDisk(t *testing.T) {
	var full atomic.Bool
	te := newS3Env(t, func(c *Config) {
		c.DiskUsage = func(string) (DiskUsage, error) {
			if full.Load() {
				return DiskUsage{Total: 1000, Free: 100}, nil
			}
			return DiskUsage{Total: 1000, Free: 1000}, nil
		}
	})
	a := te.api(t, mainScope)
	a.save("kept", []byte("kept"))
	full.Store(true)
	st, resp := a.twirp("CreateCacheEntry", map[string]any{"key": "more", "version": testVersion})
	if msg, _ := resp["message"].(string); st != 200 || resp["ok"] != false || !strings.Contains(msg, "staging disk") {
		t.Fatalf("CreateCacheEntry on a full staging disk: %d %v", st, resp)
	}
	a.mustHave("kept", []byte("kept"))
}
