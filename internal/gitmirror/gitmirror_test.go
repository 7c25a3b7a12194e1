package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// srcRepo is a real git repository standing in for a forge's.
type srcRepo struct {
	t   *testing.T
	dir string
	env []string
}

func newSrcRepo(t *testing.T) *srcRepo {
	t.Helper()
	home := t.TempDir()
	r := &srcRepo{t: t, dir: filepath.Join(t.TempDir(), "src"), env: append(gitEnv(home),
		"GIT_AUTHOR_NAME=Kiln Test", "GIT_AUTHOR_EMAIL=test@kiln.invalid",
		"GIT_COMMITTER_NAME=Kiln Test", "GIT_COMMITTER_EMAIL=test@kiln.invalid",
	)}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.git("init", "--quiet", "--initial-branch=main")
	return r
}

// git runs git in the repository and returns its trimmed output.
func (r *srcRepo) git(args ...string) string {
	r.t.Helper()
	return runGit(r.t, r.dir, r.env, args...)
}

func runGit(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (path → content) and commits them; it returns the SHA.
func (r *srcRepo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for p, content := range files {
		full := filepath.Join(r.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git("add", "--all")
	r.git("commit", "--quiet", "--allow-empty", "-m", msg)
	return r.git("rev-parse", "HEAD")
}

func newMirrors(t *testing.T) *Mirrors {
	t.Helper()
	m, err := New(filepath.Join(t.TempDir(), "mirrors"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// fetchesBy returns how many fetches f made.
func fetchesBy(m *Mirrors, f func()) int64 {
	before := m.Fetches()
	f()
	return m.Fetches() - before
}

func TestResolve(t *testing.T) {
	src := newSrcRepo(t)
	c1 := src.commit("one", map[string]string{"a.txt": "1"})
	src.git("tag", "v1")
	src.git("tag", "-a", "-m", "annotated", "v1-annotated")
	c2 := src.commit("two", map[string]string{"a.txt": "2"})
	src.git("branch", "feature", c1)
	src.git("tag", "feature-or-tag", c1)
	src.git("branch", "feature-or-tag", c2) // a branch and a tag of one name

	m := newMirrors(t)
	ctx := context.Background()
	cases := []struct{ ref, want string }{
		{"main", c2},
		{"refs/heads/main", c2},
		{"feature", c1},
		{"v1", c1},
		{"refs/tags/v1", c1},
		{"v1-annotated", c1}, // peeled to its commit
		{"feature-or-tag", c2},
		{"refs/tags/feature-or-tag", c1},
		{c1, c1},
		{c1[:10], c1},
	}
	for _, tc := range cases {
		got, err := m.Resolve(ctx, src.dir, tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	for _, ref := range []string{"nope", "refs/heads/nope", "deadbeef"} {
		if _, err := m.Resolve(ctx, src.dir, ref); !errors.Is(err, ErrRefNotFound) {
			t.Errorf("Resolve(%q) = %v, want ErrRefNotFound", ref, err)
		}
	}
	missing := strings.Repeat("0", 40)
	if _, err := m.Resolve(ctx, src.dir, missing); !errors.Is(err, ErrCommitNotFound) {
		t.Errorf("Resolve(missing SHA) = %v, want ErrCommitNotFound", err)
	}
	for _, ref := range []string{"", "--upload-pack=touch x", "a b", "main:file"} {
		if _, err := m.Resolve(ctx, src.dir, ref); err == nil {
			t.Errorf("Resolve(%q) succeeded", ref)
		}
	}
	// A known SHA needs no fetch; a branch always fetches.
	if n := fetchesBy(m, func() { m.Resolve(ctx, src.dir, c2) }); n != 0 {
		t.Errorf("Resolve(known SHA) fetched %d times", n)
	}
	if n := fetchesBy(m, func() { m.Resolve(ctx, src.dir, "main") }); n != 1 {
		t.Errorf("Resolve(main) fetched %d times", n)
	}
}

func TestReadFile(t *testing.T) {
	src := newSrcRepo(t)
	c1 := src.commit("one", map[string]string{".kiln.yml": "steps: 1\n", "dir/nested.txt": "nested"})
	c2 := src.commit("two", map[string]string{".kiln.yml": "steps: 2\n"})
	m := newMirrors(t)
	ctx := context.Background()

	for _, tc := range []struct{ commit, path, want string }{
		{c1, ".kiln.yml", "steps: 1\n"},
		{c2, ".kiln.yml", "steps: 2\n"},
		{c2, "dir/nested.txt", "nested"},
		{c2, "/dir/nested.txt", "nested"},
		{c2, "./dir/../dir/nested.txt", "nested"},
	} {
		got, err := m.ReadFile(ctx, src.dir, tc.commit, tc.path)
		if err != nil || string(got) != tc.want {
			t.Errorf("ReadFile(%.7s, %q) = %q, %v; want %q", tc.commit, tc.path, got, err, tc.want)
		}
	}
	if n := fetchesBy(m, func() { m.ReadFile(ctx, src.dir, c1, ".kiln.yml") }); n != 0 {
		t.Errorf("ReadFile of a known commit fetched %d times", n)
	}

	for _, p := range []string{"missing.yml", "dir", "dir/missing", ".kiln.yml/x"} {
		if _, err := m.ReadFile(ctx, src.dir, c2, p); !errors.Is(err, ErrFileNotFound) {
			t.Errorf("ReadFile(%q) = %v, want ErrFileNotFound", p, err)
		}
	}
	missing := strings.Repeat("1", 40)
	if _, err := m.ReadFile(ctx, src.dir, missing, ".kiln.yml"); !errors.Is(err, ErrCommitNotFound) {
		t.Errorf("ReadFile(missing commit) = %v, want ErrCommitNotFound", err)
	}
	for _, commit := range []string{"main", c1[:12], strings.ToUpper(c1)} {
		if _, err := m.ReadFile(ctx, src.dir, commit, ".kiln.yml"); err == nil {
			t.Errorf("ReadFile(commit %q) accepted a non-SHA", commit)
		}
	}
}

func TestCheckout(t *testing.T) {
	src := newSrcRepo(t)
	c1 := src.commit("one", map[string]string{"README": "one", "src/main.go": "package main"})
	src.commit("two", map[string]string{"README": "two"})
	root := filepath.Join(t.TempDir(), "mirrors")
	m, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "work", "job-1")
	if err := m.Checkout(context.Background(), src.dir, c1, dest); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"README": "one", "src/main.go": "package main"} {
		if got, err := os.ReadFile(filepath.Join(dest, p)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, ".git", "objects", "info", "alternates")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dest has an alternates file (%v)", err)
	}

	// The mirror goes away; dest's repository must not need it.
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	env := append(gitEnv(t.TempDir()), "GIT_CEILING_DIRECTORIES="+filepath.Dir(dest))
	if got := runGit(t, dest, env, "rev-parse", "HEAD"); got != c1 {
		t.Errorf("HEAD = %s, want %s", got, c1)
	}
	symref := exec.Command("git", "symbolic-ref", "-q", "HEAD")
	symref.Dir, symref.Env = dest, env
	if out, err := symref.Output(); err == nil {
		t.Errorf("HEAD is not detached: %s", out)
	}
	if got := runGit(t, dest, env, "log", "--format=%s"); got != "one" {
		t.Errorf("git log = %q", got)
	}
	runGit(t, dest, env, "fsck", "--no-dangling")
	if got := runGit(t, dest, env, "status", "--porcelain"); got != "" {
		t.Errorf("working tree not clean: %q", got)
	}
	if got := runGit(t, dest, env, "remote", "get-url", "origin"); got != src.dir {
		t.Errorf("origin = %q, want %q", got, src.dir)
	}
}

func TestCheckoutDest(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	m := newMirrors(t)
	ctx := context.Background()

	empty := t.TempDir() // exists, empty: fine
	if err := m.Checkout(ctx, src.dir, c, empty); err != nil {
		t.Fatalf("into an empty directory: %v", err)
	}
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "keep"), []byte("mine"), 0o644)
	if err := m.Checkout(ctx, src.dir, c, full); err == nil {
		t.Fatal("checked out into a non-empty directory")
	}
	if got, _ := os.ReadFile(filepath.Join(full, "keep")); string(got) != "mine" {
		t.Error("a refused checkout touched dest")
	}
	// A failed checkout leaves nothing behind.
	gone := filepath.Join(t.TempDir(), "new")
	if err := m.Checkout(ctx, src.dir, strings.Repeat("2", 40), gone); !errors.Is(err, ErrCommitNotFound) {
		t.Fatalf("missing commit: %v", err)
	}
	if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed checkout left %s (%v)", gone, err)
	}
}

func TestCheckoutToAnotherFileSystem(t *testing.T) {
	// /dev/shm is a tmpfs where there is one: hard links into it fail.
	other, err := os.MkdirTemp("/dev/shm", "gitmirror-test-")
	if err != nil {
		t.Skipf("no second file system to try: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	var a, b syscall.Stat_t
	if syscall.Stat(other, &a) != nil || syscall.Stat(t.TempDir(), &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the same file system as the temp dir")
	}
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	m := newMirrors(t)
	dest := filepath.Join(other, "w")
	if err := m.Checkout(context.Background(), src.dir, c, dest); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "f")); err != nil || string(got) != "x" {
		t.Errorf("f = %q, %v", got, err)
	}
}

func TestSecondCheckoutDoesNotFetch(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	m := newMirrors(t)
	ctx := context.Background()
	if n := fetchesBy(m, func() {
		if err := m.Checkout(ctx, src.dir, c, filepath.Join(t.TempDir(), "a")); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("first checkout: %d fetches, want 1", n)
	}
	// The source disappears: a known commit must not need it.
	if err := os.RemoveAll(src.dir); err != nil {
		t.Fatal(err)
	}
	if n := fetchesBy(m, func() {
		if err := m.Checkout(ctx, src.dir, c, filepath.Join(t.TempDir(), "b")); err != nil {
			t.Fatal(err)
		}
		if _, err := m.ReadFile(ctx, src.dir, c, "f"); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("second checkout: %d fetches, want 0", n)
	}
}

// objectCount returns how many objects the repository at gitDir holds.
func objectCount(t *testing.T, m *Mirrors, gitDir string) int {
	t.Helper()
	out := runGit(t, "", append(m.env, "GIT_DIR="+gitDir), "count-objects", "-v")
	total := 0
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "count" || k == "in-pack" {
			n, _ := strconv.Atoi(v)
			total += n
		}
	}
	return total
}

func TestNewCommitFetchedIncrementally(t *testing.T) {
	src := newSrcRepo(t)
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("f%d", i)] = strings.Repeat(fmt.Sprint(i), 100)
	}
	c1 := src.commit("one", files)
	m := newMirrors(t)
	ctx := context.Background()
	if got, err := m.Resolve(ctx, src.dir, "main"); err != nil || got != c1 {
		t.Fatalf("Resolve = %s, %v", got, err)
	}
	r, _ := parseRemote(src.dir)
	dir := m.mirror(r).dir
	before := objectCount(t, m, dir)

	c2 := src.commit("two", map[string]string{"f0": "changed"}) // a commit, a tree, a blob
	if n := fetchesBy(m, func() {
		if err := m.Checkout(ctx, src.dir, c2, filepath.Join(t.TempDir(), "w")); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("checkout of the new commit: %d fetches, want 1", n)
	}
	if got := objectCount(t, m, dir) - before; got != 3 {
		t.Errorf("the fetch added %d objects, want 3 (only the new ones)", got)
	}
	if got, err := m.Resolve(ctx, src.dir, "main"); err != nil || got != c2 {
		t.Errorf("Resolve(main) = %s, %v; want %s", got, err, c2)
	}
	// The old commit is still served from the mirror.
	if n := fetchesBy(m, func() { m.ReadFile(ctx, src.dir, c1, "f0") }); n != 0 {
		t.Errorf("old commit: %d fetches", n)
	}
}

func TestCommitOnlyReachableBySHA(t *testing.T) {
	src := newSrcRepo(t)
	src.commit("base", map[string]string{"f": "base"})
	src.git("checkout", "--quiet", "-b", "pr")
	pr := src.commit("pull request", map[string]string{"f": "pr"})
	src.git("update-ref", "refs/pull/1/head", pr)
	src.git("checkout", "--quiet", "main")
	src.git("branch", "--quiet", "-D", "pr") // pr is now on no branch or tag

	m := newMirrors(t)
	ctx := context.Background()
	got, err := m.ReadFile(ctx, src.dir, pr, "f")
	if err != nil || string(got) != "pr" {
		t.Fatalf("ReadFile(pr) = %q, %v", got, err)
	}
	if n := fetchesBy(m, func() {
		if err := m.Checkout(ctx, src.dir, pr, filepath.Join(t.TempDir(), "w")); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("second use of the PR commit: %d fetches", n)
	}
	// A fetch of the branches (pruning) keeps it.
	m.Resolve(ctx, src.dir, "main")
	if _, err := m.ReadFile(ctx, src.dir, pr, "f"); err != nil {
		t.Errorf("after a pruning fetch: %v", err)
	}
}

func TestConcurrentCheckouts(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	m := newMirrors(t)
	base := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			dest := filepath.Join(base, fmt.Sprint(i))
			if err := m.Checkout(context.Background(), src.dir, c, dest); err != nil {
				errs <- err
				return
			}
			if got, err := os.ReadFile(filepath.Join(dest, "f")); err != nil || string(got) != "x" {
				errs <- fmt.Errorf("%s: %q, %v", dest, got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := m.Fetches(); n != 1 {
		t.Errorf("%d fetches for 8 checkouts of one commit, want 1", n)
	}
}

func TestConcurrentResolvesShareAFetch(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	m := newMirrors(t)
	r, _ := parseRemote(src.dir)
	mr := m.mirror(r)

	// Hold the mirror while four Resolves line up behind it.
	unlock, err := mr.lock(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	results := make(chan string, n)
	for range n {
		go func() {
			sha, err := m.Resolve(context.Background(), src.dir, "main")
			if err != nil {
				sha = err.Error()
			}
			results <- sha
		}()
	}
	waitFor(func() bool { mr.rw.mu.Lock(); defer mr.rw.mu.Unlock(); return mr.rw.waitingWriters == n })
	unlock()
	for range n {
		if got := <-results; got != c {
			t.Errorf("Resolve = %s, want %s", got, c)
		}
	}
	// The first fetch started after every one of them asked: it serves all.
	if got := m.Fetches(); got != 1 {
		t.Errorf("%d fetches for %d Resolves waiting together, want 1", got, n)
	}
}

// TestConcurrentProcesses runs two processes (this test binary, as
// TestHelperProcess) that check out the same commit through one mirror
// directory: the file lock must make them fetch once between them.
func TestConcurrentProcesses(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	root := filepath.Join(t.TempDir(), "mirrors")
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "GITMIRROR_HELPER=1", "GITMIRROR_ROOT="+root,
			"GITMIRROR_URL="+src.dir, "GITMIRROR_COMMIT="+c,
			"GITMIRROR_DEST="+filepath.Join(t.TempDir(), fmt.Sprint(i)))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, outs[i])
		}
		_, after, ok := strings.Cut(outs[i].String(), "fetches=")
		n, err := strconv.Atoi(strings.Fields(after + " x")[0])
		if !ok || err != nil {
			t.Fatalf("process %d said %q", i, outs[i])
		}
		total += n
	}
	if total != 1 {
		t.Errorf("two processes fetched %d times in all, want 1", total)
	}
}

func TestHelperProcess(t *testing.T) {
	if os.Getenv("GITMIRROR_HELPER") != "1" {
		t.Skip("run by TestConcurrentProcesses")
	}
	m, err := New(os.Getenv("GITMIRROR_ROOT"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			dest := filepath.Join(os.Getenv("GITMIRROR_DEST"), fmt.Sprint(i))
			if err := m.Checkout(context.Background(), os.Getenv("GITMIRROR_URL"), os.Getenv("GITMIRROR_COMMIT"), dest); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	fmt.Printf("fetches=%d\n", m.Fetches())
}

func TestBrokenMirrorRecovered(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	r, _ := parseRemote(src.dir)
	cases := []struct {
		name  string
		fetch bool // fetch a good mirror first, then break it
		brk   func(t *testing.T, dir string)
	}{
		{"empty dir", false, func(t *testing.T, dir string) { os.MkdirAll(dir, 0o755) }},
		{"killed during init", false, func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "objects", "pack"), 0o755)
			os.WriteFile(filepath.Join(dir, "config"), []byte("[core]\n\trepositoryformatversion = 0\n"), 0o644)
		}},
		{"a file in its place", false, func(t *testing.T, dir string) { os.WriteFile(dir, []byte("junk"), 0o644) }},
		{"stale temp dir", false, func(t *testing.T, dir string) { os.MkdirAll(dir+".tmp-123/objects", 0o755) }},
		{"HEAD gone", true, func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "HEAD")) }},
		{"garbage config", true, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "config"), []byte("[[[ not git config"), 0o644)
		}},
		{"objects gone", true, func(t *testing.T, dir string) { os.RemoveAll(filepath.Join(dir, "objects")) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMirrors(t)
			ctx := context.Background()
			dir := m.mirror(r).dir
			if tc.fetch {
				if _, err := m.Resolve(ctx, src.dir, "main"); err != nil {
					t.Fatal(err)
				}
			}
			tc.brk(t, dir)
			if err := m.Checkout(ctx, src.dir, c, filepath.Join(t.TempDir(), "w")); err != nil {
				t.Fatalf("Checkout on a broken mirror: %v", err)
			}
			if got, err := m.Resolve(ctx, src.dir, "main"); err != nil || got != c {
				t.Fatalf("Resolve after repair = %s, %v", got, err)
			}
			if left, _ := filepath.Glob(dir + ".tmp-*"); len(left) > 0 {
				t.Errorf("temp dirs left: %v", left)
			}
		})
	}
}

