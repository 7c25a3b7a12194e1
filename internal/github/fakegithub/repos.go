package fakegithub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Repository and webhook endpoints (Calls, FailNext):
//
//	GET   /repos/{owner}/{repo}
//	GET   /repos/{owner}/{repo}/hooks
//	POST  /repos/{owner}/{repo}/hooks
//	PATCH /repos/{owner}/{repo}/hooks/{id}
const (
	EndpointGetRepo    = "get-repo"
	EndpointListHooks  = "list-hooks"
	EndpointCreateHook = "create-hook"
	EndpointEditHook   = "edit-hook"
)

// Repo is a repository the fake knows (AddRepo). Only repositories added
// exist: any other answers 404, as GitHub answers for a repository that
// does not exist or that the token may not see.
type Repo struct {
	FullName      string // owner/name
	CloneURL      string // default https://github.com/FULL_NAME.git; a test points it at a local repository
	DefaultBranch string // default main
	Private       bool
}

// Hook is a repository webhook as the fake keeps it, secret included
// (which GitHub never shows again once set).
type Hook struct {
	ID          int64
	Repo        string // owner/name
	URL         string
	ContentType string // json or form
	Secret      string
	InsecureSSL string
	Events      []string
	Active      bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// repoTable is the fake's repositories and their hooks; its zero value
// is empty. Guarded by Server.mu.
type repoTable struct {
	repos    map[string]*Repo // by lower-cased full name: GitHub's names ignore case
	hooks    []*Hook
	lastHook int64
	readOnly map[string]bool // tokens that may read repositories, not manage their hooks
}

// hookEvents are the events a repository webhook may subscribe to (a part
// of GitHub's list, enough that a typo is refused as GitHub refuses it).
var hookEvents = []string{"*", "branch_protection_rule", "check_run", "check_suite", "commit_comment", "create", "delete",
	"deployment", "deployment_status", "fork", "issue_comment", "issues", "label", "member", "merge_group", "milestone",
	"package", "page_build", "ping", "public", "pull_request", "pull_request_review", "pull_request_review_comment",
	"pull_request_review_thread", "push", "release", "repository", "star", "status", "watch", "workflow_dispatch",
	"workflow_job", "workflow_run"}

// AddRepo adds (or replaces) a repository that every token may read.
func (s *Server) AddRepo(r Repo) {
	if r.CloneURL == "" {
		r.CloneURL = "https://github.com/" + r.FullName + ".git"
	}
	if r.DefaultBranch == "" {
		r.DefaultBranch = "main"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repos.repos == nil {
		s.repos.repos = map[string]*Repo{}
	}
	s.repos.repos[strings.ToLower(r.FullName)] = &r
}

// ReadOnly makes token one without admin rights on repositories: it may
// read them, but GitHub answers 403 to it on their webhooks (a classic
// token without admin:repo_hook, a fine-grained one without "Webhooks:
// write", a collaborator who is not an admin).
func (s *Server) ReadOnly(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repos.readOnly == nil {
		s.repos.readOnly = map[string]bool{}
	}
	s.repos.readOnly[token] = true
}

// Hooks returns the webhooks of repository full (owner/name), oldest first.
func (s *Server) Hooks(full string) []Hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Hook
	for _, h := range s.repos.hooks {
		if strings.EqualFold(h.Repo, full) {
			c := *h
			c.Events = slices.Clone(h.Events)
			out = append(out, c)
		}
	}
	return out
}

// repoOf returns the repository a request's path names, or answers 404.
// Called with s.mu held.
func (s *Server) repoOf(w http.ResponseWriter, r *http.Request) *Repo {
	rp := s.repos.repos[strings.ToLower(r.PathValue("owner")+"/"+r.PathValue("repo"))]
	if rp == nil {
		writeError(w, http.StatusNotFound, "Not Found")
	}
	return rp
}

// mayAdminHooks reports whether the request's token may manage hooks, or
// answers 403 as GitHub does. Called with s.mu held.
func (s *Server) mayAdminHooks(w http.ResponseWriter, r *http.Request) bool {
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if s.repos.readOnly[tok] {
		writeError(w, http.StatusForbidden, "Resource not accessible by personal access token")
		return false
	}
	return true
}

// getRepo is GET /repos/{owner}/{repo}.
func (s *Server) getRepo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repoOf(w, r)
	if rp == nil {
		return
	}
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	owner, name, _ := strings.Cut(rp.FullName, "/")
	v := s.repoJSON(owner, name)
	v["private"] = rp.Private
	v["visibility"] = map[bool]string{true: "private", false: "public"}[rp.Private]
	v["default_branch"] = rp.DefaultBranch
	v["clone_url"] = rp.CloneURL
	v["ssh_url"] = "git@github.com:" + rp.FullName + ".git"
	v["git_url"] = "git://github.com/" + rp.FullName + ".git"
	v["hooks_url"] = s.URL() + "repos/" + rp.FullName + "/hooks"
	v["permissions"] = map[string]bool{"admin": !s.repos.readOnly[tok], "maintain": !s.repos.readOnly[tok], "push": true, "triage": true, "pull": true}
	writeJSON(w, http.StatusOK, v)
}

