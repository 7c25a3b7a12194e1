package sticky

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// Every kind of change a job can make to its view reaches the next
// generation: new, changed and deleted files, deleted directories (a
// whiteout in the upper layer), directories deleted and re-created (an
// opaque directory), a file turned into a directory and back, a renamed
// directory (EXDEV and a copy, since redirect_dir is off), a chmod alone
// (a full copy-up, since metacopy is off), symlinks.
//
// With a reader of the base generation, Commit builds a new tree; alone,
// an overlay view's writes are applied to its base's tree in place (see
// inplace.go). The result must be the same.
func TestPromoteEveryKindOfChange(t *testing.T) {
	for _, withReader := range []bool{true, false} {
		t.Run(map[bool]string{true: "new tree", false: "in place"}[withReader], func(t *testing.T) {
			testPromoteEveryKindOfChange(t, withReader)
		})
	}
}

func testPromoteEveryKindOfChange(t *testing.T, withReader bool) {
	eachMode(t, func(t *testing.T, h *harness) {
		base := map[string]string{
			"keep/f":       "keep",
			"modify":       "old",
			"chmod":        "mode",
			"del":          "gone soon",
			"deldir/x":     "x",
			"deldir/y/z":   "z",
			"replace/old1": "1",
			"replace/old2": "2",
			"f2d":          "a file",
			"d2f/inner":    "a dir",
			"moved/m1":     "m",
			"moved/sub/m2": "m2",
			"link":         "->keep/f",
			"relink":       "->keep/f",
			"partial/a":    "a",
			"partial/b":    "b",
		}
		g0 := h.seed(proj, cpath, base)
		// A reader holds the base generation, so we can check afterwards
		// that promotion changed none of its files in place.
		var reader *View
		if withReader {
			reader = h.acquire(proj, cpath, "reader")
			defer reader.Discard()
		}

		w := h.acquire(proj, cpath, "job")
		_, baseTree := w.gen()
		keepInode := inode(t, filepath.Join(baseTree, "keep/f"))
		src := w.MountSource()
		in := func(p string) string { return filepath.Join(src, p) }
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.WriteFile(in("modify"), []byte("new"), 0o644))
		must(os.Chmod(in("chmod"), 0o600))
		must(os.Remove(in("del")))
		must(os.RemoveAll(in("deldir")))
		must(os.RemoveAll(in("replace")))
		must(os.Mkdir(in("replace"), 0o755))
		must(os.WriteFile(in("replace/new"), []byte("n"), 0o644))
		must(os.Remove(in("f2d")))
		must(os.MkdirAll(in("f2d/sub"), 0o755))
		must(os.WriteFile(in("f2d/sub/f"), []byte("now a dir"), 0o644))
		must(os.RemoveAll(in("d2f")))
		must(os.WriteFile(in("d2f"), []byte("now a file"), 0o644))
		if out, err := exec.Command("mv", in("moved"), in("renamed")).CombinedOutput(); err != nil {
			t.Fatalf("mv: %v: %s", err, out)
		}
		must(os.Remove(in("relink")))
		must(os.Symlink("modify", in("relink")))
		must(os.Remove(in("partial/a")))
		must(os.WriteFile(in("partial/c"), []byte("c"), 0o644))
		must(os.WriteFile(in("brand"), []byte("top"), 0o644))

		if w.overlay {
			// The upper layer really holds the overlay constructs this
			// test is about.
			up := filepath.Join(w.jdir, "upper")
			for _, p := range []string{"del", "deldir", "partial/a", "moved"} {
				if !isWhiteout(filepath.Join(up, p)) {
					t.Errorf("upper/%s is not a whiteout", p)
				}
			}
			if !isOpaque(filepath.Join(up, "replace")) {
				t.Error("upper/replace is not opaque")
			}
		}
		st := h.commit(w)
		if !st.Promoted {
			t.Fatalf("not promoted: %s", st.Reason)
		}
		if wantInPlace := w.overlay && !withReader; st.InPlace != wantInPlace {
			t.Fatalf("in place %v, want %v", st.InPlace, wantInPlace)
		}
		want := map[string]string{
			"keep/f":         "keep",
			"modify":         "new",
			"chmod":          "mode",
			"replace/":       "",
			"replace/new":    "n",
			"f2d/sub/f":      "now a dir",
			"d2f":            "now a file",
			"renamed/m1":     "m",
			"renamed/sub/m2": "m2",
			"link":           "->keep/f",
			"relink":         "->modify",
			"partial/b":      "b",
			"partial/c":      "c",
			"brand":          "top",
		}
		_, tree := h.current(proj, cpath)
		assertTree(t, tree, want)
		assertClean(t, tree)
		if fi, err := os.Stat(filepath.Join(tree, "chmod")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("chmod: %v %v, want mode 0600", fi.Mode(), err)
		}
		if w.overlay && inode(t, filepath.Join(tree, "keep/f")) != keepInode {
			t.Error("an unchanged file was copied, not hard-linked or kept")
		}
		if n, _ := h.current(proj, cpath); n <= g0 || st.Generation != n {
			t.Fatalf("current generation %d, stats %+v, base %d", n, st, g0)
		}
		if bytes, entries, err := treeSize(context.Background(), tree, -1); err != nil || bytes != st.Bytes || entries != st.Entries {
			t.Errorf("stats say %d bytes in %d entries, the tree has %d in %d (%v)", st.Bytes, st.Entries, bytes, entries, err)
		}
		if withReader {
			// The base generation is intact, and shares the unchanged files.
			assertTree(t, baseTree, base)
			assertTree(t, reader.MountSource(), base)
		} else if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{st.Generation}) {
			t.Fatalf("generations %v, want only the new one", g)
		}

		// And the next view sees exactly the promoted tree.
		next := h.acquire(proj, cpath, "next")
		defer next.Discard()
		assertTree(t, next.MountSource(), want)
	})
}

