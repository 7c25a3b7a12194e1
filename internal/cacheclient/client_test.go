package cacheclient

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/cache"
)

var ctx = context.Background()

// mkfile writes a file with a mode and a modification time.
func mkfile(t *testing.T, p, content string, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	chmodTime(t, p, mode, mtime)
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func chmodTime(t *testing.T, p string, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string, mtime time.Time) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	lutimes(t, p, mtime)
}

// richTree builds a tree with every kind of entry and metadata a cache
// must keep: modes (read-only files and directories, sticky, setuid),
// empty files and directories, symbolic links (relative, absolute,
// dangling, to a directory), long and odd names, nanosecond times and,
// when running as root, owners.
func richTree(t *testing.T, root string) {
	t.Helper()
	ts := func(n int) time.Time {
		return time.Unix(1_700_000_000+int64(n)*1000, int64(n)*123_456_789%1_000_000_000)
	}
	mkdir(t, filepath.Join(root, "pkg/mod/cache/download"))
	mkdir(t, filepath.Join(root, "empty-dir"))
	mkdir(t, filepath.Join(root, "readonly"))
	mkdir(t, filepath.Join(root, "sticky"))
	long := strings.Repeat("long-name-", 20) // 200 bytes: past ustar's 100
	mkdir(t, filepath.Join(root, "deep", long, "a", "b", "c"))
	mkfile(t, filepath.Join(root, "pkg/mod/cache/download/list"), "v1.0.0\nv1.1.0\n", 0o644, ts(1))
	mkfile(t, filepath.Join(root, "pkg/mod/tool"), "#!/bin/sh\necho hi\n", 0o755, ts(2))
	mkfile(t, filepath.Join(root, "readonly/file"), "read only\n", 0o444, ts(3))
	mkfile(t, filepath.Join(root, "private"), "secret-ish\n", 0o600, ts(4))
	mkfile(t, filepath.Join(root, "empty"), "", 0o644, ts(5))
	mkfile(t, filepath.Join(root, "setuid"), "suid\n", 0o4755, ts(6))
	mkfile(t, filepath.Join(root, "deep", long, "a", "b", "c", long+".txt"), "deep\n", 0o644, ts(7))
	mkfile(t, filepath.Join(root, "with space é ü.txt"), "odd name\n", 0o644, ts(8))
	symlink(t, "pkg/mod/tool", filepath.Join(root, "rel-link"), ts(9))
	symlink(t, "/usr/bin/env", filepath.Join(root, "abs-link"), ts(10))
	symlink(t, "does/not/exist", filepath.Join(root, "dangling"), ts(11))
	symlink(t, "pkg", filepath.Join(root, "dir-link"), ts(12))
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(root, "private"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(root, "rel-link"), 4321, 8765); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(root, "empty-dir"), 1111, 2222); err != nil {
			t.Fatal(err)
		}
	}
	// Directories last: creating entries changes their times.
	chmodTime(t, filepath.Join(root, "readonly"), 0o555, ts(13))
	chmodTime(t, filepath.Join(root, "sticky"), 0o1777, ts(14))
	chmodTime(t, filepath.Join(root, "empty-dir"), 0o700, ts(15))
	for i, d := range []string{"deep/" + long + "/a/b/c", "deep/" + long + "/a/b", "deep/" + long + "/a", "deep/" + long, "deep",
		"pkg/mod/cache/download", "pkg/mod/cache", "pkg/mod", "pkg", "."} {
		chmodTime(t, filepath.Join(root, d), 0o755, ts(20+i))
	}
}