// listHooks is GET /repos/{owner}/{repo}/hooks (paginated).
func (s *Server) listHooks(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repoOf(w, r)
	if rp == nil || !s.mayAdminHooks(w, r) {
		return
	}
	var mine []*Hook
	for _, h := range s.repos.hooks {
		if strings.EqualFold(h.Repo, rp.FullName) {
			mine = append(mine, h)
		}
	}
	lo, hi := s.paginate(w, r, len(mine))
	out := []map[string]any{}
	for _, h := range mine[lo:hi] {
		out = append(out, s.hookJSON(h))
	}
	writeJSON(w, http.StatusOK, out)
}

// hookBody is a create or edit request's body.
type hookBody struct {
	Name   *string `json:"name"`
	Config *struct {
		URL         *string `json:"url"`
		ContentType *string `json:"content_type"`
		Secret      *string `json:"secret"`
		InsecureSSL any     `json:"insecure_ssl"` // "0"/"1", or a number
	} `json:"config"`
	Events       []string `json:"events"`
	AddEvents    []string `json:"add_events"`
	RemoveEvents []string `json:"remove_events"`
	Active       *bool    `json:"active"`
}

// createHook is POST /repos/{owner}/{repo}/hooks, checked as GitHub does:
// a config with an http(s) url, content_type json or form, known events
// (default push), and no other hook of the repository with the same url
// and an event in common (422 "Hook already exists on this repository").
func (s *Server) createHook(w http.ResponseWriter, r *http.Request) {
	var body hookBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repoOf(w, r)
	if rp == nil || !s.mayAdminHooks(w, r) {
		return
	}
	if body.Name != nil && *body.Name != "web" {
		validationFailed(w, "name", "invalid", fmt.Sprintf("Name %q is not a valid hook name: use web", *body.Name))
		return
	}
	h := &Hook{Repo: rp.FullName, ContentType: "form", InsecureSSL: "0", Events: []string{"push"}, Active: true}
	if body.Config == nil {
		validationFailed(w, "config", "missing_field", "Config is required")
		return
	}
	if body.Events != nil {
		h.Events = body.Events
	}
	if body.Active != nil {
		h.Active = *body.Active
	}
	if !s.applyHook(w, h, body) {
		return
	}
	s.repos.lastHook++
	h.ID = 400_000_000 + s.repos.lastHook
	h.CreatedAt = s.now().UTC().Truncate(time.Second)
	h.UpdatedAt = h.CreatedAt
	s.repos.hooks = append(s.repos.hooks, h)
	writeJSON(w, http.StatusCreated, s.hookJSON(h))
}

// editHook is PATCH /repos/{owner}/{repo}/hooks/{id}: a config given
// replaces the hook's (a secret not given is removed, as on GitHub);
// events replace its events, add_events and remove_events change them.
func (s *Server) editHook(w http.ResponseWriter, r *http.Request) {
	var body hookBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	id, ok := pathID(r, "id")
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repoOf(w, r)
	if rp == nil || !s.mayAdminHooks(w, r) {
		return
	}
	var cur *Hook
	for _, h := range s.repos.hooks {
		if ok && h.ID == id && strings.EqualFold(h.Repo, rp.FullName) {
			cur = h
		}
	}
	if cur == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	next := *cur
	next.Events = slices.Clone(cur.Events)
	if body.Events != nil {
		next.Events = body.Events
	}
	next.Events = append(next.Events, body.AddEvents...)
	next.Events = slices.DeleteFunc(next.Events, func(e string) bool { return slices.Contains(body.RemoveEvents, e) })
	if body.Active != nil {
		next.Active = *body.Active
	}
	if body.Config != nil {
		next.URL, next.ContentType, next.Secret, next.InsecureSSL = "", "form", "", "0"
	}
	if !s.applyHook(w, &next, body) {
		return
	}
	next.UpdatedAt = s.now().UTC().Truncate(time.Second)
	*cur = next
	writeJSON(w, http.StatusOK, s.hookJSON(cur))
}

