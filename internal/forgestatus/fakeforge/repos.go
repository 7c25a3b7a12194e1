package fakeforge

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The fake's repository and its webhooks, as Kiln's onboarding uses them:
//
//	GitLab: GET  /api/v4/projects/{url-escaped path}
//	        GET  /api/v4/projects/{path}/hooks              (page, per_page; X-Next-Page)
//	        POST /api/v4/projects/{path}/hooks              {url, push_events, tag_push_events, merge_requests_events, token, enable_ssl_verification}
//	        PUT  /api/v4/projects/{path}/hooks/{id}         (url required, as on POST)
//	Gitea:  GET    /api/v1/repos/{owner}/{repo}
//	        GET    /api/v1/repos/{owner}/{repo}/hooks       (page, limit)
//	        POST   /api/v1/repos/{owner}/{repo}/hooks       {type, config: {url, content_type, secret}, events, active}
//	        PATCH  /api/v1/repos/{owner}/{repo}/hooks/{id}  (as Gitea: config's url and content_type change, its secret does not)
//	        DELETE /api/v1/repos/{owner}/{repo}/hooks/{id}
//
// Reading the repository needs the fake's token or a read-only one
// (AddReadOnlyToken); its hooks need the fake's token (GitLab: a
// maintainer; Gitea: a repository admin), else 403.

// Hook is a webhook the fake keeps, its secret included (which neither
// forge shows again).
type Hook struct {
	ID  int64
	URL string
	// Secret is GitLab's token, Gitea's config.secret.
	Secret string
	// GitLab's triggers.
	PushEvents, TagPushEvents, MergeRequestsEvents, EnableSSLVerification bool
	// Gitea's type, content type and events.
	Type, ContentType string
	Events            []string
	Active            bool
}

// repoState is the fake's one repository's description and hooks; its
// zero value is the defaults. Guarded by Server.mu.
type repoState struct {
	cloneURL, defaultBranch string
	readOnly                map[string]bool
	hooks                   []*Hook
	lastHook                int64
}

// SetRepository sets what the fake's repository says of itself: its
// clone URL (default URL()/REPO.git) and default branch (default main).
func (s *Server) SetRepository(cloneURL, defaultBranch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos.cloneURL, s.repos.defaultBranch = cloneURL, defaultBranch
}

// AddReadOnlyToken accepts token for reading the repository, not for its
// hooks (GitLab: a developer, not a maintainer; Gitea: no admin right).
func (s *Server) AddReadOnlyToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repos.readOnly == nil {
		s.repos.readOnly = map[string]bool{}
	}
	s.repos.readOnly[token] = true
}

// Hooks returns the repository's webhooks, oldest first.
func (s *Server) Hooks() []Hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Hook
	for _, h := range s.repos.hooks {
		c := *h
		c.Events = slices.Clone(h.Events)
		out = append(out, c)
	}
	return out
}

// routeRepos adds the repository's routes for the fake's kind.
func (s *Server) routeRepos(mux *http.ServeMux) {
	switch s.Kind {
	case GitLab:
		mux.HandleFunc("GET /api/v4/projects/{id}", s.repoHandler(false, s.gitlabProject))
		mux.HandleFunc("GET /api/v4/projects/{id}/hooks", s.repoHandler(true, s.listHooks))
		mux.HandleFunc("POST /api/v4/projects/{id}/hooks", s.repoHandler(true, s.gitlabSaveHook))
		mux.HandleFunc("PUT /api/v4/projects/{id}/hooks/{hook}", s.repoHandler(true, s.gitlabSaveHook))
	case Gitea:
		mux.HandleFunc("GET /api/v1/repos/{owner}/{repo}", s.repoHandler(false, s.giteaRepo))
		mux.HandleFunc("GET /api/v1/repos/{owner}/{repo}/hooks", s.repoHandler(true, s.listHooks))
		mux.HandleFunc("POST /api/v1/repos/{owner}/{repo}/hooks", s.repoHandler(true, s.giteaCreateHook))
		mux.HandleFunc("PATCH /api/v1/repos/{owner}/{repo}/hooks/{hook}", s.repoHandler(true, s.giteaEditHook))
		mux.HandleFunc("DELETE /api/v1/repos/{owner}/{repo}/hooks/{hook}", s.repoHandler(true, s.giteaDeleteHook))
	}
}