// TestSaveRestore: a saved tree comes back the same in fresh directories
// (the setuid bit excepted), one Put Blob carries a small archive, a path
// missing at save time is left alone on restore, and nothing is left
// beside the targets.
func TestSaveRestore(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	src := t.TempDir()
	richTree(t, filepath.Join(src, "a"))
	mkdir(t, filepath.Join(src, "b"))
	mkfile(t, filepath.Join(src, "b", "only"), "b\n", 0o640, time.Unix(1_600_000_000, 5))
	chmodTime(t, filepath.Join(src, "b"), 0o750, time.Unix(1_600_000_001, 7))
	srcDirs := []string{filepath.Join(src, "a"), filepath.Join(src, "b"), filepath.Join(src, "missing")}
	version := Version([]string{"/root/a", "/root/b", "/root/missing"})

	st, err := c.Save(ctx, "rich-1", version, srcDirs)
	if err != nil {
		t.Fatal(err)
	}
	if got := te.requests(); !slices.Equal(got, []string{"POST CreateCacheEntry", "PUT", "POST FinalizeCacheEntryUpload"}) {
		t.Errorf("save requests: %q", got)
	}
	if st.Entries == 0 || st.Bytes == 0 || st.ArchiveBytes == 0 || st.Duration <= 0 {
		t.Errorf("save stats: %+v", st)
	}

	dst := t.TempDir()
	dstDirs := []string{filepath.Join(dst, "x", "a"), filepath.Join(dst, "b"), filepath.Join(dst, "missing")}
	mkdir(t, dstDirs[1]) // an empty directory is a fine target too
	matched, rst, err := c.Restore(ctx, "rich-1", nil, version, dstDirs)
	if err != nil || matched != "rich-1" {
		t.Fatalf("restore: %q, %v", matched, err)
	}
	if rst.ArchiveBytes != st.ArchiveBytes || rst.Bytes != st.Bytes || rst.Entries != st.Entries {
		t.Errorf("restore stats %+v, save stats %+v", rst, st)
	}
	want := snapshot(t, srcDirs[0])
	n := want["setuid"]
	n.Mode &^= fs.ModeSetuid
	want["setuid"] = n
	compareTrees(t, want, snapshot(t, dstDirs[0]))
	compareTrees(t, snapshot(t, srcDirs[1]), snapshot(t, dstDirs[1]))
	if _, err := os.Lstat(dstDirs[2]); !os.IsNotExist(err) {
		t.Errorf("a path missing at save time was created on restore: %v", err)
	}
	if got := entries(t, dst); !slices.Equal(got, []string{"b", "x"}) {
		t.Errorf("beside the targets: %q", got)
	}
	if got := entries(t, filepath.Join(dst, "x")); !slices.Equal(got, []string{"a"}) {
		t.Errorf("beside the targets: %q", got)
	}
}

// TestRestoreKeys: the exact key first, then restore keys as prefixes, the
// newest matching entry winning; a miss is "" and no error, and changes
// nothing.
func TestRestoreKeys(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	version := Version([]string{"/cache"})
	for _, k := range []string{"go-aaa", "go-bbb", "other-ccc"} {
		src := filepath.Join(t.TempDir(), "d")
		mkdir(t, src)
		mkfile(t, filepath.Join(src, "key"), k, 0o644, time.Unix(1, 0))
		if _, err := c.Save(ctx, k, version, []string{src}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		key         string
		restoreKeys []string
		version     string
		want        string
	}{
		{"go-aaa", []string{"go-"}, version, "go-aaa"},
		{"go-zzz", []string{"none-", "go-"}, version, "go-bbb"},
		{"go-zzz", []string{"other-", "go-"}, version, "other-ccc"},
		{"go-", nil, version, "go-bbb"}, // the key is a prefix too
		{"go-zzz", []string{"none-"}, version, ""},
		{"go-aaa", []string{"go-"}, Version([]string{"/elsewhere"}), ""},
	} {
		dir := filepath.Join(t.TempDir(), "d")
		matched, st, err := c.Restore(ctx, tc.key, tc.restoreKeys, tc.version, []string{dir})
		if err != nil || matched != tc.want {
			t.Errorf("Restore(%q, %q) = %q, %v; want %q", tc.key, tc.restoreKeys, matched, err, tc.want)
			continue
		}
		if tc.want == "" {
			if _, err := os.Lstat(dir); !os.IsNotExist(err) || st.ArchiveBytes != 0 {
				t.Errorf("a miss touched %s (%v) or downloaded %d bytes", dir, err, st.ArchiveBytes)
			}
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "key")); err != nil || string(b) != tc.want {
			t.Errorf("Restore(%q, %q) restored %q, %v", tc.key, tc.restoreKeys, b, err)
		}
	}
}

// TestSaveExists: a key is saved once; the second save is ErrExists.
func TestSaveExists(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	src := t.TempDir()
	mkfile(t, filepath.Join(src, "f"), "x", 0o644, time.Unix(1, 0))
	version := Version([]string{"/x"})
	if _, err := c.Save(ctx, "k", version, []string{src}); err != nil {
		t.Fatal(err)
	}
	te.requests()
	_, err := c.Save(ctx, "k", version, []string{src})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second save: %v, want ErrExists", err)
	}
	if got := te.requests(); !slices.Equal(got, []string{"POST CreateCacheEntry"}) {
		t.Errorf("second save sent %q: it should stop at the reservation", got)
	}
	// Another version of the same key is another entry.
	if _, err := c.Save(ctx, "k", Version([]string{"/y"}), []string{src}); err != nil {
		t.Fatal(err)
	}
}

