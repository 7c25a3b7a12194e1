package sticky

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// harness is one test's volume directory, in one mode.
type harness struct {
	t         *testing.T
	dir       string
	forceCopy bool
	maxBytes  int64
	v         *Volumes
}

// eachMode runs f against overlay views and against copies. Overlay mode
// needs root and overlayfs; without them it is skipped, saying why.
func eachMode(t *testing.T, f func(t *testing.T, h *harness)) {
	for _, m := range []struct {
		name      string
		forceCopy bool
	}{{"overlay", false}, {"copy", true}} {
		t.Run(m.name, func(t *testing.T) {
			h := newHarness(t, m.forceCopy, 0)
			f(t, h)
		})
	}
}

func newHarness(t *testing.T, forceCopy bool, maxBytes int64) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sticky volumes need root (overlay mounts, chown)")
	}
	dir := t.TempDir()
	// Registered after TempDir, so it runs before TempDir's RemoveAll: a
	// failed test must not leave a mount for RemoveAll to walk into.
	t.Cleanup(func() {
		mps, _ := mountsUnder(dir)
		for _, mp := range mps {
			unmount(mp, true)
		}
	})
	h := &harness{t: t, dir: dir, forceCopy: forceCopy, maxBytes: maxBytes}
	h.v = h.open()
	if !forceCopy && h.v.Mode() != "overlay" {
		t.Skip("overlayfs does not work here (see the log above); the copy mode tests still run")
	}
	return h
}

// open returns a new Volumes on the harness's directory, as a restarted
// agent would.
func (h *harness) open() *Volumes {
	h.t.Helper()
	v, err := New(Config{Dir: h.dir, ForceCopy: h.forceCopy, MaxBytes: h.maxBytes, Logger: testLogger(h.t)})
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (h *harness) acquire(project, path, key string) *View {
	h.t.Helper()
	w, err := h.v.Acquire(context.Background(), project, path, key)
	if err != nil {
		h.t.Fatalf("Acquire(%s, %s, %s): %v", project, path, key, err)
	}
	return w
}

func (h *harness) commit(w *View) PromoteStats {
	h.t.Helper()
	st, err := w.Commit(context.Background())
	if err != nil {
		h.t.Fatalf("Commit %s: %v", w.jobKey, err)
	}
	return st
}

// seed makes files the current generation of (project, path) and returns
// its number.
func (h *harness) seed(project, path string, files map[string]string) int64 {
	h.t.Helper()
	w := h.acquire(project, path, "seed")
	writeTree(h.t, w.MountSource(), files)
	st := h.commit(w)
	if !st.Promoted {
		h.t.Fatalf("seed not promoted: %s", st.Reason)
	}
	return st.Generation
}

// writeTree writes files under root: "name/" makes a directory, "->x" as
// content makes a symlink to x, anything else a file with that content.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		content := files[name]
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(content[2:], p)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns root's tree in writeTree's notation (every directory
// with a trailing slash). It fails the test on anything a generation must
// not contain: device nodes (whiteouts) and overlayfs xattrs.
func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel] = "->" + target
		case d.IsDir():
			got[rel+"/"] = ""
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = string(b)
		default:
			return fmt.Errorf("%s: unexpected %v", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// assertTree checks root's tree, ignoring directories implied by files.
func assertTree(t *testing.T, root string, want map[string]string) {
	t.Helper()
	got := readTree(t, root)
	for name := range got {
		if strings.HasSuffix(name, "/") {
			if _, ok := want[name]; !ok {
				delete(got, name)
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tree %s:\n got %v\nwant %v", root, got, want)
	}
}

// assertClean fails if the generation tree holds overlayfs traces.
func assertClean(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.Type()&fs.ModeCharDevice != 0 {
			t.Errorf("%s: a character device (whiteout) in a generation", p)
		}
		names, err := listXattrs(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, overlayXattrPrefix) {
				t.Errorf("%s: overlay xattr %s in a generation", p, n)
			}
		}
		return nil
	})
}

// current returns the volume's current generation and its tree's path.
func (h *harness) current(project, path string) (int64, string) {
	h.t.Helper()
	vdir, err := h.v.volumeDir(project, path)
	if err != nil {
		h.t.Fatal(err)
	}
	n, err := readCurrent(vdir)
	if err != nil {
		h.t.Fatal(err)
	}
	return n, filepath.Join(genDir(vdir, n), "tree")
}

// gens returns the generations on disk, sorted.
func (h *harness) gens(project, path string) []int64 {
	h.t.Helper()
	vdir, _ := h.v.volumeDir(project, path)
	g, err := generations(vdir)
	if err != nil {
		h.t.Fatal(err)
	}
	sort.Slice(g, func(i, j int) bool { return g[i] < g[j] })
	return g
}

// crash abandons the view as a killed agent would: its locks go with the
// process, its mount and files stay.
func (w *View) crash() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.released = true
	w.closeLocks()
}

func isMounted(t *testing.T, p string) bool {
	t.Helper()
	mps, err := mountsUnder(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if mp == p {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, os.ErrNotExist)
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
