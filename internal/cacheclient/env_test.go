package cacheclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/cache"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
	"golang.org/x/sys/unix"
)

// testEnv is the real cache service (internal/cache) on a real TCP port,
// with a temporary SQLite database, a record of the requests it answered,
// and a hook that can answer a request in its place (to inject failures).
type testEnv struct {
	svc *cache.Service
	srv *httptest.Server

	mu        sync.Mutex
	reqs      []string // "METHOD op", op a Twirp method or the blob query's comp
	intercept hook
}

// hook may answer a request in the service's place; it reports whether it
// did.
type hook = func(w http.ResponseWriter, r *http.Request) bool

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvWith(t, nil)
}

// newTestEnvWith is newTestEnv with mutate adjusting the service's config.
func newTestEnvWith(t *testing.T, mutate func(*cache.Config)) *testEnv {
	t.Helper()
	tmp := t.TempDir()
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), storetest.Database(t), box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db := st.DB()
	te := &testEnv{}
	var handler http.Handler
	te.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.URL.Query().Get("comp")
		if i := strings.LastIndex(r.URL.Path, "/"); strings.HasPrefix(r.URL.Path, "/twirp/") {
			op = r.URL.Path[i+1:]
		}
		te.mu.Lock()
		te.reqs = append(te.reqs, strings.TrimSpace(r.Method+" "+op))
		hook := te.intercept
		te.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(te.srv.Close)
	cfg := cache.DefaultConfig()
	cfg.Dir = filepath.Join(tmp, "cache")
	cfg.SigningKey = []byte("kiln-cacheclient-test-signing-key")
	cfg.PublicURL = te.srv.URL
	if mutate != nil {
		mutate(&cfg)
	}
	te.svc, err = cache.New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	handler = te.svc.Handler()
	return te
}

var mainScope = cache.Scope{Project: "acme/web", Branch: "main", DefaultBranch: "main"}

// client returns a client holding a job token for sc, configured from the
// environment the service gives a job.
func (te *testEnv) client(t *testing.T, sc cache.Scope) *Client {
	t.Helper()
	tok, err := te.svc.IssueToken(sc, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	env := te.svc.Env(tok)
	return &Client{BaseURL: env["ACTIONS_RESULTS_URL"], Token: env["ACTIONS_RUNTIME_TOKEN"]}
}

// requests returns the requests answered since the last call.
func (te *testEnv) requests() []string {
	te.mu.Lock()
	defer te.mu.Unlock()
	out := te.reqs
	te.reqs = nil
	return out
}

func (te *testEnv) setIntercept(f hook) {
	te.mu.Lock()
	te.intercept = f
	te.mu.Unlock()
}

// node is what a test compares of one file system entry.
type node struct {
	Type     string
	Mode     fs.FileMode
	Size     int64
	Sum      string // regular files: SHA-256 of the contents
	Link     string
	MTime    int64
	UID, GID uint32
}

// snapshot records every entry under root (root itself as ".").
func snapshot(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := node{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid), MTime: fi.ModTime().UnixNano(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.IsDir():
			n.Type = "dir"
		case fi.Mode()&fs.ModeSymlink != 0:
			n.Type = "symlink"
			n.Mode = 0 // meaningless on Linux
			n.Link, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			n.Type = "file"
			n.Size = fi.Size()
			n.Sum = fileSum(t, p)
		default:
			n.Type = fi.Mode().Type().String()
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileSum(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// compareTrees fails the test where got differs from want.
func compareTrees(t *testing.T, want, got map[string]node) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	bad := 0
	for _, n := range names {
		w, wok := want[n]
		g, gok := got[n]
		if wok != gok || w != g {
			if bad++; bad <= 10 {
				t.Errorf("%s:\n  want %+v (present %v)\n  got  %+v (present %v)", n, w, wok, g, gok)
			}
		}
	}
	if bad > 10 {
		t.Errorf("… %d differences in all", bad)
	}
}

// lutimes sets a symbolic link's own times.
func lutimes(t *testing.T, p string, mtime time.Time) {
	t.Helper()
	ts := unix.NsecToTimespec(mtime.UnixNano())
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// entries lists the names in dir (nil if it does not exist).
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}
