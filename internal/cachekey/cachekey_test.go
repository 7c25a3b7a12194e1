package cachekey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// workspace lays out files (path → content; content "->target" makes a
// symbolic link) under a new directory and returns it.
func workspace(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// want computes the expected hashFiles value of the named files, in the
// given (sorted) order, independently of the implementation.
func want(files map[string]string, names ...string) string {
	outer := sha256.New()
	for _, n := range names {
		sum := sha256.Sum256([]byte(files[n]))
		outer.Write(sum[:])
	}
	return hex.EncodeToString(outer.Sum(nil))
}

var tree = map[string]string{
	"go.mod":                 "module a\n",
	"go.sum":                 "sum\n",
	"sub/go.mod":             "module a/sub\n",
	"sub/deep/er/go.mod":     "module a/sub/deep/er\n",
	"sub/deep/er/main.go":    "package main\n",
	"vendor/x/go.mod":        "module x\n",
	"web/package-lock.json":  "{}\n",
	"web/.hidden/lock.json":  "[]\n",
	"docs/a b.txt":           "space\n",
	"link-in.sum":            "->go.sum",
	"link-out.sum":           "->../../../../etc/passwd",
	"link-abs.sum":           "->/etc/passwd",
	"linkdir":                "->sub",
	"brackets/[x].txt":       "bracket\n",
	"brackets/x.txt":         "plain\n",
	"sub/deep/er/z/go.mod.x": "not go.mod\n",
}

func TestExpand(t *testing.T) {
	ws := workspace(t, tree)
	c := Context{Workspace: ws, Branch: "feature/x", OS: "linux", Arch: "amd64"}
	allMods := want(tree, "go.mod", "sub/deep/er/go.mod", "sub/go.mod", "vendor/x/go.mod")
	for _, tc := range []struct{ tmpl, want string }{
		{"plain-key", "plain-key"},
		{"", ""},
		{"$ { { not an expression", "$ { { not an expression"},
		{"}} alone", "}} alone"},
		{"${{ branch }}", "feature/x"},
		{"${{branch}}", "feature/x"},
		{"${{\tbranch\n}}", "feature/x"},
		{"${{ github.ref_name }}", "feature/x"},
		{"${{ os }}-${{ arch }}", "linux-amd64"},
		{"${{ runner.os }}-${{ runner.arch }}", "linux-amd64"},
		{"${{ Runner.OS }}-${{ ARCH }}-${{ Branch }}", "linux-amd64-feature/x"},
		{"a${{ os }}b${{ os }}c", "alinuxblinuxc"},
		{"${{ 'lit' }}", "lit"},
		{"${{ 'it''s' }}", "it's"},
		{"${{ '}}' }}x", "}}x"},
		{"${{ '' }}", ""},
		{"go-${{ hashFiles('go.sum') }}", "go-" + want(tree, "go.sum")},
		{"${{ hashFiles('./go.sum') }}", want(tree, "go.sum")},
		{"${{ hashFiles('go.sum', 'go.mod') }}", want(tree, "go.mod", "go.sum")},
		{"${{ hashFiles('go.mod', 'go.sum') }}", want(tree, "go.mod", "go.sum")},
		{"${{ hashFiles('go.sum', 'go.sum') }}", want(tree, "go.sum")},
		{"${{ HASHFILES('go.sum') }}", want(tree, "go.sum")},
		{"${{ hashFiles( 'go.sum' , 'go.mod' ) }}", want(tree, "go.mod", "go.sum")},
		// ** matches any depth, none included.
		{"${{ hashFiles('**/go.mod') }}", allMods},
		{"${{ hashFiles('**/**/go.mod') }}", allMods},
		{"${{ hashFiles('sub/**/go.mod') }}", want(tree, "sub/deep/er/go.mod", "sub/go.mod")},
		{"${{ hashFiles('**/er/*.go') }}", want(tree, "sub/deep/er/main.go")},
		{"${{ hashFiles('**/go.mod', '!vendor/**') }}", want(tree, "go.mod", "sub/deep/er/go.mod", "sub/go.mod")},
		{"${{ hashFiles('**/go.mod', '!vendor') }}", want(tree, "go.mod", "sub/deep/er/go.mod", "sub/go.mod")},
		{"${{ hashFiles('!vendor/**', '**/go.mod') }}", allMods},
		// Dot files match; a directory matches what is below it.
		{"${{ hashFiles('web/**/*.json') }}", want(tree, "web/.hidden/lock.json", "web/package-lock.json")},
		{"${{ hashFiles('web') }}", want(tree, "web/.hidden/lock.json", "web/package-lock.json")},
		{"${{ hashFiles('docs/a b.txt') }}", want(tree, "docs/a b.txt")},
		{"${{ hashFiles('brackets/[x].txt') }}", want(tree, "brackets/x.txt")},
		{"${{ hashFiles('brackets/\\[x\\].txt') }}", want(tree, "brackets/[x].txt")},
		{"${{ hashFiles('g?.sum') }}", want(tree, "go.sum")},
		// Nothing matches: "", as GitHub does.
		{"k-${{ hashFiles('nothing.lock') }}-", "k--"},
		{"${{ hashFiles('**/*.nothing', 'none/**') }}", ""},
		{"${{ hashFiles('go.sum/below') }}", ""},
		// Links: followed only inside the workspace and only to files.
		{"${{ hashFiles('link-in.sum') }}", want(tree, "go.sum")},
		{"${{ hashFiles('link-out.sum', 'link-abs.sum') }}", ""},
		{"${{ hashFiles('linkdir/**') }}", ""},
		{"${{ hashFiles('linkdir/go.mod') }}", ""},
		{"${{ hashFiles('*.sum') }}", want(tree, "go.sum", "go.sum")}, // go.sum and link-in.sum
	} {
		got, err := Expand(tc.tmpl, c)
		if err != nil {
			t.Errorf("Expand(%q): %v", tc.tmpl, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Expand(%q) = %q, want %q", tc.tmpl, got, tc.want)
		}
		if err := Validate(tc.tmpl); err != nil {
			t.Errorf("Validate(%q): %v", tc.tmpl, err)
		}
	}
}

func TestExpandEmptyContext(t *testing.T) {
	got, err := Expand("k-${{ branch }}-${{ os }}-${{ arch }}", Context{})
	if err != nil || got != "k---" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		tmpl   string
		offset int
		msg    string
	}{
		{"a-${{ foo }}", 6, `unknown name "foo"`},
		{"${{ github.sha }}", 4, `unknown name "github.sha"`},
		{"x-${{ branch }}-${{ env.HOME }}", 20, `unknown name "env.HOME"`},
		{"${{ format('{0}', branch) }}", 4, `unknown function "format"`},
		{"${{ hashFiles() }}", 14, "at least one glob"},
		{"k-${{ branch", 2, "unclosed ${{"},
		{"k-${{ branch }", 2, "unclosed ${{"},
		{"${{ branch }}-${{ os", 14, "unclosed ${{"},
		{"${{ hashFiles('go.sum) }}", 14, "unterminated string"},
		{`${{ hashFiles("go.sum") }}`, 14, "single-quoted"},
		{"${{ }}", 4, "empty expression"},
		{"${{}}", 3, "empty expression"},
		{"${{ branch || 'main' }}", 11, "unexpected character '|'"},
		{"${{ branch os }}", 11, `unexpected name "os"`},
		{"${{ 'a' 'b' }}", 8, "unexpected string 'b'"},
		{"${{ hashFiles('a' 'b') }}", 18, "want , or )"},
		{"${{ hashFiles('a',) }}", 18, "want a 'quoted glob'"},
		{"${{ hashFiles('a' }}", 18, "not closed"},
		{"${{ hashFiles(branch) }}", 14, "want a 'quoted glob'"},
		{"${{ hashFiles }}", 4, `unknown name "hashFiles"`},
		{"${{ (branch) }}", 4, `unexpected "("`},
		{"${{ hashFiles('../go.sum') }}", 14, `must not contain ".."`},
		{"${{ hashFiles('a/../../b') }}", 14, `must not contain ".."`},
		{"${{ hashFiles('go.sum', '/etc/passwd') }}", 24, "not absolute"},
		{"${{ hashFiles('') }}", 14, "empty glob"},
		{"${{ hashFiles('!') }}", 14, "empty glob"},
		{"${{ hashFiles('[') }}", 14, "malformed pattern"},
		{"${{ hashFiles('a/[]b') }}", 14, "malformed pattern"},
		{"${{ brañch }}", 7, "non-ASCII"},
	} {
		for name, err := range map[string]error{"Validate": Validate(tc.tmpl), "Expand": expandErr(t, tc.tmpl)} {
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("%s(%q) = %v, want an *Error", name, tc.tmpl, err)
				continue
			}
			if e.Offset != tc.offset || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("%s(%q): offset %d, %q; want offset %d, %q", name, tc.tmpl, e.Offset, e.Msg, tc.offset, tc.msg)
			}
			if !strings.Contains(err.Error(), e.Expr) || !strings.HasPrefix(tc.tmpl[strings.Index(tc.tmpl, e.Expr):], e.Expr) {
				t.Errorf("%s(%q): error %q does not quote the expression", name, tc.tmpl, err)
			}
		}
	}
}

