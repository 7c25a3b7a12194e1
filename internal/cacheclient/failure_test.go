package cacheclient

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// randomTree writes n files of size random bytes under dir.
func randomTree(t *testing.T, dir string, n, size int, seed uint64) {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	buf := make([]byte, size)
	for i := range n {
		sub := filepath.Join(dir, "d"+string(rune('a'+i%7)))
		mkdir(t, sub)
		rng.Read(buf)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// cutAfter is a ResponseWriter that lets n body bytes through and then
// aborts the response, as a server dying mid-download does.
type cutAfter struct {
	http.ResponseWriter
	n int
}

func (w *cutAfter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		w.ResponseWriter.Write(b[:w.n])
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	w.n -= len(b)
	return w.ResponseWriter.Write(b)
}

// twirpFails answers calls of a Twirp method with a Twirp error.
func twirpFails(method string, status int) hook {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/"+method) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{"code":"unavailable","msg":"injected"}`))
		return true
	}
}

// blobFails answers the blob requests match selects with an Azure error.
func blobFails(match func(*http.Request) bool, status int) hook {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/cache-blobs/") || !match(r) {
			return false
		}
		w.Header().Set("x-ms-error-code", "InternalError")
		w.WriteHeader(status)
		return true
	}
}

// TestServiceFailures: a service answering errors, or dying mid-transfer,
// makes Save and Restore return an error (an *Error with the status where
// there is one), never panic, and never leave a partial restore behind.
func TestServiceFailures(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	c.BlockSize = 1 << 20
	src := t.TempDir()
	randomTree(t, src, 6, 1<<20, 1)
	version := Version([]string{"/fail"})
	if _, err := c.Save(ctx, "good", version, []string{src}); err != nil {
		t.Fatal(err)
	}

	base := t.TempDir()
	target := filepath.Join(base, "target")
	restoreFails := func(name string, hook hook, status int) {
		t.Helper()
		te.setIntercept(hook)
		defer te.setIntercept(nil)
		matched, _, err := c.Restore(ctx, "good", nil, version, []string{target})
		var e *Error
		switch {
		case err == nil:
			t.Errorf("%s: restore succeeded (%q)", name, matched)
		case status != 0 && (!errors.As(err, &e) || e.Status != status):
			t.Errorf("%s: %v, want an *Error with status %d", name, err, status)
		}
		if got := entries(t, base); len(got) != 0 {
			t.Errorf("%s: left behind: %q", name, got)
		}
	}
	restoreFails("lookup 503", twirpFails("GetCacheEntryDownloadURL", http.StatusServiceUnavailable), http.StatusServiceUnavailable)
	restoreFails("download 500", blobFails(func(r *http.Request) bool { return r.Method == http.MethodGet }, http.StatusInternalServerError), http.StatusInternalServerError)
	restoreFails("download cut mid-body", func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet {
			te.svc.Handler().ServeHTTP(&cutAfter{ResponseWriter: w, n: 3 << 20}, r)
			return true
		}
		return false
	}, 0)
	restoreFails("not JSON", func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/twirp/") {
			w.Write([]byte("<html>proxy error</html>"))
			return true
		}
		return false
	}, 0)

	// After all that, the entry restores.
	if _, _, err := c.Restore(ctx, "good", nil, version, []string{target}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, snapshot(t, src), snapshot(t, target))

	saveFails := func(key, name string, hook hook, status int) {
		t.Helper()
		te.setIntercept(hook)
		defer te.setIntercept(nil)
		_, err := c.Save(ctx, key, version, []string{src})
		var e *Error
		if !errors.As(err, &e) || e.Status != status {
			t.Errorf("%s: %v, want an *Error with status %d", name, err, status)
		}
	}
	saveFails("k1", "reserve 500", twirpFails("CreateCacheEntry", http.StatusInternalServerError), http.StatusInternalServerError)
	saveFails("k2", "third block 500", blobFails(func(r *http.Request) bool {
		q := r.URL.Query()
		return q.Get("comp") == "block" && q.Get("blockid") == base64.StdEncoding.EncodeToString([]byte("kiln-block-00000002"))
	}, http.StatusInternalServerError), http.StatusInternalServerError)
	saveFails("k3", "block list 503", blobFails(func(r *http.Request) bool { return r.URL.Query().Get("comp") == "blocklist" }, http.StatusServiceUnavailable), http.StatusServiceUnavailable)
	saveFails("k4", "finalize 502", twirpFails("FinalizeCacheEntryUpload", http.StatusBadGateway), http.StatusBadGateway)
	// No failed save became visible.
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		if m, _, err := c.Restore(ctx, k, nil, version, []string{filepath.Join(t.TempDir(), "d")}); m != "" || err != nil {
			t.Errorf("%s after a failed save: %q, %v", k, m, err)
		}
	}

	// A service that is gone.
	te.srv.Close()
	if _, _, err := c.Restore(ctx, "good", nil, version, []string{filepath.Join(base, "again")}); err == nil {
		t.Error("restore from a closed server succeeded")
	}
	if _, err := c.Save(ctx, "k5", version, []string{src}); err == nil {
		t.Error("save to a closed server succeeded")
	}
	if got := entries(t, base); !slices.Equal(got, []string{"target"}) {
		t.Errorf("left behind: %q", got)
	}
}

// TestSaveCanceled: a canceled context stops a save half-way, with the
// uploads in flight.
func TestSaveCanceled(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	c.BlockSize = 1 << 20
	src := t.TempDir()
	randomTree(t, src, 8, 1<<20, 2)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	te.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("comp") == "block" {
			cancel()
		}
		return false
	})
	_, err := c.Save(cctx, "canceled", Version([]string{"/c"}), []string{src})
	if err == nil {
		t.Fatal("a canceled save succeeded")
	}
	te.setIntercept(nil)
	if m, _, err := c.Restore(ctx, "canceled", nil, Version([]string{"/c"}), []string{filepath.Join(t.TempDir(), "d")}); m != "" || err != nil {
		t.Errorf("after a canceled save: %q, %v", m, err)
	}
}
