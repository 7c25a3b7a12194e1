package fakegithub

import (
	"net/http"
	"net/http/cgi"
	"os/exec"
	"path/filepath"
	"strings"
)

// EndpointGit counts requests to the git endpoint (ServeRepository).
const EndpointGit = "git"

// ServeRepository serves the bare or non-bare repository at dir as
// owner/repo over git's smart HTTP (git's own http-backend), at
// URL-without-prefix/owner/repo.git (GitRemote), as a private repository
// is served: only to a request whose basic credentials carry a token as
// the password (any user name, x-access-token for an installation's)
// that is live: one the fake issued to an installation and not yet
// expired by its clock, or one added with AddToken. Anything else gets
// GitHub's 401 with a Basic challenge.
func (s *Server) ServeRepository(owner, repo, dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gitRepos[strings.ToLower(owner+"/"+repo)] = dir
}

// GitRemote is the clone URL of owner/repo: on the server's root, not
// below the API's prefix, as github.com and GitHub Enterprise Server
// serve git.
func (s *Server) GitRemote(owner, repo string) string {
	return s.ts.URL + "/" + owner + "/" + repo + ".git"
}

// GitRequests is how many git requests the fake let through (with a live
// token); Calls(EndpointGit) counts every one.
func (s *Server) GitRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gitServed
}

// gitHandler serves GET /{owner}/{repo}/info/refs and POST
// /{owner}/{repo}/git-upload-pack (repo with or without ".git").
func (s *Server) gitHandler(w http.ResponseWriter, r *http.Request) {
	owner, repo := r.PathValue("owner"), strings.TrimSuffix(r.PathValue("repo"), ".git")
	s.mu.Lock()
	s.calls[EndpointGit]++
	dir, known := s.gitRepos[strings.ToLower(owner+"/"+repo)]
	_, pass, ok := r.BasicAuth()
	exp, live := s.tokens[pass]
	live = ok && live && (exp.IsZero() || s.now().Before(exp))
	if live && known {
		s.gitServed++
	}
	s.mu.Unlock()
	if !live {
		// GitHub's answer to a private repository without (good) credentials.
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(w, "Invalid username or token. Password authentication is not supported for Git operations.", http.StatusUnauthorized)
		return
	}
	if !known {
		http.Error(w, "Repository not found.", http.StatusNotFound)
		return
	}
	if r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:] == "git-receive-pack" || r.URL.Query().Get("service") == "git-receive-pack" {
		http.Error(w, "Write access to repository not granted.", http.StatusForbidden)
		return
	}
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	abs, _ := filepath.Abs(dir)
	// http-backend finds the repository at GIT_PROJECT_ROOT + PATH_INFO:
	// the path is given again below the repository's parent directory.
	rest := strings.TrimPrefix(r.URL.Path, "/"+r.PathValue("owner")+"/"+r.PathValue("repo"))
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + filepath.Base(abs) + rest
	h := &cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(abs), "GIT_HTTP_EXPORT_ALL=1"}}
	h.ServeHTTP(w, r2)
}
