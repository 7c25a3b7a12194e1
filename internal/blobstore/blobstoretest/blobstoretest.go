// Package blobstoretest is the conformance suite every blobstore.Store
// passes (Run), and the test S3 server's settings (S3Config).
package blobstoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
)

// Run runs the suite on stores made by open, one per subtest; each must
// start empty.
func Run(t *testing.T, open func(t *testing.T) blobstore.Store) {
	ctx := context.Background()
	t.Run("PutOpenRead", func(t *testing.T) {
		s := open(t)
		data := random(t, 100_000)
		must(t, s.Put(ctx, "a/b/1", bytes.NewReader(data), int64(len(data))))
		b, err := s.Open(ctx, "a/b/1")
		must(t, err)
		defer b.Close()
		if b.Info().Size != int64(len(data)) {
			t.Fatalf("Info().Size = %d, want %d", b.Info().Size, len(data))
		}
		got, err := io.ReadAll(b)
		must(t, err)
		if !bytes.Equal(got, data) {
			t.Fatal("read bytes differ from the put ones")
		}
		// Ranged reads: http.ServeContent seeks, then reads.
		if _, err := b.Seek(70_000, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		part := make([]byte, 1000)
		if _, err := io.ReadFull(b, part); err != nil || !bytes.Equal(part, data[70_000:71_000]) {
			t.Fatalf("read after seek: %v, equal %v", err, bytes.Equal(part, data[70_000:71_000]))
		}
		if n, err := b.Seek(0, io.SeekEnd); err != nil || n != int64(len(data)) {
			t.Fatalf("Seek(0, end) = %d, %v", n, err)
		}
		if _, err := b.ReadAt(part, 5); err != nil || !bytes.Equal(part, data[5:1005]) {
			t.Fatalf("ReadAt: %v", err)
		}
		st, err := s.Stat(ctx, "a/b/1")
		must(t, err)
		if st.Size != int64(len(data)) || st.ModTime.IsZero() {
			t.Fatalf("Stat = %+v", st)
		}
	})
	t.Run("EmptyBlob", func(t *testing.T) {
		s := open(t)
		must(t, s.Put(ctx, "empty", bytes.NewReader(nil), 0))
		b, err := s.Open(ctx, "empty")
		must(t, err)
		defer b.Close()
		got, err := io.ReadAll(b)
		if err != nil || len(got) != 0 || b.Info().Size != 0 {
			t.Fatalf("empty blob: %d bytes, size %d, %v", len(got), b.Info().Size, err)
		}
	})
	t.Run("PutReplaces", func(t *testing.T) {
		s := open(t)
		must(t, s.Put(ctx, "x", strings.NewReader("first"), 5))
		must(t, s.Put(ctx, "x", strings.NewReader("second!"), 7))
		if got := readAll(t, s, "x"); got != "second!" {
			t.Fatalf("got %q, want the second put", got)
		}
	})
	t.Run("PutWrongSize", func(t *testing.T) {
		s := open(t)
		for _, c := range []struct {
			body string
			size int64
		}{{"short", 10}, {"longer than announced", 6}} {
			err := s.Put(ctx, "bad", strings.NewReader(c.body), c.size)
			if !errors.Is(err, blobstore.ErrSize) {
				t.Errorf("Put(%q, size %d) = %v, want ErrSize", c.body, c.size, err)
			}
			if _, err := s.Stat(ctx, "bad"); !errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("after a failed Put(%q, size %d), Stat = %v, want ErrNotFound", c.body, c.size, err)
			}
		}
		if names, err := s.List(ctx); err != nil || len(names) != 0 {
			t.Fatalf("failed puts left %v (%v)", names, err)
		}
	})
	t.Run("PutFileMovesTheFile", func(t *testing.T) {
		s := open(t)
		// Above 16 MiB, so S3 clients upload it in parts.
		data := random(t, 40<<20+123)
		path := filepath.Join(t.TempDir(), "staged")
		must(t, os.WriteFile(path, data, 0o600))
		start := time.Now()
		must(t, s.PutFile(ctx, "files/7", path))
		t.Logf("PutFile of %d MiB: %v", len(data)>>20, time.Since(start))
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the staged file is still there: %v", err)
		}
		if got := readAll(t, s, "files/7"); got != string(data) {
			t.Fatal("moved blob differs from the file")
		}
		if err := s.PutFile(ctx, "files/8", filepath.Join(t.TempDir(), "missing")); err == nil {
			t.Fatal("PutFile of a missing file succeeded")
		}
	})
	t.Run("Missing", func(t *testing.T) {
		s := open(t)
		if _, err := s.Open(ctx, "nope"); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Open = %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "nope"); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "nope"); err != nil {
			t.Errorf("Delete of a missing blob = %v, want nil", err)
		}
	})
	t.Run("DeleteAndList", func(t *testing.T) {
		s := open(t)
		for _, n := range []string{"1", "2", "dir/3"} {
			must(t, s.Put(ctx, n, strings.NewReader(n), int64(len(n))))
		}
		must(t, s.Delete(ctx, "2"))
		if _, err := s.Stat(ctx, "2"); !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("Stat after Delete = %v", err)
		}
		names, err := s.List(ctx)
		must(t, err)
		slices.Sort(names)
		if !slices.Equal(names, []string{"1", "dir/3"}) {
			t.Fatalf("List = %v, want [1 dir/3]", names)
		}
	})
	t.Run("BadNames", func(t *testing.T) {
		s := open(t)
		for _, n := range []string{"", "../x", "/abs", "a//b", ".hidden", "a/../b", "a/", "sp ace", "x\x00"} {
			if err := s.Put(ctx, n, strings.NewReader("x"), 1); err == nil {
				t.Errorf("Put(%q) succeeded", n)
			}
			if _, err := s.Open(ctx, n); err == nil || errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("Open(%q) = %v, want a bad-name error", n, err)
			}
			if err := s.Delete(ctx, n); err == nil {
				t.Errorf("Delete(%q) succeeded", n)
			}
			if _, err := s.PresignGet(ctx, n, time.Minute); err == nil {
				t.Errorf("PresignGet(%q) succeeded", n)
			}
		}
	})
	t.Run("PresignGet", func(t *testing.T) {
		s := open(t)
		data := random(t, 50_000)
		must(t, s.Put(ctx, "p/1", bytes.NewReader(data), int64(len(data))))
		u, err := s.PresignGet(ctx, "p/1", time.Minute)
		must(t, err)
		if u == "" {
			t.Skip("this store does not presign (its owner serves the bytes)")
		}
		resp := get(t, u, nil)
		if resp.status != 200 || !bytes.Equal(resp.body, data) || resp.contentLength != int64(len(data)) {
			t.Fatalf("GET presigned: %d, %d bytes (Content-Length %d), want 200 and the blob", resp.status, len(resp.body), resp.contentLength)
		}
		resp = get(t, u, map[string]string{"Range": "bytes=100-199"})
		if resp.status != http.StatusPartialContent || !bytes.Equal(resp.body, data[100:200]) {
			t.Fatalf("ranged GET presigned: %d, %d bytes", resp.status, len(resp.body))
		}
		// The URL signs this one blob: another name, or a changed
		// signature, is refused.
		pu, _ := url.Parse(u)
		q := pu.Query()
		sig := q.Get("X-Amz-Signature")
		if sig == "" {
			t.Fatalf("presigned URL %s has no X-Amz-Signature", pu.Redacted())
		}
		q.Set("X-Amz-Signature", strings.Repeat("0", len(sig)))
		pu.RawQuery = q.Encode()
		if r := get(t, pu.String(), nil); r.status != http.StatusForbidden {
			t.Fatalf("GET with a bad signature: %d, want 403", r.status)
		}
		other, _ := url.Parse(u)
		other.Path = strings.TrimSuffix(other.Path, "p/1") + "p/2"
		if r := get(t, other.String(), nil); r.status != http.StatusForbidden {
			t.Fatalf("GET of another name with the URL's signature: %d, want 403", r.status)
		}
		must(t, s.Delete(ctx, "p/1"))
		if r := get(t, u, nil); r.status != http.StatusNotFound {
			t.Fatalf("GET presigned after Delete: %d, want 404", r.status)
		}
	})
}