func TestUserConfigDoesNotInterfere(t *testing.T) {
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	// A user configuration that would send every fetch of src elsewhere,
	// and an environment that points git at another repository.
	home := t.TempDir()
	gitconfig := fmt.Sprintf("[url \"/nonexistent/\"]\n\tinsteadOf = %s\n[core]\n\tbare = false\n", src.dir)
	os.WriteFile(filepath.Join(home, ".gitconfig"), []byte(gitconfig), 0o644)
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_DIR", src.dir)
	t.Setenv("GIT_CONFIG_PARAMETERS", "'core.bare'='false'")

	m := newMirrors(t)
	if err := m.Checkout(context.Background(), src.dir, c, filepath.Join(t.TempDir(), "w")); err != nil {
		t.Fatal(err)
	}
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct{ in, redacted, public string }{
		{"https://user:tok3n@example.com/org/repo.git", "https://user:***@example.com/org/repo.git", "https://example.com/org/repo.git"},
		{"https://ghp_token1234@example.com/org/repo", "https://***@example.com/org/repo", "https://example.com/org/repo"},
		{"http://example.com/repo", "http://example.com/repo", "http://example.com/repo"},
		{"ssh://git@example.com/org/repo.git", "ssh://git@example.com/org/repo.git", "ssh://git@example.com/org/repo.git"},
		{"ssh://git:pw12@example.com/repo", "ssh://git:***@example.com/repo", "ssh://git@example.com/repo"},
		{"git@example.com:org/repo.git", "git@example.com:org/repo.git", "git@example.com:org/repo.git"},
		{"file:///srv/git/repo.git", "file:///srv/git/repo.git", "file:///srv/git/repo.git"},
		{"/srv/git/repo", "/srv/git/repo", "/srv/git/repo"},
	} {
		r, err := parseRemote(tc.in)
		if err != nil {
			t.Errorf("parseRemote(%q): %v", tc.in, err)
			continue
		}
		if r.redacted != tc.redacted || r.public != tc.public {
			t.Errorf("%q: redacted %q, public %q; want %q, %q", tc.in, r.redacted, r.public, tc.redacted, tc.public)
		}
		if strings.ContainsAny(r.key, "/:@") || strings.Contains(r.key, "tok") {
			t.Errorf("%q: key %q", tc.in, r.key)
		}
	}
	a, _ := parseRemote("https://user:one@example.com/org/kiln.git")
	b, _ := parseRemote("https://example.com/org/kiln.git")
	c, _ := parseRemote("https://example.com/other/kiln.git")
	if a.key != b.key || a.key == c.key || !strings.HasSuffix(a.key, "-kiln") {
		t.Errorf("keys %q %q %q: credentials must not matter, the path must", a.key, b.key, c.key)
	}
	if got := Redact("fatal: unable to access 'https://x-access-token:ghs_abc@github.com/o/r/': 403"); strings.Contains(got, "ghs_abc") {
		t.Errorf("Redact left the token: %q", got)
	}
	for _, bad := range []string{"", "--upload-pack=touch /tmp/x", "a\nb"} {
		if _, err := parseRemote(bad); err == nil {
			t.Errorf("parseRemote(%q) accepted", bad)
		}
	}
	if r, _ := parseRemote("relative/repo"); !filepath.IsAbs(r.raw) {
		t.Errorf("a relative path stays relative: %q", r.raw)
	}
}