// repoHandler counts the call, checks the token (401), the repository
// (404: GitLab and Gitea answer so for one the token may not see) and,
// for hooks, the token's rights (403), then runs h with s.mu held.
func (s *Server) repoHandler(hooks bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.calls++
		repo, tok := s.requestRepo(r)
		switch {
		case tok == "" || (tok != s.token && !s.repos.readOnly[tok]):
			writeError(w, http.StatusUnauthorized, "401 Unauthorized")
		case repo != s.repo:
			writeError(w, http.StatusNotFound, "404 Project Not Found")
		case hooks && tok != s.token:
			writeError(w, http.StatusForbidden, "403 Forbidden")
		default:
			h(w, r)
		}
	}
}

// requestRepo is the repository a request's path names, and its token.
func (s *Server) requestRepo(r *http.Request) (repo, tok string) {
	switch s.Kind {
	case GitLab:
		// The project's path arrives escaped ("group%2Fname").
		id := strings.TrimPrefix(r.URL.EscapedPath(), "/api/v4/projects/")
		id, _, _ = strings.Cut(id, "/")
		repo, _ = url.PathUnescape(id)
		tok = r.Header.Get("PRIVATE-TOKEN")
	case Gitea:
		repo = r.PathValue("owner") + "/" + r.PathValue("repo")
		if scheme, t, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "token") {
			tok = t
		}
	}
	return repo, tok
}

func (s *Server) cloneURL() string {
	if s.repos.cloneURL != "" {
		return s.repos.cloneURL
	}
	return s.ts.URL + "/" + s.repo + ".git"
}

func (s *Server) defaultBranch() string {
	if s.repos.defaultBranch != "" {
		return s.repos.defaultBranch
	}
	return "main"
}

func (s *Server) gitlabProject(w http.ResponseWriter, r *http.Request) {
	_, tok := s.requestRepo(r)
	level := 40 // maintainer
	if tok != s.token {
		level = 30 // developer
	}
	name := s.repo[strings.LastIndex(s.repo, "/")+1:]
	writeJSONStatus(w, http.StatusOK, map[string]any{
		"id": 4242, "name": name, "path": name, "path_with_namespace": s.repo,
		"default_branch": s.defaultBranch(), "http_url_to_repo": s.cloneURL(),
		"ssh_url_to_repo": "git@gitlab.example.com:" + s.repo + ".git", "web_url": s.ts.URL + "/" + s.repo,
		"permissions": map[string]any{"project_access": map[string]int{"access_level": level}, "group_access": nil},
	})
}

func (s *Server) giteaRepo(w http.ResponseWriter, r *http.Request) {
	_, tok := s.requestRepo(r)
	owner, name, _ := strings.Cut(s.repo, "/")
	writeJSONStatus(w, http.StatusOK, map[string]any{
		"id": 4242, "name": name, "full_name": s.repo, "owner": map[string]any{"login": owner},
		"default_branch": s.defaultBranch(), "clone_url": s.cloneURL(), "empty": false,
		"ssh_url": "git@gitea.example.com:" + s.repo + ".git", "html_url": s.ts.URL + "/" + s.repo,
		"permissions": map[string]bool{"admin": tok == s.token, "push": true, "pull": true},
	})
}

