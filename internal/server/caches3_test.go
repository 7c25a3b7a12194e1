package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
	"github.com/kilnci/kiln/internal/cache"
)

func newCacheS3Server(t *testing.T, s3 blobstore.S3Config) (*Server, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.ReserveBytes = 0
	cfg.CacheS3 = s3
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Cleanup(func() { srv.Close() })
	}
	return srv, err
}

// A cache store that cannot be used stops the server at start, saying why.
func TestCacheS3CheckedAtStart(t *testing.T) {
	_, err := newCacheS3Server(t, blobstore.S3Config{Endpoint: "127.0.0.1:1", Bucket: "b", Prefix: "kiln-cache", Insecure: true, AccessKey: "a", SecretKey: "secret-never-shown"})
	if err == nil || !strings.Contains(err.Error(), "cache-s3: ") || !strings.Contains(err.Error(), "cannot reach S3 bucket") {
		t.Fatalf("unreachable endpoint: %v", err)
	}
	if strings.Contains(err.Error(), "secret-never-shown") {
		t.Fatalf("the error shows the secret key: %v", err)
	}
	cfg := blobstoretest.S3Config(t)
	cfg.Bucket = "kiln-no-such-bucket"
	if _, err := newCacheS3Server(t, cfg); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket: %v", err)
	}
}

// With -cache-s3-*, the server's cache service keeps archives in S3 and
// hands out S3's presigned URLs for downloads.
func TestCacheS3Serves(t *testing.T) {
	cfg := blobstoretest.S3Config(t)
	srv, err := newCacheS3Server(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Cache.Handler())
	defer hs.Close()
	tok, err := srv.Cache.IssueToken(cache.Scope{Project: "p", Branch: "main", DefaultBranch: "main"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	twirp := func(method string, req map[string]any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(req)
		r, _ := http.NewRequest("POST", hs.URL+"/twirp/github.actions.results.api.v1.CacheService/"+method, bytes.NewReader(b))
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 200 || out["ok"] != true {
			t.Fatalf("%s: %d %v", method, resp.StatusCode, out)
		}
		return out
	}
	up := twirp("CreateCacheEntry", map[string]any{"key": "k", "version": "v"})
	u, _ := url.Parse(up["signed_upload_url"].(string))
	put, _ := http.NewRequest("PUT", hs.URL+u.RequestURI(), strings.NewReader("archive"))
	put.Header.Set("x-ms-blob-type", "BlockBlob")
	if resp, err := http.DefaultClient.Do(put); err != nil || resp.StatusCode != 201 {
		t.Fatalf("Put Blob: %v %v", resp, err)
	}
	twirp("FinalizeCacheEntryUpload", map[string]any{"key": "k", "version": "v", "size_bytes": 7})
	down := twirp("GetCacheEntryDownloadURL", map[string]any{"key": "k", "version": "v"})
	du, _ := url.Parse(down["signed_download_url"].(string))
	ep, _ := url.Parse(cfg.Endpoint)
	if du.Host != ep.Host || du.Query().Get("X-Amz-Signature") == "" {
		t.Fatalf("download URL %s is not S3's", du.Redacted())
	}
	resp, err := http.Get(du.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "archive" {
		t.Fatalf("GET from S3: %d %q", resp.StatusCode, body)
	}
}