func TestFetchErrorIsRedacted(t *testing.T) {
	// A port on this machine with nothing listening: the fetch fails fast.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, tc := range []struct{ userinfo, password, shown string }{
		{"kiln:s3cr3t-Passw0rd", "s3cr3t-Passw0rd", "kiln:***@"},
		{"ghp_tokenAsUserName", "ghp_tokenAsUserName", "http://***@"},
	} {
		t.Run(tc.shown, func(t *testing.T) {
			checkFetchErrorRedacted(t, "http://"+tc.userinfo+"@"+addr+"/org/repo.git", tc.password, tc.shown)
		})
	}
}

func checkFetchErrorRedacted(t *testing.T, url, password, shown string) {
	t.Helper()
	m := newMirrors(t)
	_, err := m.Resolve(context.Background(), url, "main")
	if !errors.Is(err, ErrFetch) {
		t.Fatalf("Resolve = %v, want ErrFetch", err)
	}
	t.Logf("the error: %v", err)
	if strings.Contains(err.Error(), password) {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), shown) {
		t.Errorf("error does not name the redacted URL: %v", err)
	}
	_, err = m.ReadFile(context.Background(), url, strings.Repeat("3", 40), "f")
	if err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("ReadFile = %v", err)
	}
	// Nothing on disk holds it either.
	filepath.WalkDir(m.root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, _ := os.ReadFile(p); strings.Contains(string(data), password) {
				t.Errorf("%s holds the password", p)
			}
		}
		return nil
	})
}

