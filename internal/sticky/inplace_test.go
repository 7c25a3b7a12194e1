package sticky

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// What a crash in the middle of an in-place promotion leaves: the current
// generation's tree half-changed, marked as being applied. Nobody may use
// it; the volume starts over cold, and Recover deletes it.
func TestInPlaceCrashStartsCold(t *testing.T) {
	h := newHarness(t, false, 0)
	g := h.seed(proj, cpath, map[string]string{"a": "1", "b": "2"})
	vdir, _ := h.v.volumeDir(proj, cpath)
	gdir := genDir(vdir, g)
	// Half of a job's writes applied, then the process died.
	if err := os.WriteFile(filepath.Join(gdir, applyingMarker), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gdir, "tree", "a"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := h.acquire(proj, cpath, "after-crash")
	if w.Warm() {
		t.Fatal("a view started from a generation marked as being applied")
	}
	assertTree(t, w.MountSource(), map[string]string{})
	w.Discard()

	v := h.open() // the agent restarts
	if err := v.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(vdir, "current")) || exists(gdir) {
		t.Fatalf("after Recover: current %v, generation %v; want both gone", exists(filepath.Join(vdir, "current")), exists(gdir))
	}
	// And the volume works again from cold.
	h.v = v
	g2 := h.seed(proj, cpath, map[string]string{"c": "3"})
	next := h.acquire(proj, cpath, "next")
	defer next.Discard()
	if next.Generation() != g2 {
		t.Fatalf("generation %d, want %d", next.Generation(), g2)
	}
	assertTree(t, next.MountSource(), map[string]string{"c": "3"})
}

// In-place promotion is taken only when it is safe: not while another view
// is based on the generation, and not after another job replaced it.
func TestInPlaceOnlyWhenAlone(t *testing.T) {
	h := newHarness(t, false, 0)
	h.seed(proj, cpath, map[string]string{"v": "0"})
	for i, c := range []struct {
		name    string
		other   bool // another view of the same base, alive during the commit
		inPlace bool
	}{{"alone", false, true}, {"beside another view", true, false}, {"alone again", false, true}} {
		var other *View
		if c.other {
			other = h.acquire(proj, cpath, "other")
		}
		w := h.acquire(proj, cpath, "job")
		writeTree(t, w.MountSource(), map[string]string{"v": c.name})
		st := h.commit(w)
		if !st.Promoted || st.InPlace != c.inPlace {
			t.Fatalf("%d %s: %+v, want promoted, in place %v", i, c.name, st, c.inPlace)
		}
		if other != nil {
			assertTree(t, other.MountSource(), map[string]string{"v": "alone"})
			if err := other.Discard(); err != nil {
				t.Fatal(err)
			}
		}
		_, tree := h.current(proj, cpath)
		assertTree(t, tree, map[string]string{"v": c.name})
	}
	// A view whose base was replaced by another job's commit meanwhile.
	late := h.acquire(proj, cpath, "late")
	early := h.acquire(proj, cpath, "early")
	writeTree(t, early.MountSource(), map[string]string{"v": "early"})
	writeTree(t, late.MountSource(), map[string]string{"v": "late"})
	if st := h.commit(early); st.InPlace {
		t.Fatalf("early: %+v: in place while another view used its base", st)
	}
	if st := h.commit(late); st.InPlace || !st.Promoted {
		t.Fatalf("late: %+v: want promoted on a new tree (its base is no longer current)", st)
	}
	_, tree := h.current(proj, cpath)
	assertTree(t, tree, map[string]string{"v": "late"})
}