// TestScopes: another project's token cannot see an entry; a branch sees
// its default branch's; a read-only token cannot save.
func TestScopes(t *testing.T) {
	te := newTestEnv(t)
	src := t.TempDir()
	mkfile(t, filepath.Join(src, "f"), "x", 0o644, time.Unix(1, 0))
	version := Version([]string{"/x"})
	if _, err := te.client(t, mainScope).Save(ctx, "shared-key", version, []string{src}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sc   cache.Scope
		want string
	}{
		{cache.Scope{Project: "evil/other", Branch: "main", DefaultBranch: "main"}, ""},
		{cache.Scope{Project: "acme/web", Branch: "feature", DefaultBranch: "main"}, "shared-key"},
		{cache.Scope{Project: "acme/web", Branch: "feature"}, ""},
	} {
		matched, _, err := te.client(t, tc.sc).Restore(ctx, "shared-key", []string{"shared"}, version, []string{filepath.Join(t.TempDir(), "d")})
		if err != nil || matched != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.sc, matched, err, tc.want)
		}
	}
	ro := mainScope
	ro.ReadOnly = true
	if _, err := te.client(t, ro).Save(ctx, "ro-key", version, []string{src}); !errors.Is(err, ErrRefused) {
		t.Errorf("read-only save: %v, want ErrRefused", err)
	}
	bad := te.client(t, mainScope)
	bad.Token += "x"
	var e *Error
	if _, _, err := bad.Restore(ctx, "shared-key", nil, version, []string{filepath.Join(t.TempDir(), "d")}); !errors.As(err, &e) || e.Status != 401 {
		t.Errorf("tampered token: %v, want a 401 *Error", err)
	}
}

// TestBadArguments: refused before any request.
func TestBadArguments(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	tmp := t.TempDir()
	full := filepath.Join(tmp, "full")
	mkdir(t, full)
	mkfile(t, filepath.Join(full, "f"), "x", 0o644, time.Unix(1, 0))
	file := filepath.Join(full, "f")
	v := Version([]string{"/x"})
	for _, dirs := range [][]string{
		nil,
		{"relative/dir"},
		{tmp + "/a/../b"},
		{"/"},
		{tmp + "/a", tmp + "/a"},
		{tmp + "/a", tmp + "/a/b"},
		{tmp + "/a/b", tmp + "/a"},
	} {
		if _, err := c.Save(ctx, "k", v, dirs); err == nil {
			t.Errorf("Save(%q) succeeded", dirs)
		}
		if _, _, err := c.Restore(ctx, "k", nil, v, dirs); err == nil {
			t.Errorf("Restore(%q) succeeded", dirs)
		}
	}
	if _, err := c.Save(ctx, "k", v, []string{tmp + "/none", tmp + "/nothing"}); !errors.Is(err, ErrNothingToSave) {
		t.Errorf("saving missing paths: %v", err)
	}
	if _, err := c.Save(ctx, "k", v, []string{file}); err == nil {
		t.Error("saving a file succeeded")
	}
	if _, _, err := c.Restore(ctx, "k", nil, v, []string{full}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restoring into a non-empty directory: %v", err)
	}
	if _, _, err := c.Restore(ctx, "k", nil, v, []string{file}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("restoring onto a file: %v", err)
	}
	if got := te.requests(); len(got) != 0 {
		t.Errorf("requests sent: %q", got)
	}
	if got := entries(t, full); !slices.Equal(got, []string{"f"}) {
		t.Errorf("the non-empty target changed: %q", got)
	}
}

func TestVersion(t *testing.T) {
	a := Version([]string{"/root/go/pkg/mod", "/root/.cache/go-build"})
	if a != Version([]string{"/root/go/pkg/mod", "/root/.cache/go-build"}) {
		t.Fatal("not stable")
	}
	// Pinned: a change silently misses every existing cache.
	if a != "ab8b0569c1d398f8792b3e142cffd1d155787e92a5ca35ef92c95c7429f8b819" {
		t.Errorf("Version = %s, changed", a)
	}
	for _, other := range [][]string{
		{"/root/.cache/go-build", "/root/go/pkg/mod"},
		{"/root/go/pkg/mod"},
		{"/root/go/pkg/mod|/root/.cache/go-build"},
	} {
		if Version(other) == a {
			t.Errorf("Version(%q) = Version of other paths", other)
		}
	}
}