func expandErr(t *testing.T, tmpl string) error {
	_, err := Expand(tmpl, Context{Workspace: t.TempDir()})
	return err
}

// TestExpandIOErrors: a missing workspace is an error naming the
// expression, not an empty hash.
func TestExpandIOErrors(t *testing.T) {
	for _, ws := range []string{"", filepath.Join(t.TempDir(), "missing")} {
		_, err := Expand("k-${{ hashFiles('go.sum') }}", Context{Workspace: ws})
		var e *Error
		if !errors.As(err, &e) || e.Offset != 2 || e.Expr != "${{ hashFiles('go.sum') }}" {
			t.Errorf("workspace %q: %v", ws, err)
		}
	}
}

// TestHashFilesStable: the same files hash the same in every run (the value
// is pinned: a change of algorithm would silently miss every cache), and a
// change to a matched file changes it while a change elsewhere does not.
func TestHashFilesStable(t *testing.T) {
	files := map[string]string{"go.mod": "module a\n", "go.sum": "sum\n", "README": "hi\n"}
	ws := workspace(t, files)
	tmpl := "${{ hashFiles('go.sum', '**/go.mod') }}"
	const pinned = "ff8e8f57d6f8ce079a13737ee5ee1d75f4d5a60bfc064014bdc1fdf0b1abda81"
	for range 2 {
		got, err := Expand(tmpl, Context{Workspace: ws})
		if err != nil || got != pinned {
			t.Fatalf("got %q, %v; want %s", got, err, pinned)
		}
	}
	if err := os.WriteFile(filepath.Join(ws, "README"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := Expand(tmpl, Context{Workspace: ws}); got != pinned {
		t.Fatalf("an unmatched file changed the hash: %s", got)
	}
	if err := os.WriteFile(filepath.Join(ws, "go.sum"), []byte("sum2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Expand(tmpl, Context{Workspace: ws})
	if err != nil || got == pinned || got == "" {
		t.Fatalf("after changing go.sum: %q, %v", got, err)
	}
	// A new matching file changes it too.
	if err := os.MkdirAll(filepath.Join(ws, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "x", "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if again, _ := Expand(tmpl, Context{Workspace: ws}); again == got {
		t.Fatal("a new go.mod did not change the hash")
	}
}

// TestHashFilesSkipsSpecialFiles: only regular files count.
func TestHashFilesSkipsSpecialFiles(t *testing.T) {
	ws := workspace(t, map[string]string{"a.lock": "a\n"})
	if err := mkfifo(filepath.Join(ws, "b.lock")); err != nil {
		t.Skip("no fifo:", err)
	}
	got, err := Expand("${{ hashFiles('*.lock') }}", Context{Workspace: ws})
	if err != nil || got != want(map[string]string{"a.lock": "a\n"}, "a.lock") {
		t.Fatalf("got %q, %v", got, err)
	}
}

func mkfifo(p string) error { return syscall.Mkfifo(p, 0o644) }

func TestMatchParts(t *testing.T) {
	for _, tc := range []struct {
		glob, name string
		want       bool
	}{
		{"**", "a/b/c", true},
		{"**/c", "c", true},
		{"a/**/c", "a/c", true},
		{"a/**/c", "a/x/y/c", true},
		{"a/**/c", "a/x/y/d", false},
		{"a/*", "a/b/c", false},
		{"a/*/c", "a/b/c", true},
		{"*.go", "x/y.go", false},
		{"**/*.go", "x/y.go", true},
		{"a/**/b/**/c", "a/b/c", true},
		{"a/**/b/**/c", "a/x/b/y/z/c", true},
		{"a/**/b/**/c", "a/x/y/z/c", false},
		// Backtracking would take ages here.
		{strings.Repeat("**/a*/", 12) + "b", strings.Repeat("aa/", 60) + "c", false},
		{strings.Repeat("**/a*/", 12) + "b", strings.Repeat("aa/", 60) + "b", true},
	} {
		g, msg := parseGlob(tc.glob)
		if msg != "" {
			t.Fatal(msg)
		}
		if got := matchParts(g.parts, strings.Split(tc.name, "/")); got != tc.want {
			t.Errorf("%q ~ %q = %v, want %v", tc.glob, tc.name, got, tc.want)
		}
	}
}
