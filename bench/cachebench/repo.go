package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The project built is Kiln itself, cloned from the repository this program
// runs in: a real module with a non-trivial dependency tree (the Docker
// client, Prometheus, modernc.org/sqlite, …) that the job fetches through
// the Go module proxy.
//
// The clone gets one branch per way of building (its own .kiln.yml), each
// with commit A (the source's HEAD plus that .kiln.yml) and commits B1…Bn,
// each changing one line of one leaf package (internal/secretbox) relative
// to A: the incremental rebuild whose time is measured. Every branch has
// the same Go source at A and at each Bi.

const (
	leafFile   = "internal/secretbox/secretbox.go"
	leafTarget = `want 64 hex characters (32 bytes)`
)

type benchRepo struct {
	dir    string
	a      map[string]string   // branch → commit A
	b      map[string][]string // branch → commits B1…Bn
	change string              // what the one-line change is
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=cachebench", "-c", "user.email=cachebench@kiln.invalid", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// sourceRepo is the top of the git repository holding the working directory.
func sourceRepo() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("cachebench runs inside Kiln's git repository (git rev-parse --show-toplevel: %v)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// leafChange returns the leaf package's file at revision i (1…n): one line
// differs from the original, and from every other revision.
func leafChange(orig string, i int) (content, what string) {
	if strings.Contains(orig, leafTarget) {
		return strings.Replace(orig, leafTarget, fmt.Sprintf("want 64 hex characters (32 bytes, rev %d)", i), 1),
			"the text of an error in " + leafFile + " (ParseKey)"
	}
	// The file changed since this benchmark was written: add a line instead.
	return orig + fmt.Sprintf("var cachebenchRevision = %d // a one-line change for bench/cachebench\n", i),
		"a package-level variable appended to " + leafFile
}

// makeRepo clones src into dir and adds, for each branch, commit A with its
// pipeline and n commits B.
func makeRepo(src, dir string, pipelines map[string]string, n int) (*benchRepo, error) {
	if _, err := git("", "clone", "-q", src, dir); err != nil {
		return nil, err
	}
	head, err := git(src, "rev-parse", "HEAD")
	if err != nil {
		return nil, err
	}
	origBytes, err := os.ReadFile(filepath.Join(dir, leafFile))
	if err != nil {
		return nil, fmt.Errorf("the leaf package to change: %w", err)
	}
	orig := string(origBytes)
	r := &benchRepo{dir: dir, a: map[string]string{}, b: map[string][]string{}}
	for branch, pipeline := range pipelines {
		if _, err := git(dir, "checkout", "-q", "-B", branch, head); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte(pipeline), 0o644); err != nil {
			return nil, err
		}
		if r.a[branch], err = commitAll(dir, "cachebench: A, the pipeline of "+branch); err != nil {
			return nil, err
		}
		for i := 1; i <= n; i++ {
			var content string
			content, r.change = leafChange(orig, i)
			if err := os.WriteFile(filepath.Join(dir, leafFile), []byte(content), 0o644); err != nil {
				return nil, err
			}
			c, err := commitAll(dir, fmt.Sprintf("cachebench: B%d, a one-line change in a leaf package", i))
			if err != nil {
				return nil, err
			}
			r.b[branch] = append(r.b[branch], c)
		}
	}
	return r, nil
}

func commitAll(dir, msg string) (string, error) {
	if _, err := git(dir, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := git(dir, "commit", "-q", "--no-verify", "-m", msg); err != nil {
		return "", err
	}
	return git(dir, "rev-parse", "HEAD")
}
