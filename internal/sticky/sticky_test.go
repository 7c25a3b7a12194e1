package sticky

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	proj  = "acme/widgets"
	cpath = "/root/.cache/go-build"
)

func TestColdThenWarm(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		w := h.acquire(proj, cpath, "1-1")
		if w.Warm() || w.Bytes() != 0 || w.Generation() != 0 {
			t.Fatalf("first view: warm=%v bytes=%d gen=%d, want cold", w.Warm(), w.Bytes(), w.Generation())
		}
		assertTree(t, w.MountSource(), map[string]string{})
		writeTree(t, w.MountSource(), map[string]string{"a/b": "hello", "c": "->a/b"})
		st := h.commit(w)
		if !st.Promoted || st.Generation != 1 || st.Base != 0 || st.Bytes != 5 || st.Files != 3 {
			t.Fatalf("commit stats %+v", st)
		}

		w = h.acquire(proj, cpath, "2-1")
		defer w.Discard()
		if !w.Warm() || w.Bytes() != 5 || w.Generation() != 1 {
			t.Fatalf("second view: warm=%v bytes=%d gen=%d, want warm 5 bytes gen 1", w.Warm(), w.Bytes(), w.Generation())
		}
		assertTree(t, w.MountSource(), map[string]string{"a/b": "hello", "c": "->a/b"})
		if got := h.v.Projects(); len(got) != 1 || got[0] != proj {
			t.Fatalf("Projects() = %v", got)
		}
	})
}

// A view of one path is not a view of another, nor of another project.
func TestVolumesAreSeparate(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		h.seed(proj, cpath, map[string]string{"go": "1"})
		for _, other := range []struct{ project, path string }{{proj, "/root/go/pkg/mod"}, {"acme/other", cpath}} {
			w := h.acquire(other.project, other.path, "1-1")
			if w.Warm() {
				t.Errorf("%v: warm", other)
			}
			assertTree(t, w.MountSource(), map[string]string{})
			w.Discard()
		}
	})
}

func TestWritesVisibleOnlyAfterCommit(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		h.seed(proj, cpath, map[string]string{"x": "1"})
		a := h.acquire(proj, cpath, "a")
		b := h.acquire(proj, cpath, "b")
		defer b.Discard()
		writeTree(t, a.MountSource(), map[string]string{"y": "2"})
		assertTree(t, b.MountSource(), map[string]string{"x": "1"})
		_, tree := h.current(proj, cpath)
		assertTree(t, tree, map[string]string{"x": "1"})

		h.commit(a)
		// b keeps the generation it started from.
		assertTree(t, b.MountSource(), map[string]string{"x": "1"})
		c := h.acquire(proj, cpath, "c")
		defer c.Discard()
		assertTree(t, c.MountSource(), map[string]string{"x": "1", "y": "2"})
	})
}

func TestDiscardDropsWrites(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		gen := h.seed(proj, cpath, map[string]string{"x": "1", "d/e": "2"})
		w := h.acquire(proj, cpath, "9-1")
		src := w.MountSource()
		writeTree(t, src, map[string]string{"x": "changed", "new": "3"})
		if err := os.RemoveAll(filepath.Join(src, "d")); err != nil {
			t.Fatal(err)
		}
		if err := w.Discard(); err != nil {
			t.Fatal(err)
		}
		if err := w.Discard(); err != nil {
			t.Fatalf("second Discard: %v", err)
		}
		if _, err := w.Commit(context.Background()); !errors.Is(err, ErrReleased) {
			t.Fatalf("Commit after Discard: %v, want ErrReleased", err)
		}
		if exists(src) {
			t.Fatalf("view %s still exists after Discard", src)
		}
		n, tree := h.current(proj, cpath)
		if n != gen {
			t.Fatalf("current = %d, want %d", n, gen)
		}
		assertTree(t, tree, map[string]string{"x": "1", "d/e": "2"})
		if g := h.gens(proj, cpath); len(g) != 1 {
			t.Fatalf("generations %v, want only %d", g, gen)
		}

		// Discard after Commit is a no-op.
		w = h.acquire(proj, cpath, "9-2")
		h.commit(w)
		if err := w.Discard(); err != nil {
			t.Fatalf("Discard after Commit: %v", err)
		}
	})
}

// A job that wrote nothing leaves the volume as it was (overlay mode: a
// copy has no record of what changed, so it always promotes).
func TestCommitWithoutChanges(t *testing.T) {
	h := newHarness(t, false, 0)
	gen := h.seed(proj, cpath, map[string]string{"x": "1"})
	w := h.acquire(proj, cpath, "2-1")
	st := h.commit(w)
	if st.Promoted || st.Reason != "no changes" || st.Generation != gen {
		t.Fatalf("stats %+v, want not promoted, no changes, generation %d", st, gen)
	}
}