func TestReadFileSymlink(t *testing.T) {
	src := newSrcRepo(t)
	src.commit("one", map[string]string{"ci/kiln.yml": "steps: 1\n"})
	if err := os.Symlink("ci/kiln.yml", filepath.Join(src.dir, ".kiln.yml")); err != nil {
		t.Fatal(err)
	}
	c := src.commit("link", nil)
	m := newMirrors(t)
	_, err := m.ReadFile(context.Background(), src.dir, c, ".kiln.yml")
	var se *SymlinkError
	if !errors.As(err, &se) || !errors.Is(err, ErrSymlink) || se.Target != "ci/kiln.yml" {
		t.Fatalf("ReadFile(symlink) = %v, want a SymlinkError to ci/kiln.yml", err)
	}
	if !strings.Contains(err.Error(), ".kiln.yml is a symlink") {
		t.Errorf("message %q does not say it is a symlink", err)
	}
	if got, err := m.ReadFile(context.Background(), src.dir, c, "ci/kiln.yml"); err != nil || string(got) != "steps: 1\n" {
		t.Errorf("ReadFile(the link's target) = %q, %v", got, err)
	}
}

func TestCheckURL(t *testing.T) {
	for _, ok := range []string{
		"https://example.com/org/repo.git", "http://example.com/repo", "HTTPS://example.com/r",
		"ssh://git@example.com/org/repo.git", "git+ssh://example.com/r", "git@example.com:org/repo.git",
		"example.com:repo", "git://example.com/repo", "/srv/git/repo", "relative/repo", "./repo", "repo",
	} {
		if err := CheckURL(ok, false); err != nil {
			t.Errorf("CheckURL(%q) = %v", ok, err)
		}
	}
	for _, tc := range []struct{ url, msg string }{
		{"fd::3", `remote helper "fd::"`},
		{"ext::sh -c touch% /tmp/pwned", `remote helper "ext::"`},
		{"ext::ssh -o ProxyCommand=x host", `remote helper "ext::"`},
		{"foo::https://example.com/r", `remote helper "foo::"`},
		{"file:///srv/git/repo.git", "-allow-file-remotes"},
		{"FILE:///srv/git/repo.git", "-allow-file-remotes"},
		{"ftp://example.com/r.git", `transport "ftp"`},
		{"-uhttps://example.com", "invalid"},
		{"", "empty"},
	} {
		err := CheckURL(tc.url, false)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("CheckURL(%q) = %v, want an error saying %q", tc.url, err, tc.msg)
		}
	}
	if err := CheckURL("file:///srv/git/repo.git", true); err != nil {
		t.Errorf("file:// with allowFile: %v", err)
	}
	if err := CheckURL("ext::sh", true); err == nil {
		t.Errorf("allowFile lets ext:: through")
	}
}

