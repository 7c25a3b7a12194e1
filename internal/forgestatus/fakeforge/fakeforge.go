// Package fakeforge is a fake GitLab or Gitea commit statuses API for
// tests: a real HTTP server that checks what those forges check (the
// token's header, the path, the JSON body, the state's values) and answers
// with their status codes, recording every status it accepted. (GitHub's
// fake is internal/github/fakegithub.)
//
//	GitLab: POST /api/v4/projects/{url-escaped path}/statuses/{sha}   PRIVATE-TOKEN: TOKEN
//	        {"state": pending|running|success|failed|canceled, "name", "target_url", "description"}
//	Gitea:  POST /api/v1/repos/{owner}/{repo}/statuses/{sha}          Authorization: token TOKEN
//	        {"state": pending|success|error|failure|warning, "context", "target_url", "description"}
//
// and the repository and its webhooks (repos.go).
package fakeforge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Kinds of fake.
const (
	GitLab = "gitlab"
	Gitea  = "gitea"
)

// Status is a commit status the fake accepted.
type Status struct {
	Repo        string // GitLab: the project's path; Gitea: owner/name
	SHA         string
	State       string
	Context     string // GitLab's name, Gitea's context
	TargetURL   string
	Description string
}

type fault struct {
	status int
	header http.Header
	n      int
}

// Server is the fake forge.
type Server struct {
	Kind string
	ts   *httptest.Server

	mu       sync.Mutex
	token    string
	repo     string
	statuses []Status
	faults   []*fault
	calls    int
	delay    time.Duration
	repos    repoState
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// New starts a fake of kind (GitLab or Gitea) that knows one repository
// and accepts one token. Close it when done.
func New(kind, repo, token string) *Server {
	s := &Server{Kind: kind, token: token, repo: repo}
	mux := http.NewServeMux()
	switch kind {
	case GitLab:
		mux.HandleFunc("POST /api/v4/projects/{id}/statuses/{sha}", s.handle)
	case Gitea:
		mux.HandleFunc("POST /api/v1/repos/{owner}/{repo}/statuses/{sha}", s.handle)
	default:
		panic("fakeforge: unknown kind " + kind)
	}
	s.routeRepos(mux) // repos.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls++
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "404 Not Found")
	})
	s.ts = httptest.NewServer(mux)
	return s
}

// URL is the forge's base URL (a connection's forge_url).
func (s *Server) URL() string { return s.ts.URL }

// Close shuts the fake down.
func (s *Server) Close() { s.ts.Close() }

// FailNext answers the next n status requests with status and header
// (e.g. Retry-After), before checking anything but the route.
func (s *Server) FailNext(status, n int, header http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{status: status, header: header, n: n})
}

// Recover drops the faults still to come: the forge is back.
func (s *Server) Recover() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetDelay makes every answer wait d (a slow forge).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Statuses returns the statuses accepted so far, in order.
func (s *Server) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.statuses...)
}

// Calls is how many requests reached the fake.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	delay := s.delay
	var f *fault
	if len(s.faults) > 0 {
		f = s.faults[0]
		if f.n--; f.n <= 0 {
			s.faults = s.faults[1:]
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if f != nil {
		for k, v := range f.header {
			w.Header()[k] = v
		}
		writeError(w, f.status, http.StatusText(f.status))
		return
	}
	var repo, tok string
	switch s.Kind {
	case GitLab:
		// The project's path arrives escaped ("group%2Fname"): the raw
		// path must hold the escape, not a bare slash.
		raw := r.URL.EscapedPath()
		id := strings.TrimPrefix(raw, "/api/v4/projects/")
		id, _, _ = strings.Cut(id, "/statuses/")
		p, err := url.PathUnescape(id)
		if err != nil {
			writeError(w, http.StatusNotFound, "404 Project Not Found")
			return
		}
		repo, tok = p, r.Header.Get("PRIVATE-TOKEN")
	case Gitea:
		repo = r.PathValue("owner") + "/" + r.PathValue("repo")
		scheme, t, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if strings.EqualFold(scheme, "token") {
			tok = t
		}
	}
	if tok == "" || tok != s.token {
		writeError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	if repo != s.repo {
		writeError(w, http.StatusNotFound, "404 Project Not Found")
		return
	}
	var body map[string]any
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusBadRequest, "content type "+ct+": want application/json")
		return
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
		return
	}
	str := func(k string) string { v, _ := body[k].(string); return v }
	st := Status{Repo: repo, SHA: r.PathValue("sha"), State: str("state"), TargetURL: str("target_url"), Description: str("description")}
	var valid []string
	switch s.Kind {
	case GitLab:
		st.Context = str("name")
		valid = []string{"pending", "running", "success", "failed", "canceled"}
	case Gitea:
		st.Context = str("context")
		valid = []string{"pending", "success", "error", "failure", "warning"}
	}
	ok := false
	for _, v := range valid {
		ok = ok || st.State == v
	}
	if !ok {
		// GitLab answers 400 to a bad state; Gitea 422.
		code := http.StatusUnprocessableEntity
		if s.Kind == GitLab {
			code = http.StatusBadRequest
		}
		writeError(w, code, "state does not have a valid value")
		return
	}
	if !fullSHA.MatchString(st.SHA) {
		writeError(w, http.StatusNotFound, "404 Commit Not Found")
		return
	}
	s.mu.Lock()
	s.statuses = append(s.statuses, st)
	id := len(s.statuses)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "status": st.State, "name": st.Context})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}