type result struct {
	status        int
	body          []byte
	contentLength int64
}

func get(t *testing.T, u string, header map[string]string) result {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	must(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return result{resp.StatusCode, body, resp.ContentLength}
}

func readAll(t *testing.T, s blobstore.Store, name string) string {
	t.Helper()
	b, err := s.Open(context.Background(), name)
	must(t, err)
	defer b.Close()
	got, err := io.ReadAll(b)
	must(t, err)
	return string(got)
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// S3Config is the test S3 server's settings from KILN_TEST_S3
// (http://host:port/bucket), KILN_TEST_S3_ACCESS_KEY and
// KILN_TEST_S3_SECRET_KEY (scripts/s3.sh --env prints them), with a prefix
// of the test's own whose objects are removed when it ends. Without
// KILN_TEST_S3 the test is skipped.
func S3Config(t testing.TB) blobstore.S3Config {
	t.Helper()
	raw := os.Getenv("KILN_TEST_S3")
	if raw == "" {
		t.Skip("KILN_TEST_S3 is not set: no S3-compatible server to test against (eval \"$(scripts/s3.sh --env)\" starts one)")
	}
	u, err := url.Parse(raw)
	bucket := ""
	if err == nil {
		bucket = strings.Trim(u.Path, "/")
	}
	if err != nil || u.Host == "" || bucket == "" || strings.Contains(bucket, "/") {
		t.Fatalf("KILN_TEST_S3=%q: want http(s)://host:port/bucket", raw)
	}
	var tag [6]byte
	rand.Read(tag[:])
	cfg := blobstore.S3Config{
		Endpoint:  u.Scheme + "://" + u.Host,
		Bucket:    bucket,
		Prefix:    fmt.Sprintf("test/%x", tag),
		Insecure:  u.Scheme == "http",
		AccessKey: os.Getenv("KILN_TEST_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("KILN_TEST_S3_SECRET_KEY"),
	}
	t.Cleanup(func() { EmptyS3(cfg) })
	return cfg
}

// EmptyS3 deletes, as far as it can, every object under cfg's prefix:
// what a test left in the bucket.
func EmptyS3(cfg blobstore.S3Config) {
	s, err := blobstore.NewS3(context.Background(), cfg)
	if err != nil {
		return
	}
	names, _ := s.List(context.Background())
	for _, n := range names {
		s.Delete(context.Background(), n)
	}
}

// S3 opens the test S3 server as a store (skipping without one).
func S3(t testing.TB) *blobstore.S3 {
	t.Helper()
	s, err := blobstore.NewS3(context.Background(), S3Config(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