// gen returns the view's base generation and its tree.
func (w *View) gen() (int64, string) {
	return w.base, filepath.Join(genDir(w.vdir, w.base), "tree")
}

// Two jobs at once: each sees the base and its own writes only; both
// commit; the last one wins, and the result is its tree exactly.
func TestConcurrentViews(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		base := map[string]string{"shared": "base", "dir/f": "base"}
		g1 := h.seed(proj, cpath, base)
		a := h.acquire(proj, cpath, "a")
		b := h.acquire(proj, cpath, "b")
		aTree := map[string]string{"shared": "from a", "dir/f": "base", "a-only": "a"}
		bTree := map[string]string{"shared": "from b", "dir/f": "base", "dir/b-only": "b"}
		writeTree(t, a.MountSource(), map[string]string{"shared": "from a", "a-only": "a"})
		writeTree(t, b.MountSource(), map[string]string{"shared": "from b", "dir/b-only": "b"})
		assertTree(t, a.MountSource(), aTree)
		assertTree(t, b.MountSource(), bTree)

		sa := h.commit(a)
		sb := h.commit(b)
		if sa.Base != g1 || sa.Previous != g1 || sb.Base != g1 || sb.Previous != sa.Generation {
			t.Fatalf("stats a %+v, b %+v", sa, sb)
		}
		n, tree := h.current(proj, cpath)
		if n != sb.Generation {
			t.Fatalf("current %d, want b's %d", n, sb.Generation)
		}
		assertTree(t, tree, bTree)
		// Nobody uses the base or a's generation any more.
		if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{n}) {
			t.Fatalf("generations %v, want [%d]", g, n)
		}
	})
}

