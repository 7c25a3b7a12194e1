package gitmirror

import (
	"context"
	"errors"
	"fmt"
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

// basicAuthServer serves src by git's http-backend to requests whose basic
// credentials are user and pass, and 401 to any other; seen counts the
// requests it let through.
func basicAuthServer(t *testing.T, src *srcRepo, user, pass string) (srv *httptest.Server, seen *int) {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := &cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(src.dir), "GIT_HTTP_EXPORT_ALL=1"}}
	seen = new(int)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="kiln-test"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		*seen++
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, seen
}

// recordArgv puts a git on PATH that appends each command line to the
// file it returns.
func recordArgv(t *testing.T) string {
	t.Helper()
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
	return argv
}

// filesHolding lists the files under root whose content has s.
func filesHolding(root, s string) []string {
	var found []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, _ := os.ReadFile(p); strings.Contains(string(data), s) {
				found = append(found, p)
			}
		}
		return nil
	})
	return found
}

// Credentials given apart from the URL (a forge connection's), in each
// forge's convention: GitHub's x-access-token and GitLab's oauth2 with
// the token as password, and Gitea's token as the user name. The token
// reaches the server, and nothing else: not git's command line, the
// mirror, the checkout, or an error; a wrong token is ErrAuth, its
// message without it.
func TestCredentialsOption(t *testing.T) {
	for _, c := range []struct{ name, user, pass, secret string }{
		{"github", "x-access-token", "ghs_1nstallationT0kenABC", "ghs_1nstallationT0kenABC"},
		{"gitlab", "oauth2", "glpat-Pr1vateT0kenXYZ", "glpat-Pr1vateT0kenXYZ"},
		{"gitea-token-as-user", "3f2a9c0d1b4e5f60718293a4b5c6d7e8f9012345", "", "3f2a9c0d1b4e5f60718293a4b5c6d7e8f9012345"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := newSrcRepo(t)
			first := src.commit("one", map[string]string{".kiln.yml": "jobs: {}\n"})
			src.git("update-ref", "refs/pull/7/head", first)
			head := src.commit("two", map[string]string{"b": "b\n"})
			srv, seen := basicAuthServer(t, src, c.user, c.pass)
			argv := recordArgv(t)
			m := newMirrors(t)
			ctx := context.Background()
			url := srv.URL + "/src"
			creds := WithCredentials(&Credentials{Username: c.user, Password: c.pass})

			got, err := m.Resolve(ctx, url, "main", creds)
			if err != nil || got != head {
				t.Fatalf("Resolve = %q, %v; want %s", got, err, head)
			}
			if _, err := m.ReadFile(ctx, url, head, ".kiln.yml", creds); err != nil {
				t.Fatal(err)
			}
			if err := m.FetchRef(ctx, url, "refs/pull/7/head", first, creds); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(t.TempDir(), "ws")
			// A second host's mirrors: the checkout fetches itself.
			m2 := newMirrors(t)
			if err := m2.Checkout(ctx, url, head, dest, creds); err != nil {
				t.Fatal(err)
			}
			if *seen == 0 {
				t.Fatal("the server never saw the credentials")
			}
			if origin := runGit(t, dest, gitEnv(t.TempDir()), "config", "remote.origin.url"); origin != url {
				t.Errorf("the checkout's origin is %q, want %q", origin, url)
			}
			args, _ := os.ReadFile(argv)
			if strings.Contains(string(args), c.secret) {
				t.Errorf("the token is on a git command line:\n%s", args)
			}
			for _, root := range []string{m.root, m2.root, dest} {
				if f := filesHolding(root, c.secret); len(f) > 0 {
					t.Errorf("files hold the token: %v", f)
				}
			}

			// Without credentials, or with a wrong token: ErrAuth, and the
			// message shows no token.
			_, err = newMirrors(t).Resolve(ctx, url, "main")
			if !errors.Is(err, ErrAuth) || !errors.Is(err, ErrFetch) {
				t.Errorf("fetch without credentials: %v; want ErrAuth", err)
			}
			wrong := &Credentials{Username: c.user, Password: c.pass + "x"}
			if c.pass == "" {
				wrong = &Credentials{Username: c.user + "x"}
			}
			_, err = newMirrors(t).Resolve(ctx, url, "main", WithCredentials(wrong))
			if !errors.Is(err, ErrAuth) {
				t.Errorf("fetch with a wrong token: %v; want ErrAuth", err)
			}
			if err != nil && (strings.Contains(err.Error(), c.secret) || strings.Contains(err.Error(), wrong.Secrets()[0])) {
				t.Errorf("the error shows the token: %v", err)
			}
			err = newMirrors(t).Checkout(ctx, url, head, filepath.Join(t.TempDir(), "ws"), WithCredentials(wrong))
			if !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), wrong.Secrets()[0]) {
				t.Errorf("checkout with a wrong token: %v", err)
			}
		})
	}
}

// A URL's own credentials win over given ones; credentials are refused
// for a remote that is not http(s) (they would not be sent: a caller who
// gives them has made a mistake) and never printed.
func TestCredentialsOptionURLsOwnAndOtherTransports(t *testing.T) {
	src := newSrcRepo(t)
	head := src.commit("one", nil)
	srv, _ := basicAuthServer(t, src, "x-access-token", "url-token-1234")
	url := strings.Replace(srv.URL, "http://", "http://x-access-token:url-token-1234@", 1) + "/src"
	got, err := newMirrors(t).Resolve(context.Background(), url, "main", WithCredentials(&Credentials{Username: "oauth2", Password: "given-token-5678"}))
	if err != nil || got != head {
		t.Fatalf("Resolve = %q, %v; want %s (the URL's own credentials)", got, err, head)
	}
	for _, u := range []string{src.dir, "ssh://git@host.invalid/a/b.git", "git@host.invalid:a/b.git"} {
		_, err := newMirrors(t).Resolve(context.Background(), u, "main", WithCredentials(&Credentials{Username: "oauth2", Password: "given-token-5678"}))
		if err == nil || !strings.Contains(err.Error(), "http and https remotes only") || strings.Contains(err.Error(), "given-token-5678") {
			t.Errorf("Resolve(%s) with credentials: %v", u, err)
		}
	}
	if s := fmt.Sprint(Credentials{Username: "u", Password: "given-token-5678"}); strings.Contains(s, "given-token-5678") {
		t.Errorf("Credentials print as %s", s)
	}
}

// A redirect to another host does not take the token with it: git's
// http.extraHeader is a custom header, which curl sends to the host of
// the URL only.
func TestCredentialsNotSentAcrossRedirect(t *testing.T) {
	src := newSrcRepo(t)
	src.commit("one", nil)
	var leaked, hit bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit = true
		if r.Header.Get("Authorization") != "" {
			leaked = true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="other"`)
		http.Error(w, "who are you", http.StatusUnauthorized)
	}))
	defer other.Close()
	// The same loopback address under another name is another host to curl.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherURL+r.URL.RequestURI(), http.StatusFound)
	}))
	defer redirector.Close()
	_, err := newMirrors(t).Resolve(context.Background(), redirector.URL+"/src", "main",
		WithCredentials(&Credentials{Username: "x-access-token", Password: "redirected-token-42"}))
	if err == nil {
		t.Fatal("fetch succeeded")
	}
	if !hit {
		t.Fatalf("git did not follow the redirect: %v", err)
	}
	if leaked {
		t.Error("the redirect's target got the Authorization header")
	}
}