// listHooks answers a page of hooks: GitLab's page/per_page (default 20,
// at most 100) with X-Next-Page, Gitea's page/limit (default and at most
// 50) with X-Total-Count.
func (s *Server) listHooks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	page = max(page, 1)
	per, limit := 20, 100
	perKey := "per_page"
	if s.Kind == Gitea {
		per, limit, perKey = 50, 50, "limit"
	}
	if n, err := strconv.Atoi(q.Get(perKey)); err == nil && n > 0 {
		per = min(n, limit)
	}
	lo, hi := min((page-1)*per, len(s.repos.hooks)), min(page*per, len(s.repos.hooks))
	out := []map[string]any{}
	for _, h := range s.repos.hooks[lo:hi] {
		out = append(out, s.hookJSON(h))
	}
	if s.Kind == GitLab {
		next := ""
		if hi < len(s.repos.hooks) {
			next = strconv.Itoa(page + 1)
		}
		w.Header().Set("X-Page", strconv.Itoa(page))
		w.Header().Set("X-Next-Page", next)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(s.repos.hooks)))
	writeJSONStatus(w, http.StatusOK, out)
}

// hookJSON is a hook as the forge shows it, without its secret.
func (s *Server) hookJSON(h *Hook) map[string]any {
	if s.Kind == GitLab {
		return map[string]any{"id": h.ID, "url": h.URL, "project_id": 4242, "push_events": h.PushEvents,
			"tag_push_events": h.TagPushEvents, "merge_requests_events": h.MergeRequestsEvents,
			"enable_ssl_verification": h.EnableSSLVerification, "issues_events": false, "note_events": false}
	}
	return map[string]any{"id": h.ID, "type": h.Type, "active": h.Active, "events": h.Events,
		"config": map[string]string{"url": h.URL, "content_type": h.ContentType, "http_method": "post"}}
}

// hookByPath is the hook the path's {hook} names, or nil after a 404.
func (s *Server) hookByPath(w http.ResponseWriter, r *http.Request) *Hook {
	id, err := strconv.ParseInt(r.PathValue("hook"), 10, 64)
	for _, h := range s.repos.hooks {
		if err == nil && h.ID == id {
			return h
		}
	}
	writeError(w, http.StatusNotFound, "404 Not found")
	return nil
}