// The same, with the two commits racing: whichever publishes last, the
// current tree is one job's result, whole.
func TestConcurrentCommitsRace(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		h.seed(proj, cpath, map[string]string{"shared": "base"})
		const jobs = 4
		trees := make([]map[string]string, jobs)
		views := make([]*View, jobs)
		for i := range views {
			views[i] = h.acquire(proj, cpath, string(rune('a'+i)))
			own := map[string]string{"shared": views[i].jobKey, views[i].jobKey + "/f": "x"}
			writeTree(t, views[i].MountSource(), own)
			trees[i] = own
		}
		var wg sync.WaitGroup
		errs := make([]error, jobs)
		for i, w := range views {
			wg.Go(func() { _, errs[i] = w.Commit(context.Background()) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("commit %d: %v", i, err)
			}
		}
		_, tree := h.current(proj, cpath)
		got := readTree(t, tree)
		winner := got["shared"] + "?"
		idx := int(winner[0] - 'a')
		if idx < 0 || idx >= jobs {
			t.Fatalf("current tree %v is no job's", got)
		}
		assertTree(t, tree, trees[idx])
		if g := h.gens(proj, cpath); len(g) != 1 {
			t.Fatalf("generations %v, want one", g)
		}
	})
}

// A generation stays while a view uses it, even after newer ones are
// promoted, and goes when the last view of it is released.
func TestViewKeepsGenerationAlive(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		g1 := h.seed(proj, cpath, map[string]string{"v": "1"})
		old := h.acquire(proj, cpath, "old")
		for i, content := range []string{"2", "3"} {
			w := h.acquire(proj, cpath, "new"+content)
			writeTree(t, w.MountSource(), map[string]string{"v": content})
			if st := h.commit(w); st.Generation != g1+int64(i)+1 {
				t.Fatalf("commit: %+v", st)
			}
		}
		// Generation 2 had no user left; 1 has one.
		if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{g1, g1 + 2}) {
			t.Fatalf("generations %v, want [%d %d]", g, g1, g1+2)
		}
		assertTree(t, old.MountSource(), map[string]string{"v": "1"})
		_, oldTree := old.gen()
		assertTree(t, oldTree, map[string]string{"v": "1"})
		if err := old.Discard(); err != nil {
			t.Fatal(err)
		}
		if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{g1 + 2}) {
			t.Fatalf("after release: generations %v, want [%d]", g, g1+2)
		}
	})
}

func TestMaxBytesKeepsOld(t *testing.T) {
	for _, forceCopy := range []bool{false, true} {
		t.Run(map[bool]string{false: "overlay", true: "copy"}[forceCopy], func(t *testing.T) {
			h := newHarness(t, forceCopy, 100)
			g1 := h.seed(proj, cpath, map[string]string{"small": strings.Repeat("s", 60)})
			w := h.acquire(proj, cpath, "big")
			writeTree(t, w.MountSource(), map[string]string{"big": strings.Repeat("b", 50)})
			st := h.commit(w)
			if st.Promoted || !strings.Contains(st.Reason, "over budget") || st.Generation != g1 {
				t.Fatalf("stats %+v, want not promoted, over budget, generation %d", st, g1)
			}
			n, tree := h.current(proj, cpath)
			if n != g1 {
				t.Fatalf("current %d, want %d", n, g1)
			}
			assertTree(t, tree, map[string]string{"small": strings.Repeat("s", 60)})
			if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{g1}) {
				t.Fatalf("generations %v", g)
			}
			// Deleting to get under the budget is promoted.
			w = h.acquire(proj, cpath, "shrink")
			os.Remove(filepath.Join(w.MountSource(), "small"))
			writeTree(t, w.MountSource(), map[string]string{"big": strings.Repeat("b", 90)})
			if st := h.commit(w); !st.Promoted || st.Bytes != 90 {
				t.Fatalf("stats %+v, want promoted, 90 bytes", st)
			}
			// A cold volume over the budget stays cold.
			w = h.acquire(proj, "/other", "cold")
			writeTree(t, w.MountSource(), map[string]string{"big": strings.Repeat("b", 101)})
			if st := h.commit(w); st.Promoted || st.Generation != 0 {
				t.Fatalf("cold over budget: %+v", st)
			}
			if w := h.acquire(proj, "/other", "again"); w.Warm() {
				t.Fatal("over-budget cold commit made the volume warm")
			} else {
				w.Discard()
			}
		})
	}
}
