package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/store"
)

var (
	projectName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// ProjectRequest creates or updates a project. On update, nil fields are kept.
type ProjectRequest struct {
	Name             string  `json:"name,omitempty"`
	CloneURL         *string `json:"clone_url,omitempty"`
	DefaultBranch    *string `json:"default_branch,omitempty"`
	WebhookSecret    *string `json:"webhook_secret,omitempty"`
	CancelSuperseded *bool   `json:"cancel_superseded,omitempty"`
	// ForkPullRequests: approve (a fork's request waits for an admin),
	// run, or off. DraftPullRequests: build, or wait (until ready).
	ForkPullRequests  *string `json:"fork_pull_requests,omitempty"`
	DraftPullRequests *string `json:"draft_pull_requests,omitempty"`
	// Badge: who sees the project's status badge (/badge/NAME.svg):
	// private (the default: those who may view the project) or public
	// (anyone, for a README).
	Badge *string `json:"badge,omitempty"`
	// Log retention: days to keep a finished build's logs, and bytes of
	// logs the project keeps (oldest builds' pruned first). 0: no limit;
	// -1: back to the server's default.
	LogRetentionDays *int   `json:"log_retention_days,omitempty"`
	LogMaxBytes      *int64 `json:"log_max_bytes,omitempty"`
	// Scheduling: the most jobs the project runs at once (0: no cap; -1:
	// back to the server's default, -project-max-running) and its weight
	// in the fair share across projects (1 to 100; 1 is the default).
	MaxRunning *int `json:"max_running,omitempty"`
	Weight     *int `json:"weight,omitempty"`
	// The forge commit statuses go to: github, gitlab or gitea ("" removes
	// the connection); the repository (GitHub, Gitea: owner/name; GitLab:
	// its path, group/name); the API's base URL (github: GitHub's public
	// API by default; required for gitlab and gitea); an API token that
	// may set commit statuses (stored sealed, never shown), or on GitHub
	// the installation id of the server's GitHub App (-github-app-id) on
	// the repository instead of a token (0 removes it).
	Forge               *string `json:"forge,omitempty"`
	ForgeRepo           *string `json:"forge_repo,omitempty"`
	ForgeURL            *string `json:"forge_url,omitempty"`
	ForgeToken          *string `json:"forge_token,omitempty"`
	ForgeInstallationID *int64  `json:"forge_installation_id,omitempty"`
	// ForgeWebhook onboards the repository through the forge connection,
	// before anything is stored: the forge's API is asked for the
	// repository (its clone URL and default branch fill in clone_url and
	// default_branch when they are not given), a webhook secret is made
	// when the project has none, and Kiln's webhook is created on the
	// repository (or updated: the one whose URL is PUBLIC_URL/hooks/FORGE/NAME)
	// for pushes, tags and pull or merge requests. A forge's refusal
	// stores nothing. Needs the server's -public-url.
	ForgeWebhook bool `json:"forge_webhook,omitempty"`
}

// DefaultGitHubAPI is the API base URL of a github connection without one.
const DefaultGitHubAPI = "https://api.github.com"

var forgeRepo = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$`)

// dotSegment reports whether a repository path has a "." or ".." segment
// (which would move a request to another API path).
func dotSegment(repo string) bool {
	for _, seg := range strings.Split(repo, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// forgeConnection applies a request's forge fields to cur (nil: none);
// app says whether the server has a GitHub App (for an installation).
func forgeConnection(cur *store.ForgeConnection, req ProjectRequest, app bool) (*store.ForgeConnection, error) {
	if req.Forge == nil && req.ForgeRepo == nil && req.ForgeURL == nil && req.ForgeToken == nil && req.ForgeInstallationID == nil {
		return cur, nil
	}
	if req.Forge != nil && *req.Forge == "" {
		return nil, nil
	}
	c := store.ForgeConnection{}
	if cur != nil {
		c = *cur
	}
	if req.Forge != nil {
		if c.Forge != *req.Forge && req.ForgeURL == nil {
			c.APIURL = "" // another forge's URL does not carry over
		}
		c.Forge = *req.Forge
	}
	if req.ForgeRepo != nil {
		c.Repo = *req.ForgeRepo
	}
	if req.ForgeURL != nil {
		c.APIURL = strings.TrimRight(*req.ForgeURL, "/")
	}
	if req.ForgeToken != nil {
		c.Token = *req.ForgeToken
		if req.ForgeInstallationID == nil && c.Token != "" {
			c.InstallationID = 0 // a token replaces an installation
		}
	}
	if req.ForgeInstallationID != nil {
		c.InstallationID = *req.ForgeInstallationID
		if req.ForgeToken == nil && c.InstallationID != 0 {
			c.Token = "" // an installation replaces a token
		}
	}
	switch c.Forge {
	case store.ForgeGitHub:
		if c.APIURL == "" {
			c.APIURL = DefaultGitHubAPI
		}
	case store.ForgeGitLab, store.ForgeGitea:
		if c.APIURL == "" {
			return nil, fmt.Errorf("forge_url: required for %s (its API's base URL, e.g. https://gitlab.example.com)", c.Forge)
		}
	case "":
		return nil, errors.New("forge: required with forge_repo, forge_url or forge_token: github, gitlab or gitea")
	default:
		return nil, fmt.Errorf("forge: %q: want github, gitlab or gitea", c.Forge)
	}
	if !forgeRepo.MatchString(c.Repo) || (c.Forge != store.ForgeGitLab && strings.Count(c.Repo, "/") != 1) || dotSegment(c.Repo) {
		return nil, fmt.Errorf("forge_repo: %q: want owner/name (GitLab: group/name, subgroups allowed)", c.Repo)
	}
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil || strings.ContainsAny(c.APIURL, "?#") {
		return nil, fmt.Errorf("forge_url: %q: want an http or https URL without credentials, query or fragment", c.APIURL)
	}
	switch {
	case c.InstallationID < 0:
		return nil, fmt.Errorf("forge_installation_id: %d: want the GitHub App installation's id", c.InstallationID)
	case c.InstallationID != 0 && c.Forge != store.ForgeGitHub:
		return nil, fmt.Errorf("forge_installation_id: only a github connection has a GitHub App installation, not %s", c.Forge)
	case c.InstallationID != 0 && c.Token != "":
		return nil, errors.New("forge_token, forge_installation_id: set one: a token or the GitHub App's installation")
	case c.InstallationID != 0 && !app:
		return nil, errors.New("forge_installation_id: this server has no GitHub App (start it with -github-app-id and -github-app-key)")
	case c.InstallationID == 0 && c.Token == "":
		return nil, errors.New("forge_token: required: a token that may set commit statuses (on GitHub, or forge_installation_id)")
	}
	return &c, nil
}

// ProjectView is a project as the API shows it: the webhook secret is never
// shown, only whether one is set.
type ProjectView struct {
	*store.Project
	HasWebhookSecret bool     `json:"has_webhook_secret"`
	WebhookPaths     []string `json:"webhook_paths"`
	// The project's own log retention; null fields: the server's default.
	store.LogRetention
	// Its scheduling: max_running null is the server's default.
	store.Scheduling
	// Where its commit statuses go (the token is never shown).
	Forge         *store.ForgeConnection `json:"forge,omitempty"`
	HasForgeToken bool                   `json:"has_forge_token"`
	// Webhook is the webhook a forge_webhook request made sure of.
	Webhook *WebhookView `json:"webhook,omitempty"`
}

// view is what the API shows of a project: never its secrets, and its
// clone URL without the password or token a URL may carry (the view of a
// copy: the caller's row keeps its credentials).
func view(p *store.Project) ProjectView {
	shown := *p
	shown.CloneURL = gitmirror.Redact(p.CloneURL)
	p = &shown
	return ProjectView{Project: p, HasWebhookSecret: p.WebhookSecret != "", Scheduling: store.SchedulingOf(nil, p.ID),
		WebhookPaths: []string{"/hooks/github/" + p.Name, "/hooks/gitlab/" + p.Name, "/hooks/gitea/" + p.Name}}
}

func (v *ProjectView) setForge(c *store.ForgeConnection) {
	v.Forge, v.HasForgeToken = c, c != nil && c.Token != ""
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	ps, err := s.store.ListProjects(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	ret, err := s.store.LogRetentions(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	sched, err := s.store.Schedulings(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]ProjectView, 0, len(ps))
	for _, p := range ps {
		if !canView(r, p.Name) {
			continue
		}
		v := view(p)
		v.LogRetention = ret[p.ID]
		v.Scheduling = store.SchedulingOf(sched, p.ID)
		fc, err := s.store.ProjectForge(r.Context(), p.ID)
		if err != nil {
			s.storeError(w, err)
			return
		}
		v.setForge(fc)
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	var req ProjectRequest
	if !decode(w, r, &req) {
		return
	}
	p := &store.Project{Name: req.Name, DefaultBranch: "main"}
	if err := s.apply(p, req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if !projectName.MatchString(p.Name) {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("name %q: want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63", p.Name))
		return
	}
	if p.CloneURL == "" && !req.ForgeWebhook {
		writeError(w, http.StatusBadRequest, "invalid", "clone_url: required (or forge_webhook, to take it from the forge)")
		return
	}
	ret, err := logRetention(store.LogRetention{}, req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	fc, err := forgeConnection(nil, req, s.cfg.GitHubApp)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	sched, err := scheduling(store.SchedulingOf(nil, 0), req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	var hook *WebhookView
	if req.ForgeWebhook {
		s.onboarding.Lock()
		defer s.onboarding.Unlock()
		// A taken name is refused before the forge is asked.
		if _, err := s.store.ProjectByName(r.Context(), p.Name); err == nil {
			s.storeError(w, fmt.Errorf("project %q: %w", p.Name, store.ErrConflict))
			return
		} else if !errors.Is(err, store.ErrNotFound) {
			s.storeError(w, err)
			return
		}
		if hook, err = s.onboard(r.Context(), p, fc, req.CloneURL == nil, req.DefaultBranch == nil); err != nil {
			s.writeRequestError(w, err)
			return
		}
	}
	if err := s.store.CreateProject(r.Context(), p); err != nil {
		s.storeError(w, err)
		return
	}
	if err := s.store.SetLogRetention(r.Context(), p.ID, ret); err != nil {
		s.storeError(w, err)
		return
	}
	if err := s.store.SetProjectForge(r.Context(), p.ID, fc); err != nil {
		s.storeError(w, err)
		return
	}
	if err := s.store.SetScheduling(r.Context(), p.ID, sched); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "project.create", "project:"+p.Name, projectChanges(req, hook))
	v := view(p)
	v.LogRetention, v.Scheduling = ret, sched
	v.setForge(fc)
	v.Webhook = hook
	writeJSON(w, http.StatusCreated, v)
}

// logRetention applies a request's log retention fields to cur.
func logRetention(cur store.LogRetention, req ProjectRequest) (store.LogRetention, error) {
	var err error
	if cur.Days, err = overridable("log_retention_days", req.LogRetentionDays, cur.Days, "0 (keep forever), a number of days"); err != nil {
		return cur, err
	}
	cur.MaxBytes, err = overridable("log_max_bytes", req.LogMaxBytes, cur.MaxBytes, "0 (no limit), a number of bytes")
	return cur, err
}

// overridable applies a request's value v of a setting that a project
// may set for itself or leave to the server: nil keeps cur, -1 goes back
// to the server's default (nil), any other negative is refused, naming
// what is wanted.
func overridable[T int | int64](field string, v, cur *T, want string) (*T, error) {
	switch {
	case v == nil:
		return cur, nil
	case *v == -1:
		return nil, nil
	case *v < 0:
		return cur, fmt.Errorf("%s: %d: want %s, or -1 (the server's default)", field, *v, want)
	}
	return v, nil
}

// maxWeight bounds a project's weight: enough for any sensible share,
// small enough that running*weight never overflows.
const maxWeight = 100

// scheduling applies a request's scheduling fields to cur.
func scheduling(cur store.Scheduling, req ProjectRequest) (store.Scheduling, error) {
	var err error
	if cur.MaxRunning, err = overridable("max_running", req.MaxRunning, cur.MaxRunning, "0 (no cap), a number of jobs"); err != nil {
		return cur, err
	}
	if w := req.Weight; w != nil {
		if *w < 1 || *w > maxWeight {
			return cur, fmt.Errorf("weight: %d: want 1 to %d (1 is the default)", *w, maxWeight)
		}
		cur.Weight = *w
	}
	return cur, nil
}

// schedulingOf returns a project's scheduling.
func (s *Server) schedulingOf(r *http.Request, p *store.Project) (store.Scheduling, error) {
	all, err := s.store.Schedulings(r.Context())
	return store.SchedulingOf(all, p.ID), err
}

// retentionOf returns a project's own log retention.
func (s *Server) retentionOf(r *http.Request, p *store.Project) (store.LogRetention, error) {
	ret, err := s.store.LogRetentions(r.Context())
	return ret[p.ID], err
}

func (s *Server) apply(p *store.Project, req ProjectRequest) error {
	if req.CloneURL != nil {
		if *req.CloneURL == "" {
			return errors.New("clone_url: must not be empty")
		}
		// Refused here, and again by the mirror before any fetch.
		if err := gitmirror.CheckURL(*req.CloneURL, s.cfg.AllowFileRemotes); err != nil {
			return fmt.Errorf("clone_url: %w", err)
		}
		p.CloneURL = *req.CloneURL
	}
	if req.DefaultBranch != nil {
		if *req.DefaultBranch == "" {
			return errors.New("default_branch: must not be empty")
		}
		p.DefaultBranch = *req.DefaultBranch
	}
	if req.WebhookSecret != nil {
		if n := len(*req.WebhookSecret); n > 0 && n < 16 {
			return errors.New("webhook_secret: at least 16 characters")
		}
		p.WebhookSecret = *req.WebhookSecret
	}
	if req.CancelSuperseded != nil {
		p.CancelSuperseded = *req.CancelSuperseded
	}
	if v := req.ForkPullRequests; v != nil {
		if *v != store.ForkApprove && *v != store.ForkRun && *v != store.ForkOff {
			return fmt.Errorf("fork_pull_requests: %q: want approve, run or off", *v)
		}
		p.ForkPullRequests = *v
	}
	if v := req.Badge; v != nil {
		if *v != store.BadgePrivate && *v != store.BadgePublic {
			return fmt.Errorf("badge: %q: want private or public", *v)
		}
		p.Badge = *v
	}
	if v := req.DraftPullRequests; v != nil {
		if *v != store.DraftBuild && *v != store.DraftWait {
			return fmt.Errorf("draft_pull_requests: %q: want build or wait", *v)
		}
		p.DraftPullRequests = *v
	}
	return nil
}

func (s *Server) project(w http.ResponseWriter, r *http.Request) (*store.Project, bool) {
	p, err := s.store.ProjectByName(r.Context(), r.PathValue("project"))
	if err != nil {
		s.storeError(w, fmt.Errorf("project %q: %w", r.PathValue("project"), err))
		return nil, false
	}
	return p, true
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.project(w, r); ok {
		ret, err := s.retentionOf(r, p)
		if err != nil {
			s.storeError(w, err)
			return
		}
		fc, err := s.store.ProjectForge(r.Context(), p.ID)
		if err != nil {
			s.storeError(w, err)
			return
		}
		sched, err := s.schedulingOf(r, p)
		if err != nil {
			s.storeError(w, err)
			return
		}
		v := view(p)
		v.LogRetention, v.Scheduling = ret, sched
		v.setForge(fc)
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) updateProject(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	var req ProjectRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name != "" && req.Name != p.Name {
		writeError(w, http.StatusBadRequest, "invalid", "name: a project cannot be renamed")
		return
	}
	if err := s.apply(p, req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	cur, err := s.retentionOf(r, p)
	if err != nil {
		s.storeError(w, err)
		return
	}
	ret, err := logRetention(cur, req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	curForge, err := s.store.ProjectForge(r.Context(), p.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	fc, err := forgeConnection(curForge, req, s.cfg.GitHubApp)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	curSched, err := s.schedulingOf(r, p)
	if err != nil {
		s.storeError(w, err)
		return
	}
	sched, err := scheduling(curSched, req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	var hook *WebhookView
	if req.ForgeWebhook {
		s.onboarding.Lock()
		defer s.onboarding.Unlock()
		if hook, err = s.onboard(r.Context(), p, fc, false, false); err != nil {
			s.writeRequestError(w, err)
			return
		}
	}
	if err := s.store.UpdateProject(r.Context(), p); err != nil {
		s.storeError(w, err)
		return
	}
	if err := s.store.SetLogRetention(r.Context(), p.ID, ret); err != nil {
		s.storeError(w, err)
		return
	}
	if err := s.store.SetProjectForge(r.Context(), p.ID, fc); err != nil {
		s.storeError(w, err)
		return
	}
	if err := s.store.SetScheduling(r.Context(), p.ID, sched); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "project.update", "project:"+p.Name, projectChanges(req, hook))
	v := view(p)
	v.LogRetention, v.Scheduling = ret, sched
	v.setForge(fc)
	v.Webhook = hook
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	// Archived logs go after the project: a failed delete leaves a blob
	// over, never a build whose archive is gone.
	var archived []int64
	if s.cfg.LogArchive != nil {
		var err error
		if archived, err = s.store.ArchivedBuilds(r.Context(), p.ID); err != nil {
			s.storeError(w, err)
			return
		}
	}
	// Artifacts likewise: their records go with the project, their
	// blobs after it.
	var artifacts []store.Artifact
	if s.cfg.Artifacts != nil {
		var err error
		if artifacts, err = s.store.ProjectArtifacts(r.Context(), p.ID); err != nil {
			s.storeError(w, err)
			return
		}
	}
	if err := s.store.DeleteProject(r.Context(), p.ID); err != nil {
		s.storeError(w, err)
		return
	}
	for _, a := range artifacts {
		if err := s.cfg.Artifacts.Delete(r.Context(), a.Blob); err != nil {
			s.log.Warn("project deleted: an artifact's blob was not", "project", p.Name, "blob", a.Blob, "err", err)
		}
	}
	for _, id := range archived {
		if err := s.cfg.LogArchive.Delete(r.Context(), id); err != nil {
			s.log.Warn("project deleted: its archived logs were not", "project", p.Name, "build", id, "err", err)
		}
	}
	s.record(r, "project.delete", "project:"+p.Name, nil)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	secrets, err := s.store.Secrets(r.Context(), p.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	names := []string{}
	for _, sec := range secrets {
		names = append(names, sec.Name)
	}
	writeJSON(w, http.StatusOK, map[string][]string{"names": names})
}

func (s *Server) setSecret(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if !envName.MatchString(name) || len(name) >= 5 && name[:5] == "KILN_" {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("secret name %q: want an environment variable name ([A-Za-z_][A-Za-z0-9_]*), not starting with KILN_", name))
		return
	}
	var req struct {
		Value string `json:"value"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Value == "" {
		writeError(w, http.StatusBadRequest, "invalid", "value: required")
		return
	}
	if err := s.store.SetSecret(r.Context(), p.ID, name, req.Value); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "secret.set", secretTarget(p.Name, name), nil)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	if err := s.store.DeleteSecret(r.Context(), p.ID, r.PathValue("name")); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "secret.delete", secretTarget(p.Name, r.PathValue("name")), nil)
	w.WriteHeader(http.StatusNoContent)
}