// gitlabSaveHook is GitLab's POST (create) and PUT (edit) of a project
// hook: url is required on both (400 "url is missing"), must be http(s)
// (422); push_events defaults to true, the other triggers to false,
// enable_ssl_verification to true. A PUT without token keeps the token.
func (s *Server) gitlabSaveHook(w http.ResponseWriter, r *http.Request) {
	var body struct {
		URL                   *string `json:"url"`
		Token                 *string `json:"token"`
		PushEvents            *bool   `json:"push_events"`
		TagPushEvents         *bool   `json:"tag_push_events"`
		MergeRequestsEvents   *bool   `json:"merge_requests_events"`
		EnableSSLVerification *bool   `json:"enable_ssl_verification"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	h := &Hook{PushEvents: true, EnableSSLVerification: true}
	status := http.StatusCreated
	if r.Method == http.MethodPut {
		cur := s.hookByPath(w, r)
		if cur == nil {
			return
		}
		h, status = cur, http.StatusOK
	}
	if body.URL == nil || *body.URL == "" {
		writeJSONStatus(w, http.StatusBadRequest, map[string]string{"error": "url is missing"})
		return
	}
	if u, err := url.Parse(*body.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		writeJSONStatus(w, http.StatusUnprocessableEntity, map[string]any{"message": map[string][]string{"url": {"is blocked: Only allowed schemes are http, https"}}})
		return
	}
	next := *h
	next.URL = *body.URL
	set := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	set(&next.PushEvents, body.PushEvents)
	set(&next.TagPushEvents, body.TagPushEvents)
	set(&next.MergeRequestsEvents, body.MergeRequestsEvents)
	set(&next.EnableSSLVerification, body.EnableSSLVerification)
	if body.Token != nil {
		next.Secret = *body.Token
	}
	if status == http.StatusCreated {
		s.repos.lastHook++
		next.ID = s.repos.lastHook
		s.repos.hooks = append(s.repos.hooks, &next)
		h = &next
	} else {
		*h = next
	}
	writeJSONStatus(w, status, s.hookJSON(h))
}

// giteaHookBody is Gitea's CreateHookOption / EditHookOption.
type giteaHookBody struct {
	Type   string            `json:"type"`
	Config map[string]string `json:"config"`
	Events []string          `json:"events"`
	Active *bool             `json:"active"`
}

// giteaEvents are the hook events Gitea knows ("pull_request" stands for
// all of a request's events); others are ignored, as Gitea ignores them.
var giteaEvents = []string{"create", "delete", "fork", "push", "issues", "issue_comment", "pull_request",
	"pull_request_sync", "pull_request_review", "wiki", "repository", "release", "package", "status", "workflow_job"}

func giteaKnown(events []string) []string {
	if len(events) == 0 {
		return []string{"push"}
	}
	var out []string
	for _, e := range events {
		if slices.Contains(giteaEvents, e) && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// giteaCreateHook checks a hook as Gitea's checkCreateHookOption does (a
// known type; config's url and content_type present; content_type json
// or form: 422 otherwise). active defaults to false, as in Gitea.
func (s *Server) giteaCreateHook(w http.ResponseWriter, r *http.Request) {
	var body giteaHookBody
	if !decodeJSON(w, r, &body) {
		return
	}
	if body.Type != "gitea" && body.Type != "forgejo" && body.Type != "gogs" && body.Type != "slack" {
		writeError(w, http.StatusUnprocessableEntity, "Invalid hook type: "+body.Type)
		return
	}
	for _, k := range []string{"url", "content_type"} {
		if _, ok := body.Config[k]; !ok {
			writeError(w, http.StatusUnprocessableEntity, "Missing config option: "+k)
			return
		}
	}
	if ct := body.Config["content_type"]; ct != "json" && ct != "form" {
		writeError(w, http.StatusUnprocessableEntity, "Invalid content type")
		return
	}
	s.repos.lastHook++
	h := &Hook{ID: s.repos.lastHook, Type: body.Type, URL: body.Config["url"], ContentType: body.Config["content_type"],
		Secret: body.Config["secret"], Events: giteaKnown(body.Events), Active: body.Active != nil && *body.Active}
	s.repos.hooks = append(s.repos.hooks, h)
	writeJSONStatus(w, http.StatusCreated, s.hookJSON(h))
}

// giteaEditHook edits as Gitea's editHook does: config's url and
// content_type change (not its secret: Gitea keeps the one it was created
// with), events are replaced (none: push), active changes when given.
func (s *Server) giteaEditHook(w http.ResponseWriter, r *http.Request) {
	var body giteaHookBody
	if !decodeJSON(w, r, &body) {
		return
	}
	h := s.hookByPath(w, r)
	if h == nil {
		return
	}
	next := *h
	if body.Config != nil {
		if u, ok := body.Config["url"]; ok {
			next.URL = u
		}
		if ct, ok := body.Config["content_type"]; ok {
			if ct != "json" && ct != "form" {
				writeError(w, http.StatusUnprocessableEntity, "Invalid content type")
				return
			}
			next.ContentType = ct
		}
	}
	next.Events = giteaKnown(body.Events)
	if body.Active != nil {
		next.Active = *body.Active
	}
	*h = next
	writeJSONStatus(w, http.StatusOK, s.hookJSON(h))
}

func (s *Server) giteaDeleteHook(w http.ResponseWriter, r *http.Request) {
	h := s.hookByPath(w, r)
	if h == nil {
		return
	}
	s.repos.hooks = slices.DeleteFunc(s.repos.hooks, func(o *Hook) bool { return o == h })
	w.WriteHeader(http.StatusNoContent)
}

// decodeJSON reads a JSON body, or answers 400.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusBadRequest, "content type "+ct+": want application/json")
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
		return false
	}
	return true
}

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