// applyHook checks a request's config and the hook's events and applies
// the config to h, or answers 422. Called with s.mu held.
func (s *Server) applyHook(w http.ResponseWriter, h *Hook, body hookBody) bool {
	if c := body.Config; c != nil {
		if c.URL == nil || *c.URL == "" {
			validationFailed(w, "config", "custom", "url is missing in config")
			return false
		}
		if u, err := url.Parse(*c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			validationFailed(w, "config", "custom", "url is not a valid URL: "+*c.URL)
			return false
		}
		h.URL = *c.URL
		if c.ContentType != nil {
			if *c.ContentType != "json" && *c.ContentType != "form" {
				validationFailed(w, "config", "custom", fmt.Sprintf("content_type %q is not one of json, form", *c.ContentType))
				return false
			}
			h.ContentType = *c.ContentType
		}
		if c.Secret != nil {
			h.Secret = *c.Secret
		}
		switch v := c.InsecureSSL.(type) {
		case nil:
		case string:
			h.InsecureSSL = v
		case float64:
			h.InsecureSSL = fmt.Sprint(v)
		}
		if h.InsecureSSL != "0" && h.InsecureSSL != "1" {
			validationFailed(w, "config", "custom", "insecure_ssl must be 0 or 1")
			return false
		}
	}
	if len(h.Events) == 0 {
		validationFailed(w, "events", "custom", "Events must not be empty")
		return false
	}
	for _, e := range h.Events {
		if !slices.Contains(hookEvents, e) {
			validationFailed(w, "events", "invalid", fmt.Sprintf("%q is not a valid event name", e))
			return false
		}
	}
	for _, o := range s.repos.hooks {
		if o.ID != h.ID && strings.EqualFold(o.Repo, h.Repo) && o.URL == h.URL && overlap(o.Events, h.Events) {
			validationFailed(w, "", "custom", "Hook already exists on this repository")
			return false
		}
	}
	return true
}

// overlap reports whether two hooks' events have one in common ("*" has
// every event).
func overlap(a, b []string) bool {
	for _, e := range a {
		if e == "*" || slices.Contains(b, e) || slices.Contains(b, "*") {
			return true
		}
	}
	return false
}

// hookJSON is a hook as GitHub's REST API shows it: the secret masked.
// Called with s.mu held.
func (s *Server) hookJSON(h *Hook) map[string]any {
	cfg := map[string]any{"url": h.URL, "content_type": h.ContentType, "insecure_ssl": h.InsecureSSL}
	if h.Secret != "" {
		cfg["secret"] = "********"
	}
	api := fmt.Sprintf("%srepos/%s/hooks/%d", s.URL(), h.Repo, h.ID)
	return map[string]any{
		"type": "Repository", "id": h.ID, "name": "web", "active": h.Active, "events": h.Events, "config": cfg,
		"created_at": timeOrNil(h.CreatedAt), "updated_at": timeOrNil(h.UpdatedAt),
		"url": api, "test_url": api + "/test", "ping_url": api + "/pings", "deliveries_url": api + "/deliveries",
		"last_response": map[string]any{"code": nil, "status": "unused", "message": nil},
	}
}

// validationFailed writes GitHub's 422 with one error.
func validationFailed(w http.ResponseWriter, field, code, message string) {
	e := map[string]any{"resource": "Hook", "code": code, "message": message}
	if field != "" {
		e["field"] = field
	}
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message":           "Validation Failed",
		"errors":            []any{e},
		"documentation_url": "https://docs.github.com/rest/repos/webhooks#create-a-repository-webhook",
		"status":            "422",
	})
}
