package main

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unicode"
)

// The project built is a real module taken from the Go module proxy, by
// default Prometheus's node_exporter: a program with a non-trivial
// dependency tree (47 modules, 358 packages) that the job fetches through
// the same proxy. Its module zip becomes a git repository here.
//
// The repository gets one branch per way of building (its own .kiln.yml),
// each with commit A (the module's source plus that .kiln.yml) and commits
// B1…Bn, each changing one line of the module relative to A (and, for the
// keyed way, the agent the pipeline runs on) (the text of
// an error in the collector package, which every exporter builds on): the
// incremental rebuild whose time is measured. Every branch has the same
// Go source at A and at each Bi.

const (
	defaultProject = "github.com/prometheus/node_exporter@v1.12.1"
	defaultMain    = "."                            // the package built
	defaultLeaf    = "collector/collector.go"       // the file changed
	leafTarget     = `"collector returned no data"` // the line changed in it
	maxModuleZip   = 500 << 20                      // the proxy's own limit
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

// sourceRepo is the top of the git repository holding the working directory
// (Kiln's: the cache client's npm package and the image recipes are there).
func sourceRepo() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("cachebench runs inside Kiln's git repository (git rev-parse --show-toplevel: %v)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// escapeModulePath is the module proxy protocol's case encoding: each
// upper-case letter becomes '!' and its lower-case form.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fetchModule downloads module@version's zip from the proxy and unpacks it
// into dir (the zip's files all lie under "module@version/").
func fetchModule(ctx context.Context, proxy, modVer, dir string) error {
	mod, ver, ok := strings.Cut(modVer, "@")
	if !ok || mod == "" || ver == "" {
		return fmt.Errorf("project %q: want module@version", modVer)
	}
	url := fmt.Sprintf("%s/%s/@v/%s.zip", strings.TrimSuffix(proxy, "/"), escapeModulePath(mod), escapeModulePath(ver))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	tmp, err := os.CreateTemp("", "cachebench-module-*.zip")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, io.LimitReader(resp.Body, maxModuleZip+1))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	if n > maxModuleZip {
		return fmt.Errorf("fetch %s: over %d bytes", url, maxModuleZip)
	}
	zr, err := zip.NewReader(tmp, n)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	prefix := modVer + "/"
	for _, f := range zr.File {
		name, ok := strings.CutPrefix(f.Name, prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if !strings.HasPrefix(dst, filepath.Clean(dir)+string(filepath.Separator)) {
			return fmt.Errorf("%s: %q leaves the module's directory", url, f.Name)
		}
		if err := unzipFile(f, dst); err != nil {
			return err
		}
	}
	return nil
}

func unzipFile(f *zip.File, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// leafChange returns the changed file's content at revision i (1…n): one
// line differs from the original, and from every other revision.
func leafChange(orig, file string, i int) (content, what string) {
	if strings.Contains(orig, leafTarget) {
		changed := strings.TrimSuffix(leafTarget, `"`) + fmt.Sprintf(` (rev %d)"`, i)
		return strings.Replace(orig, leafTarget, changed, 1), "the text of an error in " + file
	}
	// Another file, or it changed upstream: add a line instead.
	return orig + fmt.Sprintf("\nvar cachebenchRevision = %d // a one-line change for bench/cachebench\n", i),
		"a package-level variable appended to " + file
}

// makeRepo makes dir a git repository of the project's source and adds,
// for each branch, commit A with its pipeline and n commits B changing
// one line of leaf.
func makeRepo(ctx context.Context, goProxy, project, leaf, dir string, pipelines map[string][2]string, n int) (*benchRepo, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := fetchModule(ctx, goProxy, project, dir); err != nil {
		return nil, err
	}
	if _, err := git(dir, "init", "-q", "-b", "upstream"); err != nil {
		return nil, err
	}
	head, err := commitAll(dir, "cachebench: "+project+" from the Go module proxy")
	if err != nil {
		return nil, err
	}
	origBytes, err := os.ReadFile(filepath.Join(dir, leaf))
	if err != nil {
		return nil, fmt.Errorf("the file to change: %w", err)
	}
	orig := string(origBytes)
	r := &benchRepo{dir: dir, a: map[string]string{}, b: map[string][]string{}}
	for branch, pipeline := range pipelines {
		if _, err := git(dir, "checkout", "-q", "-B", branch, head); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte(pipeline[0]), 0o644); err != nil {
			return nil, err
		}
		if r.a[branch], err = commitAll(dir, "cachebench: A, the pipeline of "+branch); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte(pipeline[1]), 0o644); err != nil {
			return nil, err
		}
		for i := 1; i <= n; i++ {
			var content string
			content, r.change = leafChange(orig, leaf, i)
			if err := os.WriteFile(filepath.Join(dir, leaf), []byte(content), 0o644); err != nil {
				return nil, err
			}
			c, err := commitAll(dir, fmt.Sprintf("cachebench: B%d, a one-line change", i))
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