// secretTarget is a project's secret as the audit log names it (the name
// only: a secret's value is never logged).
func secretTarget(project, name string) string { return "secret:" + project + "/" + name }

// withoutCredentials is a clone URL with its user and password (which
// may be a token) replaced by "REDACTED".
func withoutCredentials(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// projectChanges is a project request as the audit log records it: the
// fields it set, with the sealed ones (the webhook secret, the forge
// token) only "set" or "removed", and the webhook an onboarding made
// sure of.
func projectChanges(req ProjectRequest, hook *WebhookView) map[string]any {
	d := map[string]any{}
	sealed := func(key string, v *string) {
		if v != nil {
			d[key] = "set"
			if *v == "" {
				d[key] = "removed"
			}
		}
	}
	plain := func(key string, set bool, v any) {
		if set {
			d[key] = v
		}
	}
	if req.CloneURL != nil {
		d["clone_url"] = withoutCredentials(*req.CloneURL)
	}
	plain("default_branch", req.DefaultBranch != nil, req.DefaultBranch)
	sealed("webhook_secret", req.WebhookSecret)
	plain("cancel_superseded", req.CancelSuperseded != nil, req.CancelSuperseded)
	plain("fork_pull_requests", req.ForkPullRequests != nil, req.ForkPullRequests)
	plain("draft_pull_requests", req.DraftPullRequests != nil, req.DraftPullRequests)
	plain("badge", req.Badge != nil, req.Badge)
	plain("log_retention_days", req.LogRetentionDays != nil, req.LogRetentionDays)
	plain("log_max_bytes", req.LogMaxBytes != nil, req.LogMaxBytes)
	plain("max_running", req.MaxRunning != nil, req.MaxRunning)
	plain("weight", req.Weight != nil, req.Weight)
	plain("forge", req.Forge != nil, req.Forge)
	plain("forge_repo", req.ForgeRepo != nil, req.ForgeRepo)
	plain("forge_url", req.ForgeURL != nil, req.ForgeURL)
	sealed("forge_token", req.ForgeToken)
	plain("forge_installation_id", req.ForgeInstallationID != nil, req.ForgeInstallationID)
	if hook != nil {
		// Onboarding: Kiln's webhook on the forge (its secret is sealed).
		d["forge_webhook"] = hook
	}
	return d
}
