package sticky

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// A crashed agent leaves a mounted view with writes, a view whose Commit
// died half-way through building its generation, a generation published
// but never made current, a half-written pointer and a half-emptied trash.
// A new Volumes' Recover removes all of it, leaves the current generation
// as it was, and leaves a view alive in another process alone.
func TestRecoverAfterCrash(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		base := map[string]string{"x": "1", "d/y": "2"}
		g1 := h.seed(proj, cpath, base)
		vdir, _ := h.v.volumeDir(proj, cpath)

		live := h.acquire(proj, cpath, "live")
		writeTree(t, live.MountSource(), map[string]string{"live": "yes"})

		dead := h.acquire(proj, cpath, "dead")
		writeTree(t, dead.MountSource(), map[string]string{"x": "dead job's"})
		dead.crash()
		if dead.overlay && !isMounted(t, dead.MountSource()) {
			t.Fatal("the crashed view is not mounted: the test proves nothing")
		}

		// A Commit that died while building: its job directory holds a
		// partial next/ generation.
		halfDone := h.acquire(proj, cpath, "half")
		if dead.overlay {
			if err := unmount(halfDone.MountSource(), false); err != nil {
				t.Fatal(err)
			}
		}
		if err := cloneTree(ctx, filepath.Join(genDir(vdir, g1), "tree"), filepath.Join(halfDone.jdir, "next")); err != nil {
			t.Fatal(err)
		}
		halfDone.crash()

		// A generation renamed into gens/ just before the crash, never
		// made current, and the debris of an interrupted pointer switch
		// and trash removal.
		orphan := genDir(vdir, g1+5)
		writeTree(t, orphan, map[string]string{"tree/orphan": "o", "lock": ""})
		if err := os.Symlink("gens/999", filepath.Join(vdir, "current.new")); err != nil {
			t.Fatal(err)
		}
		writeTree(t, filepath.Join(h.dir, "trash"), map[string]string{"leftover/f": "f"})

		v2 := h.open()
		if err := v2.Recover(ctx); err != nil {
			t.Fatal(err)
		}

		mps, _ := mountsUnder(h.dir)
		if dead.overlay && !reflect.DeepEqual(mps, []string{live.MountSource()}) {
			t.Fatalf("mounts after Recover: %v, want only the live view's", mps)
		}
		for _, p := range []string{dead.jdir, halfDone.jdir, orphan, filepath.Join(vdir, "current.new"), filepath.Join(h.dir, "trash", "leftover")} {
			if exists(p) {
				t.Errorf("%s survived Recover", p)
			}
		}
		n, tree := h.current(proj, cpath)
		if n != g1 {
			t.Fatalf("current %d after Recover, want %d", n, g1)
		}
		assertTree(t, tree, base)
		if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{g1}) {
			t.Fatalf("generations %v, want [%d]", g, g1)
		}

		// The live view is untouched and still commits.
		assertTree(t, live.MountSource(), map[string]string{"x": "1", "d/y": "2", "live": "yes"})
		if st := h.commit(live); !st.Promoted {
			t.Fatalf("live view after Recover: %+v", st)
		}
		w, err := v2.Acquire(ctx, proj, cpath, "dead") // the dead job's key is free again
		if err != nil {
			t.Fatal(err)
		}
		defer w.Discard()
		assertTree(t, w.MountSource(), map[string]string{"x": "1", "d/y": "2", "live": "yes"})
	})
}

// An Acquire that finds a dead view under its own key (an attempt retried
// after the agent died, before any Recover) takes the key over.
func TestAcquireReplacesDeadView(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		dead := h.acquire(proj, cpath, "5-1")
		writeTree(t, dead.MountSource(), map[string]string{"stale": "x"})
		dead.crash()
		w := h.acquire(proj, cpath, "5-1")
		defer w.Discard()
		assertTree(t, w.MountSource(), map[string]string{})
	})
}

// A volume whose `current` names a generation that is not there (damage
// from outside) starts over cold instead of failing every job.
func TestBrokenCurrentStartsCold(t *testing.T) {
	h := newHarness(t, true, 0)
	g := h.seed(proj, cpath, map[string]string{"x": "1"})
	vdir, _ := h.v.volumeDir(proj, cpath)
	if err := os.RemoveAll(genDir(vdir, g)); err != nil {
		t.Fatal(err)
	}
	w := h.acquire(proj, cpath, "1")
	if w.Warm() {
		t.Fatal("warm from a missing generation")
	}
	w.Discard()
	if err := h.v.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(vdir, "current")) {
		t.Fatal("Recover kept a dangling current")
	}
}

func TestPrune(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		old, fresh, busy := "acme/old", "acme/fresh", "acme/busy"
		for _, p := range []string{old, fresh, busy} {
			h.seed(p, cpath, map[string]string{"f": p})
		}
		view := h.acquire(busy, cpath, "running")
		defer view.Discard()
		month := time.Now().Add(-30 * 24 * time.Hour)
		for _, p := range []string{old, busy} {
			vdir, _ := h.v.volumeDir(p, cpath)
			if err := os.Chtimes(filepath.Join(vdir, "used"), month, month); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.v.Projects(); !reflect.DeepEqual(got, []string{busy, fresh, old}) {
			t.Fatalf("Projects() = %v", got)
		}

		removed, err := h.v.Prune(ctx, 7*24*time.Hour)
		if err != nil || removed != 1 {
			t.Fatalf("Prune = %d, %v; want 1 removed", removed, err)
		}
		if got := h.v.Projects(); !reflect.DeepEqual(got, []string{busy, fresh}) {
			t.Fatalf("Projects() after Prune = %v", got)
		}
		vdir, _ := h.v.volumeDir(old, cpath)
		if exists(vdir) {
			t.Fatalf("pruned volume %s still on disk", vdir)
		}
		if names, _ := readNames(filepath.Join(h.dir, "trash")); len(names) != 0 {
			t.Fatalf("trash after Prune: %v", names)
		}
		// The busy volume's view still works; the pruned one starts cold.
		writeTree(t, view.MountSource(), map[string]string{"g": "1"})
		if st := h.commit(view); !st.Promoted {
			t.Fatalf("commit after Prune: %+v", st)
		}
		w := h.acquire(old, cpath, "again")
		defer w.Discard()
		if w.Warm() {
			t.Fatal("pruned volume is warm")
		}
		// Nothing is older than a day now.
		if removed, err := h.v.Prune(ctx, 24*time.Hour); err != nil || removed != 0 {
			t.Fatalf("second Prune = %d, %v", removed, err)
		}
	})
}
