package cache

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// TestMain installs the real @actions/cache clients (testdata/client/v1
// and v2, from their package-lock.json) when they are missing, so the
// tests always drive the real thing.
func TestMain(m *testing.M) {
	if err := setupClients(); err != nil {
		fmt.Fprintf(os.Stderr, "cache tests: %v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func setupClients() error {
	for _, tool := range []string{"node", "npm", "tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not on PATH: the real @actions/cache client needs node and npm to install and run, and tar and zstd to build its archives (Debian: nodejs npm tar zstd)", tool)
		}
	}
	for _, v := range []string{"v1", "v2"} {
		dir := filepath.Join("testdata", "client", v)
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@actions", "cache", "package.json")); err == nil {
			continue
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("npm ci in %s failed (is the npm registry reachable?): %v\n%s", dir, err, out)
		}
	}
	return nil
}

var testKey = []byte("kiln-cache-test-signing-key-0123456789")

// testEnv is one service on a real TCP listener, with a record of every
// request it answered.
type testEnv struct {
	svc *Service
	srv *httptest.Server
	db  DB
	dir string
	rec *recorder
}

// newTestEnv starts a service; mutate adjusts its config.
func newTestEnv(t *testing.T, mutate func(*Config)) *testEnv {
	t.Helper()
	tmp := t.TempDir()
	db := storeDB(t)
	te := &testEnv{db: db, dir: filepath.Join(tmp, "cache"), rec: newRecorder()}
	var handler http.Handler
	te.srv = httptest.NewServer(te.rec.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(w, r)
	})))
	t.Cleanup(te.srv.Close)
	cfg := DefaultConfig()
	cfg.Dir = te.dir
	cfg.SigningKey = testKey
	cfg.PublicURL = te.srv.URL
	if mutate != nil {
		mutate(&cfg)
	}
	var err error
	te.svc, err = New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	handler = te.svc.Handler()
	return te
}

func (te *testEnv) token(t *testing.T, sc Scope) string {
	t.Helper()
	tok, err := te.svc.IssueToken(sc, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// files lists every file under the cache dir, relative to it, and every
// blob in a blob store elsewhere (S3) as blobs/NAME.
func (te *testEnv) files(t *testing.T) []string {
	t.Helper()
	var out []string
	if !te.svc.blobsOnDisk {
		names, err := te.svc.blobs.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			out = append(out, "blobs/"+n)
		}
	}
	filepath.WalkDir(te.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(te.dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// request is one answered request.
type request struct {
	Method, Path, Query string
	Status              int
}

// recorder wraps a handler and records each request when its handler has
// returned, so tests can wait for a request to be fully handled (a client
// that hung up, say) without sleeping.
type recorder struct {
	mu   sync.Mutex
	cond *sync.Cond
	reqs []request
}

func newRecorder() *recorder {
	r := &recorder{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, request{r.Method, r.URL.Path, r.URL.RawQuery, sw.status})
		rec.cond.Broadcast()
		rec.mu.Unlock()
	})
}

// matching returns the answered requests for which match is true.
func (rec *recorder) matching(match func(request) bool) []request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []request
	for _, r := range rec.reqs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor blocks until a request for which match is true has been answered.
func (rec *recorder) waitFor(match func(request) bool) request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for {
		for _, r := range rec.reqs {
			if match(r) {
				return r
			}
		}
		rec.cond.Wait()
	}
}

func pathIs(method, suffix string) func(request) bool {
	return func(r request) bool { return r.Method == method && strings.HasSuffix(r.Path, suffix) }
}

// storeDB is the handle of a new store's database (SQLite, or PostgreSQL
// when the run tests it: storetest), where the cache's table lives.
func storeDB(t testing.TB) DB {
	t.Helper()
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), storetest.Database(t), box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.DB()
}
