package sticky

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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
		if !st.Promoted || st.Generation != 1 || st.Base != 0 || st.Bytes != 5 || st.Entries != 3 {
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

// Commit refuses to promote a view with a file open for writing (the
// sandbox was not destroyed first); the writes are dropped and the view
// released anyway. A file merely open for reading does not stop it.
func TestCommitBusyView(t *testing.T) {
	h := newHarness(t, false, 0)
	gen := h.seed(proj, cpath, map[string]string{"x": "1"})
	w := h.acquire(proj, cpath, "2-1")
	writeTree(t, w.MountSource(), map[string]string{"y": "2"})
	f, err := os.OpenFile(filepath.Join(w.MountSource(), "y"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := w.Commit(context.Background()); err == nil {
		t.Fatal("Commit of a view being written succeeded")
	}
	if isMounted(t, w.MountSource()) || exists(w.jdir) {
		t.Fatal("busy view not released")
	}
	n, tree := h.current(proj, cpath)
	if n != gen {
		t.Fatalf("current %d, want %d", n, gen)
	}
	assertTree(t, tree, map[string]string{"x": "1"})

	w = h.acquire(proj, cpath, "2-2")
	writeTree(t, w.MountSource(), map[string]string{"z": "3"})
	r, err := os.Open(filepath.Join(w.MountSource(), "z"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h.commit(w)
	_, tree = h.current(proj, cpath)
	assertTree(t, tree, map[string]string{"x": "1", "z": "3"})
}

// What the agent does with a view: bind-mount it into the sandbox's root
// (here, a directory standing for it), run the job, tear the sandbox down.
// Commit also freezes a view whose sandbox still holds it: a write
// through the sandbox's bind mount after Commit fails.
func TestBindMountedView(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		h.seed(proj, cpath, map[string]string{"old": "1"})
		w := h.acquire(proj, cpath, "2-1")
		target := filepath.Join(t.TempDir(), "rootfs", cpath)
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(w.MountSource(), target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unmount(target, true) })
		writeTree(t, target, map[string]string{"new": "2"})
		assertTree(t, target, map[string]string{"old": "1", "new": "2"})
		if w.overlay {
			// The sandbox is "still alive": its bind mount remains.
			h.commit(w)
			if err := os.WriteFile(filepath.Join(target, "late"), []byte("x"), 0o644); err == nil {
				t.Fatal("a write through the sandbox's mount after Commit succeeded")
			}
		} else {
			if err := unmount(target, false); err != nil {
				t.Fatal(err)
			}
			h.commit(w)
		}
		_, tree := h.current(proj, cpath)
		assertTree(t, tree, map[string]string{"old": "1", "new": "2"})
	})
}

// A canceled Commit promotes nothing and still releases the view.
func TestCommitCanceled(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		gen := h.seed(proj, cpath, map[string]string{"x": "1"})
		w := h.acquire(proj, cpath, "2-1")
		writeTree(t, w.MountSource(), map[string]string{"y": "2"})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if st, err := w.Commit(ctx); !errors.Is(err, context.Canceled) || st.Promoted {
			t.Fatalf("Commit with a canceled context: %+v, %v", st, err)
		}
		if exists(w.jdir) {
			t.Fatal("view not released")
		}
		n, tree := h.current(proj, cpath)
		if n != gen {
			t.Fatalf("current %d, want %d", n, gen)
		}
		assertTree(t, tree, map[string]string{"x": "1"})
		if g := h.gens(proj, cpath); len(g) != 1 {
			t.Fatalf("generations %v", g)
		}
	})
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