// TestRefusedTransportsNeverRun checks the refusal at fetch time: no git
// command runs for a URL whose transport is not allowed, so neither a
// command of ext:: nor a read of fd 3 ever happens.
func TestRefusedTransportsNeverRun(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pwned")
	src := newSrcRepo(t)
	c := src.commit("one", map[string]string{"f": "x"})
	for _, url := range []string{"fd::3", "ext::sh -c touch% " + marker, "file://" + src.dir} {
		m := newMirrors(t)
		ctx := context.Background()
		if _, err := m.Resolve(ctx, url, "main"); err == nil || !strings.Contains(err.Error(), "gitmirror: repository URL") {
			t.Errorf("Resolve(%q) = %v, want a refusal", url, err)
		}
		if _, err := m.ReadFile(ctx, url, c, "f"); err == nil {
			t.Errorf("ReadFile(%q) accepted", url)
		}
		if err := m.Checkout(ctx, url, c, filepath.Join(t.TempDir(), "w")); err == nil {
			t.Errorf("Checkout(%q) accepted", url)
		}
		if m.Fetches() != 0 {
			t.Errorf("%q: %d fetches ran", url, m.Fetches())
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("ext:: ran its command")
	}
	// file:// works when allowed.
	m, err := Open(filepath.Join(t.TempDir(), "mirrors"), Config{AllowFileRemotes: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.Resolve(context.Background(), "file://"+src.dir, "main"); err != nil || got != c {
		t.Errorf("Resolve(file://) with AllowFileRemotes = %s, %v", got, err)
	}
}

// TestGitRefusesHelpersItself checks the second fence, git's own
// GIT_ALLOW_PROTOCOL: a fetch that gets past CheckURL (here, called
// without it) still cannot use ext::.
func TestGitRefusesHelpersItself(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pwned")
	m := newMirrors(t)
	r, err := parseRemote("ext::sh -c touch% " + marker)
	if err != nil {
		t.Fatal(err)
	}
	mr := m.mirror(r)
	if _, err := m.ensureRepo(context.Background(), mr); err != nil {
		t.Fatal(err)
	}
	err = m.fetchRefspecs(context.Background(), r, mr, true, branchesAndTags...)
	if err == nil || !strings.Contains(err.Error(), "transport 'ext' not allowed") {
		t.Errorf("fetch over ext:: = %v, want git's refusal", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("ext:: ran its command")
	}
}

// silentServer accepts TCP connections on 127.0.0.1 and never answers,
// like a forge that hangs. It returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// processesMentioning returns the live processes whose command line holds s.
func processesMentioning(s string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(cmdline) == 0 { // gone, or a zombie
			continue
		}
		if strings.Contains(string(cmdline), s) {
			out = append(out, filepath.Base(d)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// TestFetchFromSilentServerTimesOut checks the fetch deadline against a
// server that accepts and never answers, over http (git runs
// git-remote-http, a child of its own) and git://: the fetch ends with an
// error that says it timed out, and no process of it is left.
func TestFetchFromSilentServerTimesOut(t *testing.T) {
	addr := silentServer(t)
	for _, url := range []string{"http://" + addr + "/x.git", "git://" + addr + "/x"} {
		t.Run(strings.Split(url, ":")[0], func(t *testing.T) {
			m, err := Open(filepath.Join(t.TempDir(), "mirrors"), Config{FetchTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.Resolve(context.Background(), url, "main")
			want := "git fetch of " + url + " timed out after 1s"
			if !errors.Is(err, ErrFetch) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Resolve = %v, want ErrFetch saying %q", err, want)
			}
			// A checkout's fetch (the agent's) has the same deadline.
			err = m.Checkout(context.Background(), url, strings.Repeat("3", 40), filepath.Join(t.TempDir(), "w"))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Checkout = %v, want an error saying %q", err, want)
			}
			// The group was killed; its members may take a moment to be
			// reaped by init, so poll (bounded) rather than look once.
			var left []string
			for range 100 {
				if left = processesMentioning(addr); len(left) == 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(left) > 0 {
				t.Fatalf("processes left after the deadline: %v", left)
			}
		})
	}
}

// TestCancelKillsFetch checks that ending the caller's context (a canceled
// build) stops a stuck fetch at once, long before its deadline.
func TestCancelKillsFetch(t *testing.T) {
	addr := silentServer(t)
	url := "http://" + addr + "/x.git"
	m, err := Open(filepath.Join(t.TempDir(), "mirrors"), Config{FetchTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := m.Resolve(ctx, url, "main"); done <- err }()
	for len(processesMentioning(addr)) == 0 { // the fetch is under way
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Resolve after cancel = %v, want context.Canceled", err)
	}
	for i := 0; len(processesMentioning(addr)) > 0; i++ {
		if i == 100 {
			t.Fatalf("processes left after cancel: %v", processesMentioning(addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSameRepository(t *testing.T) {
	cases := []struct {
		a, b             string
		same, comparable bool
	}{
		{"git@github.com:acme/web.git", "https://github.com/acme/web.git", true, true},
		{"https://x-access-token:t@github.com/Acme/Web", "https://github.com/acme/web.git", true, true},
		{"ssh://git@gitlab.example.com:2222/group/sub/web.git", "https://gitlab.example.com/group/sub/web.git", true, true},
		{"https://github.com/acme/web.git", "https://github.com/acme/api.git", false, true},
		{"https://github.com/acme/web.git", "https://gitlab.com/acme/web.git", false, true},
		{"/srv/git/web", "https://github.com/acme/web.git", false, false},
		{"file:///srv/git/web", "https://github.com/acme/web.git", false, false},
	}
	for _, c := range cases {
		same, comparable := SameRepository(c.a, c.b)
		if same != c.same || comparable != c.comparable {
			t.Errorf("SameRepository(%q, %q) = %v, %v; want %v, %v", c.a, c.b, same, comparable, c.same, c.comparable)
		}
	}
}
