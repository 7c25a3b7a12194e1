package gitmirror

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A repository served over HTTP by git's own http-backend, behind basic
// auth with a token as password (as GitHub's installation tokens are
// used). The mirror fetches it with the token in the URL; git gets the
// token in its environment only: it never appears in git's command line
// (a wrapper on PATH records every one), in the mirror's files, or in the
// checkout's config.
func TestCredentialsNeverOnCommandLine(t *testing.T) {
	const token = "ghs_S3cr3tInstallationT0ken"
	src := newSrcRepo(t)
	head := src.commit("one", map[string]string{".kiln.yml": "jobs: {}\n"})
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := &cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(src.dir), "GIT_HTTP_EXPORT_ALL=1"}}
	var sawAuth bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "x-access-token" || pass != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="kiln-test"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		sawAuth = true
		backend.ServeHTTP(w, r)
	}))
	defer srv.Close()

	// git, recording its arguments.
	bin := t.TempDir()
	argv := filepath.Join(t.TempDir(), "argv")
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + argv + "\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "git"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	m := newMirrors(t)
	url := strings.Replace(srv.URL, "http://", "http://x-access-token:"+token+"@", 1) + "/src"
	got, err := m.Resolve(context.Background(), url, "main")
	if err != nil || got != head {
		t.Fatalf("Resolve = %q, %v; want %s", got, err, head)
	}
	dest := filepath.Join(t.TempDir(), "ws")
	if err := m.Checkout(context.Background(), url, head, dest); err != nil {
		t.Fatal(err)
	}
	if !sawAuth {
		t.Fatal("the server never saw the credentials")
	}
	args, err := os.ReadFile(argv)
	if err != nil || len(args) == 0 {
		t.Fatalf("no git command recorded: %v", err)
	}
	if strings.Contains(string(args), token) {
		t.Errorf("the token is on a git command line:\n%s", args)
	}
	for _, root := range []string{m.root, dest} {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if data, _ := os.ReadFile(p); strings.Contains(string(data), token) {
					t.Errorf("%s holds the token", p)
				}
			}
			return nil
		})
	}
	// Without the token the server refuses, and the error says so without
	// any credentials.
	_, err = newMirrors(t).Resolve(context.Background(), srv.URL+"/src", "main")
	if err == nil || !strings.Contains(err.Error(), "fetch failed") {
		t.Errorf("fetch without credentials: %v", err)
	}
}