// Commit refuses to promote a view still in use (the sandbox was not
// destroyed first); the writes are dropped and the view released anyway.
func TestCommitBusyView(t *testing.T) {
	h := newHarness(t, false, 0)
	gen := h.seed(proj, cpath, map[string]string{"x": "1"})
	w := h.acquire(proj, cpath, "2-1")
	writeTree(t, w.MountSource(), map[string]string{"y": "2"})
	f, err := os.Open(filepath.Join(w.MountSource(), "y"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := w.Commit(context.Background()); err == nil {
		t.Fatal("Commit of a busy view succeeded")
	}
	if isMounted(t, w.MountSource()) || exists(w.jdir) {
		t.Fatal("busy view not released")
	}
	n, tree := h.current(proj, cpath)
	if n != gen {
		t.Fatalf("current %d, want %d", n, gen)
	}
	assertTree(t, tree, map[string]string{"x": "1"})
}

// When a view's overlay mount fails at run time, the view is a copy.
func TestMountFailureFallsBackToCopy(t *testing.T) {
	h := newHarness(t, false, 0)
	h.seed(proj, cpath, map[string]string{"x": "1"})
	h.v.overlayOpts = ",no_such_option=1"
	w := h.acquire(proj, cpath, "2-1")
	if w.overlay || filepath.Base(w.MountSource()) != "copy" {
		t.Fatalf("view is overlay=%v at %s, want a copy", w.overlay, w.MountSource())
	}
	writeTree(t, w.MountSource(), map[string]string{"y": "2"})
	h.commit(w)
	_, tree := h.current(proj, cpath)
	assertTree(t, tree, map[string]string{"x": "1", "y": "2"})
}

func TestInvalidArguments(t *testing.T) {
	h := newHarness(t, true, 0)
	ctx := context.Background()
	for _, c := range []struct{ project, path, key string }{
		{"", cpath, "1"},
		{"a\x00b", cpath, "1"},
		{proj, "", "1"},
		{proj, "relative/path", "1"},
		{proj, "/", "1"},
		{proj, "/a/../b", "1"},
		{proj, "/a/./b", "1"},
		{proj, "/a/", "1"},
		{proj, "//a", "1"},
		{proj, "/..", "1"},
		{proj, "/a/..", "1"},
		{proj, "/a\x00", "1"},
		{proj, cpath, ""},
		{proj, cpath, ".."},
		{proj, cpath, ".hidden"},
		{proj, cpath, "-flag"},
		{proj, cpath, "a/b"},
		{proj, cpath, "../x"},
		{proj, cpath, "a b"},
		{proj, cpath, strings.Repeat("k", 129)},
	} {
		if _, err := h.v.Acquire(ctx, c.project, c.path, c.key); !errors.Is(err, ErrInvalid) {
			t.Errorf("Acquire(%q, %q, %q) = %v, want ErrInvalid", c.project, c.path, c.key, err)
		}
	}
	// A project name is data, never a path: it cannot leave Dir.
	w := h.acquire("../../../etc", "/etc", "1")
	defer w.Discard()
	if rel, err := filepath.Rel(filepath.Join(h.dir, "volumes"), w.vdir); err != nil || strings.Contains(rel, "..") || strings.Contains(rel, "/") {
		t.Fatalf("volume of a hostile project at %s", w.vdir)
	}
	if _, err := New(Config{Dir: filepath.Join(t.TempDir(), "a,b")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New with ',' in Dir: %v, want ErrInvalid", err)
	}
}

func TestJobKeyInUse(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		w := h.acquire(proj, cpath, "7-1")
		defer w.Discard()
		if _, err := h.v.Acquire(context.Background(), proj, cpath, "7-1"); !errors.Is(err, ErrViewBusy) {
			t.Fatalf("second Acquire with one key: %v, want ErrViewBusy", err)
		}
		// From another Volumes on the same directory too (another process).
		if _, err := h.open().Acquire(context.Background(), proj, cpath, "7-1"); !errors.Is(err, ErrViewBusy) {
			t.Fatalf("second Acquire from another Volumes: %v, want ErrViewBusy", err)
		}
		// The refused Acquire did not harm the live view.
		writeTree(t, w.MountSource(), map[string]string{"f": "1"})
		assertTree(t, w.MountSource(), map[string]string{"f": "1"})
	})
}
