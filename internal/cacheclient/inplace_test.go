package cacheclient

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRestoreIntoExistingDirectory: an existing target directory is filled
// in place, not replaced: a sandbox bind-mounts it before its restore ends
// (the restore overlaps the sandbox's creation), and a container keeps the
// directory it mounted. So the directory is the same one after the
// restore, a descriptor opened on it before sees the restored entries, and
// the tree comes back whole (the target's own mode and times, read-only
// top-level directories included); nothing is left beside it.
func TestRestoreIntoExistingDirectory(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	src := t.TempDir()
	richTree(t, filepath.Join(src, "a"))
	mkdir(t, filepath.Join(src, "a", "ro"))
	mkfile(t, filepath.Join(src, "a", "ro", "f"), "read-only dir\n", 0o444, time.Unix(1_600_000_000, 0))
	chmodTime(t, filepath.Join(src, "a", "ro"), 0o555, time.Unix(1_600_000_002, 9))
	chmodTime(t, filepath.Join(src, "a"), 0o750, time.Unix(1_600_000_003, 11))
	version := Version([]string{"/root/a"})
	if _, err := c.Save(ctx, "inplace", version, []string{filepath.Join(src, "a")}); err != nil {
		t.Fatal(err)
	}

	dst := t.TempDir()
	target := filepath.Join(dst, "a")
	mkdir(t, target)
	t.Cleanup(func() { // so that a non-root user can remove the trees
		for _, root := range []string{src, dst} {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					os.Chmod(p, 0o755)
				}
				return nil
			})
		}
	})
	before, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(target) // as a bind mount holds it
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if m, _, err := c.Restore(ctx, "inplace", nil, version, []string{target}); err != nil || m != "inplace" {
		t.Fatalf("restore: %q, %v", m, err)
	}
	after, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the target directory was replaced: a sandbox that mounted it sees an empty, unlinked directory")
	}
	seen, err := held.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(seen)
	if want := entries(t, filepath.Join(src, "a")); !slices.Equal(seen, want) {
		t.Errorf("through the directory held before the restore: %q, want %q", seen, want)
	}
	want := snapshot(t, filepath.Join(src, "a"))
	for name, n := range want {
		if n.Mode&os.ModeSetuid != 0 {
			n.Mode &^= os.ModeSetuid
			want[name] = n
		}
	}
	compareTrees(t, want, snapshot(t, target))
	if got := entries(t, dst); !slices.Equal(got, []string{"a"}) {
		t.Errorf("beside the target: %q", got)
	}
	// Files can be created in it, as a build does.
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreIntoDirectoryFilledMeanwhile: when something writes a name
// of the archive into a target while the restore runs, the restore fails
// without overwriting it, and every target holds what it held: the other
// target, filled in place first, is emptied again, with its mode and
// times as they were; nothing of the archive is left in or beside them.
func TestRestoreIntoDirectoryFilledMeanwhile(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	src := t.TempDir()
	srcDirs := []string{filepath.Join(src, "one"), filepath.Join(src, "two")}
	randomTree(t, srcDirs[0], 20, 4<<10, 3)
	randomTree(t, srcDirs[1], 20, 4<<10, 4)
	version := Version([]string{"/one", "/two"})
	if _, err := c.Save(ctx, "meanwhile", version, srcDirs); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	targets := []string{filepath.Join(base, "one"), filepath.Join(base, "two")}
	for _, d := range targets {
		mkdir(t, d)
		chmodTime(t, d, 0o751, time.Unix(1_500_000_000, 0))
	}
	te.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/cache-blobs/") {
			// A name of the second path's tree: the first is in place by
			// the time it is found.
			mkfile(t, filepath.Join(targets[1], "dg"), "intruder\n", 0o644, time.Unix(1, 0))
		}
		return false
	})
	_, _, err := c.Restore(ctx, "meanwhile", nil, version, targets)
	te.setIntercept(nil)
	if err == nil {
		t.Fatal("restore over a name written meanwhile succeeded")
	}
	if got := entries(t, targets[1]); !slices.Equal(got, []string{"dg"}) {
		t.Errorf("second target after the failed restore: %q, want only the intruder's file", got)
	}
	if b, _ := os.ReadFile(filepath.Join(targets[1], "dg")); string(b) != "intruder\n" {
		t.Errorf("the intruder's file was overwritten: %q", b)
	}
	if got := entries(t, targets[0]); len(got) != 0 {
		t.Errorf("first target after the failed restore: %q, want it empty again", got)
	}
	fi, err := os.Stat(targets[0])
	if err != nil || fi.Mode().Perm() != 0o751 || !fi.ModTime().Equal(time.Unix(1_500_000_000, 0)) {
		t.Errorf("first target after the failed restore: %v, %v; want mode 0751 and its old time", fi.Mode(), err)
	}
	if got := entries(t, base); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("beside the targets: %q", got)
	}
}
