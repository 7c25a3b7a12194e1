package api

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/web"
)

// The web dashboard (docs/dashboard.md): pages rendered on the server
// from the API's view types by internal/web, for the principal of the
// session cookie (a user signed in through single sign-on, or a browser
// signed in with an admin token). Who may see and do what is the API's
// policy, the same as for its JSON routes: the pages show buttons for
// what the principal may do, and the buttons call the JSON API.

// BuildPagePath is the path of a build's page: where the statuses and
// checks Kiln sends to a forge link to (PublicURL + BuildPagePath(id)).
func BuildPagePath(id int64) string { return "/builds/" + strconv.FormatInt(id, 10) }

// loginCSRFCookie carries the sign-in form's CSRF token (double submit):
// a page elsewhere cannot sign a browser in with its own token.
const loginCSRFCookie = "kiln_login_csrf"

func (s *Server) dashboardRoutes() {
	s.pages = web.New()
	s.mux.Handle("GET /static/", web.Static())
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.tokenSignIn)
	s.mux.HandleFunc("POST /logout", s.signOut)
	s.mux.HandleFunc("GET /{$}", s.page(s.projectsPage))
	s.mux.HandleFunc("GET /builds", s.page(s.buildsPage))
	s.mux.HandleFunc("GET /builds/{id}", s.page(s.buildPage))
	s.mux.HandleFunc("GET /agents", s.page(s.agentsPage))
	s.mux.HandleFunc("GET /projects/{project}/caches", s.page(s.cachesPage))
	s.mux.HandleFunc("GET /insights", s.page(s.insightsPage))
	s.mux.HandleFunc("GET /projects/{project}/settings", s.page(s.settingsPage))
	s.mux.HandleFunc("GET /tokens", s.page(s.tokensPage))
}

// pageFunc renders one page for p, or says why not (a *pageError).
type pageFunc func(w http.ResponseWriter, r *http.Request, p *principal) (web.Page, error)

// pageError is a page refused or missing: its status and what to say.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return e.msg }

// page authenticates a page's request: a browser without a session goes
// to the sign-in page, and comes back after it.
func (s *Server) page(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, refused, err := s.identify(r)
		if err != nil {
			s.pageFailed(w, err)
			return
		}
		if refused != nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		pg, err := f(w, r.WithContext(withPrincipal(r.Context(), p)), p)
		if err != nil {
			s.pageFailed(w, err)
			return
		}
		if pg.Name == "" { // the page answered itself (a partial)
			return
		}
		pg.Who, pg.CSRF, pg.Admin = whoLabel(p), p.csrf(), p.authz.GlobalAdmin
		s.pages.Render(w, http.StatusOK, pg)
	}
}

func (s *Server) pageFailed(w http.ResponseWriter, err error) {
	var pe *pageError
	switch {
	case errors.As(err, &pe):
	case errors.Is(err, store.ErrNotFound):
		pe = &pageError{http.StatusNotFound, "Not found: " + err.Error()}
	default:
		s.log.Error("dashboard", "err", err)
		pe = &pageError{http.StatusInternalServerError, "Something went wrong on the server; its log says what."}
	}
	s.pages.Render(w, pe.status, web.Page{Name: "error", Title: http.StatusText(pe.status), Data: pe.msg})
}

func whoLabel(p *principal) string {
	if p.user != nil {
		return userLabel(p.user)
	}
	return "token " + p.token.Name
}

// --- sign-in with a token, sign-out ---

type loginData struct {
	SSO         bool
	Next, Error string
	CSRF        string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	token := rand.Text()
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: token, Path: "/login", MaxAge: 3600,
		HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteStrictMode})
	s.pages.Render(w, status, web.Page{Name: "login", Title: "Sign in", Data: loginData{
		SSO: s.cfg.OIDC != nil, Next: safeNext(r.FormValue("next")), Error: msg, CSRF: token}})
}

// safeNext is where to go after signing in: a path of this server only.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}

// tokenSignIn trades an admin token for a browser session of it: the
// cookie holds the session's own token, HttpOnly, so script never reads
// it and signing out leaves the token itself working.
func (s *Server) tokenSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	c, err := r.Cookie(loginCSRFCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		s.renderLogin(w, r, http.StatusForbidden, "The sign-in form expired or came from another site: try again.")
		return
	}
	tok, err := s.store.Authenticate(r.Context(), strings.TrimSpace(r.PostFormValue("token")))
	if err != nil || tok.Kind != store.TokenAdmin {
		s.log.Warn("dashboard sign-in refused", "remote_addr", s.clientAddr(r))
		s.renderLogin(w, r, http.StatusUnauthorized, "That token is not a live admin token.")
		return
	}
	se, plain, err := s.store.CreateTokenSession(r.Context(), tok.ID, s.sessionTTL())
	if err != nil {
		s.pageFailed(w, err)
		return
	}
	s.log.Info("signed in with a token", "token", tok.Name, "remote_addr", s.clientAddr(r))
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Path: "/login", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: plain, Path: "/", Expires: se.ExpiresAt,
		HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// signOut is the dashboard's sign-out form: the session (a user's or a
// token's) ended, the cookie cleared, the sign-in page next.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	_ = r.ParseForm()
	// The form sends the CSRF token as a field; identify wants the header.
	r.Header.Set(CSRFHeader, r.PostFormValue("csrf"))
	p, refused, err := s.identify(r)
	if err != nil {
		s.pageFailed(w, err)
		return
	}
	if refused == nil {
		switch {
		case p.session != nil:
			err = s.store.DeleteSession(r.Context(), p.sessToken)
		case p.tokenSession != nil:
			err = s.store.DeleteTokenSession(r.Context(), p.sessToken)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.pageFailed(w, err)
			return
		}
	} else if refused.code == "csrf" {
		s.pages.Render(w, http.StatusForbidden, web.Page{Name: "error", Title: "Forbidden", Data: "The sign-out form came from another site."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// --- the pages ---

type projectRow struct {
	Name, DefaultBranch string
	Latest              *BuildView
	Requests            []BuildView
	// Spark is the durations (seconds) of the default branch's last
	// finished builds, oldest first.
	Spark []float64
	// Badge is the status badge's URL ("" when there is none).
	Badge string
	// CanManage: the principal may change the project's settings.
	CanManage bool
}

func (s *Server) projectsPage(_ http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	ps, err := s.store.ListProjects(r.Context())
	if err != nil {
		return web.Page{}, err
	}
	var rows []projectRow
	for _, pr := range ps {
		if !authz.Allowed(p.authz, authz.ViewProject, pr.Name) {
			continue
		}
		row := projectRow{Name: pr.Name, DefaultBranch: pr.DefaultBranch,
			Badge:     "/badge/" + url.PathEscape(pr.Name) + ".svg?branch=" + url.QueryEscape(pr.DefaultBranch),
			CanManage: authz.Allowed(p.authz, authz.ManageProject, pr.Name)}
		// The default branch's builds (pushes and API builds: a request's
		// build of a head branch of that name is left out), through the
		// (project, branch) index.
		branch, err := s.store.ListBuilds(r.Context(), store.BuildFilter{ProjectID: pr.ID, Branch: pr.DefaultBranch, Limit: 40})
		if err != nil {
			return web.Page{}, err
		}
		var recent []*store.Build
		for _, b := range branch {
			if b.PullRequest == nil && len(recent) < 20 {
				recent = append(recent, b)
			}
		}
		if len(recent) > 0 {
			v := buildView(recent[0])
			row.Latest = &v
		}
		for i := len(recent) - 1; i >= 0; i-- {
			if b := recent[i]; b.StartedAt != nil && b.FinishedAt != nil {
				row.Spark = append(row.Spark, b.FinishedAt.Sub(*b.StartedAt).Seconds())
			}
		}
		reqs, err := s.store.ListBuilds(r.Context(), store.BuildFilter{ProjectID: pr.ID, Requests: true, Limit: 100})
		if err != nil {
			return web.Page{}, err
		}
		row.Requests = openRequests(reqs, 5)
		rows = append(rows, row)
	}
	return web.Page{Name: "projects", Title: "Projects", Nav: "projects", Data: rows}, nil
}

// openRequests is the latest build of each request among bs (newest
// first), at most n. A request's close or merge makes no build (it
// cancels the unfinished ones), so a closed request's last build still
// shows until newer requests push it out.
func openRequests(bs []*store.Build, n int) []BuildView {
	seen := map[int]bool{}
	var out []BuildView
	for _, b := range bs {
		if b.PullRequest == nil || seen[b.PullRequest.Number] {
			continue
		}
		seen[b.PullRequest.Number] = true
		if out = append(out, buildView(b)); len(out) == n {
			break
		}
	}
	return out
}

// buildsFilterView is the builds page's filter as its form shows it.
type buildsFilterView struct {
	Project, Branch, Status, Event, Trigger, PullRequest string
}

type buildsData struct {
	Filter                     buildsFilterView
	Projects                   []string
	Statuses, Events, Triggers []string
	Builds                     []BuildView
	// RowsURL is where the rows are fetched again (live); Newer and
	// Older page the list.
	RowsURL, Newer, Older string
}

const buildsPageSize = 50

func (s *Server) buildsPage(w http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	f, status, err := s.buildFilter(r)
	if err != nil {
		if status != 0 {
			return web.Page{}, &pageError{status, err.Error()}
		}
		return web.Page{}, err
	}
	if f.Limit == 0 {
		f.Limit = buildsPageSize
	}
	bs, err := s.store.ListBuilds(r.Context(), f)
	if err != nil {
		return web.Page{}, err
	}
	q := r.URL.Query()
	d := buildsData{
		Filter: buildsFilterView{Project: q.Get("project"), Branch: q.Get("branch"), Status: q.Get("status"),
			Event: q.Get("event"), Trigger: q.Get("trigger"), PullRequest: q.Get("pull_request")},
		Events:   []string{store.EventPush, store.EventTag, store.EventPullRequest, store.EventAPI},
		Triggers: []string{"push", "api", "github_actions"},
		Builds:   buildViews(bs),
	}
	for _, st := range store.AllStatuses {
		d.Statuses = append(d.Statuses, string(st))
	}
	if d.Projects, err = s.viewableNames(r, p); err != nil {
		return web.Page{}, err
	}
	rows := cloneQuery(q, "partial", "rows")
	d.RowsURL = "/builds?" + rows.Encode()
	if f.BeforeID != 0 {
		d.Newer = "/builds?" + cloneQuery(q, "before", "").Encode()
	}
	if len(bs) == f.Limit {
		d.Older = "/builds?" + cloneQuery(q, "before", strconv.FormatInt(bs[len(bs)-1].ID, 10)).Encode()
	}
	if q.Get("partial") == "rows" {
		s.pages.Partial(w, "rows", web.Page{Name: "builds", Data: d})
		return web.Page{}, nil
	}
	return web.Page{Name: "builds", Title: "Builds", Nav: "builds", Data: d}, nil
}

// viewableNames is the names of the projects p may view, for a filter.
func (s *Server) viewableNames(r *http.Request, p *principal) ([]string, error) {
	ps, err := s.store.ListProjects(r.Context())
	if err != nil {
		return nil, err
	}
	var names []string
	for _, pr := range ps {
		if authz.Allowed(p.authz, authz.ViewProject, pr.Name) {
			names = append(names, pr.Name)
		}
	}
	return names, nil
}

// cloneQuery is q with key set to value ("": removed).
func cloneQuery(q url.Values, key, value string) url.Values {
	c := url.Values{}
	for k, v := range q {
		if k != key && len(v) > 0 && v[0] != "" {
			c[k] = slices.Clone(v)
		}
	}
	if value != "" {
		c.Set(key, value)
	}
	return c
}

type buildData struct {
	Build      BuildView
	Job        *JobView
	CanOperate bool
	Terminal   bool
	QueueTime  string
	LogsGone   string
}

func (s *Server) buildPage(w http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return web.Page{}, &pageError{http.StatusNotFound, "There is no build " + strconv.Quote(r.PathValue("id")) + "."}
	}
	b, err := s.store.Build(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return web.Page{}, &pageError{http.StatusNotFound, fmt.Sprintf("There is no build %d.", id)}
	}
	if err != nil {
		return web.Page{}, err
	}
	if !authz.Allowed(p.authz, authz.ViewProject, b.Project) {
		return web.Page{}, &pageError{http.StatusForbidden, authz.Forbidden(authz.ViewProject, b.Project)}
	}
	d := buildData{Build: buildView(b), Terminal: b.Status.Terminal(), CanOperate: authz.Allowed(p.authz, authz.OperateBuilds, b.Project)}
	if len(d.Build.Jobs) > 0 {
		d.Job = &d.Build.Jobs[0]
		if v := r.URL.Query().Get("job"); v != "" {
			for i := range d.Build.Jobs {
				if strconv.FormatInt(d.Build.Jobs[i].ID, 10) == v {
					d.Job = &d.Build.Jobs[i]
				}
			}
		}
	}
	if b.StartedAt != nil {
		d.QueueTime = web.FormatDuration(b.StartedAt.Sub(b.CreatedAt))
	}
	if b.LogsPrunedAt != nil {
		d.LogsGone = "This build's logs were deleted by log retention " + web.Ago(*b.LogsPrunedAt) + "."
	}
	title := fmt.Sprintf("%s #%d", b.Project, b.Number)
	if r.URL.Query().Get("partial") == "jobs" {
		s.pages.Partial(w, "jobs", web.Page{Name: "build", Data: d})
		return web.Page{}, nil
	}
	return web.Page{Name: "build", Title: title, Nav: "builds", Data: d}, nil
}

type agentRow struct {
	AgentView
	Running []runningJob
	Warm    []string
}

type runningJob struct {
	JobID, BuildID, BuildNumber int64
	Project, Name               string
	StartedAt                   *time.Time
}

type agentsData struct {
	Agents    []agentRow
	ShowPools bool
	Pools     []PoolView
	Runners   []RunnerView
}

func (s *Server) agentsPage(_ http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	if !authz.Allowed(p.authz, authz.ViewAgents, "") {
		return web.Page{}, &pageError{http.StatusForbidden, authz.Forbidden(authz.ViewAgents, "")}
	}
	ctx := r.Context()
	as, err := s.store.ListAgents(ctx)
	if err != nil {
		return web.Page{}, err
	}
	warm, err := s.store.WarmProjects(ctx)
	if err != nil {
		return web.Page{}, err
	}
	running, err := s.store.RunningJobs(ctx)
	if err != nil {
		return web.Page{}, err
	}
	byAgent := map[string][]runningJob{}
	builds := map[int64]*store.Build{}
	for _, j := range running {
		b, ok := builds[j.BuildID]
		if !ok {
			if b, err = s.store.Build(ctx, j.BuildID); err != nil {
				return web.Page{}, err
			}
			builds[j.BuildID] = b
		}
		if !authz.Allowed(p.authz, authz.ViewProject, b.Project) {
			byAgent[j.AgentID] = append(byAgent[j.AgentID], runningJob{Name: "(a job of a project you may not view)"})
			continue
		}
		byAgent[j.AgentID] = append(byAgent[j.AgentID], runningJob{JobID: j.ID, BuildID: b.ID, BuildNumber: b.Number, Project: b.Project, Name: j.Name, StartedAt: j.StartedAt})
	}
	d := agentsData{ShowPools: authz.Allowed(p.authz, authz.ManageGlobal, "")}
	now := time.Now()
	for _, a := range as {
		v := agentView(a)
		v.State, v.QuarantinedUntil = s.sched.AgentState(*a, now)
		row := agentRow{AgentView: v, Running: byAgent[a.ID]}
		for _, name := range warm[a.ID] {
			if authz.Allowed(p.authz, authz.ViewProject, name) {
				row.Warm = append(row.Warm, name)
			}
		}
		d.Agents = append(d.Agents, row)
	}
	if d.ShowPools {
		pools, err := s.store.ListPools(ctx)
		if err != nil {
			return web.Page{}, err
		}
		for _, pl := range pools {
			d.Pools = append(d.Pools, poolView(pl))
		}
		rs, err := s.store.ListRunnerJobs(ctx, store.RunnerFilter{Since: now.Add(-24 * time.Hour)})
		if err != nil {
			return web.Page{}, err
		}
		for _, rj := range rs {
			d.Runners = append(d.Runners, runnerView(rj))
		}
	}
	return web.Page{Name: "agents", Title: "Agents", Nav: "agents", Data: d}, nil
}

type cachesData struct {
	Project   string
	Entries   []CacheEntryView
	Total     int64
	Holders   []string
	CanDelete bool
}

func (s *Server) cachesPage(_ http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	pr, err := s.pageProject(r, p)
	if err != nil {
		return web.Page{}, err
	}
	entries, err := s.caches.List(r.Context(), pr.Name)
	if err != nil {
		return web.Page{}, err
	}
	d := cachesData{Project: pr.Name, CanDelete: authz.Allowed(p.authz, authz.OperateBuilds, pr.Name)}
	for _, e := range entries {
		d.Entries = append(d.Entries, cacheEntryView(e))
		d.Total += e.Size
	}
	warm, err := s.store.WarmProjects(r.Context())
	if err != nil {
		return web.Page{}, err
	}
	as, err := s.store.ListAgents(r.Context())
	if err != nil {
		return web.Page{}, err
	}
	for _, a := range as {
		if slices.Contains(warm[a.ID], pr.Name) {
			d.Holders = append(d.Holders, a.Name+" ("+a.ID+")")
		}
	}
	return web.Page{Name: "caches", Title: "Caches of " + pr.Name, Nav: "projects", Data: d}, nil
}

type insightsData struct {
	View     InsightsView
	Project  string
	Days     int
	Projects []string
	// PerDay and Durations are the charts.
	PerDay, Durations template.HTML
}

func (s *Server) insightsPage(_ http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	q := r.URL.Query()
	v, status, err := s.insights(r, q.Get("project"), q.Get("days"))
	if err != nil {
		if status != 0 {
			return web.Page{}, &pageError{status, err.Error()}
		}
		return web.Page{}, err
	}
	d := insightsData{View: v, Project: q.Get("project"), Days: v.Days}
	if d.Projects, err = s.viewableNames(r, p); err != nil {
		return web.Page{}, err
	}
	bars := make([]web.Bar, 0, len(v.PerDay))
	for _, day := range v.PerDay {
		label := day.Date
		if len(label) == len("2006-01-02") {
			label = label[5:] // MM-DD
		}
		bars = append(bars, web.Bar{Label: label, Parts: []int{day.Success, day.Failure, day.Error, day.Canceled}})
	}
	d.PerDay = web.StackedBars("builds per day by result", bars, []web.Series{
		{Name: "passed", Class: "ok"}, {Name: "failed", Class: "bad"}, {Name: "error", Class: "err"}, {Name: "canceled", Class: "idle"}})
	rows := make([]web.Range, 0, len(v.Jobs))
	for _, j := range v.Jobs {
		label := j.Name
		if d.Project == "" {
			label = j.Project + " / " + j.Name
		}
		p50, p95 := time.Duration(j.Duration.P50MS)*time.Millisecond, time.Duration(j.Duration.P95MS)*time.Millisecond
		rows = append(rows, web.Range{Label: label, Low: p50.Seconds(), High: p95.Seconds(),
			Text: "p50 " + web.FormatDuration(p50) + " · p95 " + web.FormatDuration(p95)})
	}
	d.Durations = web.Ranges("job durations, p50 and p95", rows)
	title := "Insights"
	if d.Project != "" {
		title += " of " + d.Project
	}
	return web.Page{Name: "insights", Title: title, Nav: "insights", Data: d}, nil
}

// pageProject is the {project} of a page's path, when p may view it: the
// same 404 for a project that is not there and one not to be seen, so
// names are not to be guessed through the pages.
func (s *Server) pageProject(r *http.Request, p *principal) (*store.Project, error) {
	pr, err := s.store.ProjectByName(r.Context(), r.PathValue("project"))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !authz.Allowed(p.authz, authz.ViewProject, pr.Name)) {
		return nil, &pageError{http.StatusNotFound, "There is no project " + strconv.Quote(r.PathValue("project")) + " you may see."}
	}
	return pr, err
}

type settingsData struct {
	Project                                 *store.Project
	Secrets                                 []string
	MaxRunning, Weight                      string
	ForkChoices, DraftChoices, BadgeChoices []string
}

// settingsPage is a project's settings and secrets' names, for its admins.
func (s *Server) settingsPage(_ http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	pr, err := s.pageProject(r, p)
	if err != nil {
		return web.Page{}, err
	}
	if !authz.Allowed(p.authz, authz.ManageProject, pr.Name) {
		return web.Page{}, &pageError{http.StatusForbidden, authz.Forbidden(authz.ManageProject, pr.Name)}
	}
	secrets, err := s.store.Secrets(r.Context(), pr.ID)
	if err != nil {
		return web.Page{}, err
	}
	sched, err := s.store.Schedulings(r.Context())
	if err != nil {
		return web.Page{}, err
	}
	d := settingsData{Project: pr,
		ForkChoices:  []string{store.ForkApprove, store.ForkRun, store.ForkOff},
		DraftChoices: []string{store.DraftBuild, store.DraftWait},
		BadgeChoices: []string{store.BadgePrivate, store.BadgePublic}}
	for _, sec := range secrets {
		d.Secrets = append(d.Secrets, sec.Name)
	}
	sc := store.SchedulingOf(sched, pr.ID)
	if sc.MaxRunning != nil {
		d.MaxRunning = strconv.Itoa(*sc.MaxRunning)
	}
	d.Weight = strconv.Itoa(sc.Weight)
	return web.Page{Name: "settings", Title: "Settings of " + pr.Name, Nav: "projects", Data: d}, nil
}

type tokensData struct {
	Tokens []TokenView
	// Current is the token this browser is signed in with (0: none).
	Current int64
}

// tokensPage is the API's tokens, for the global admin.
func (s *Server) tokensPage(_ http.ResponseWriter, r *http.Request, p *principal) (web.Page, error) {
	if !authz.Allowed(p.authz, authz.ManageGlobal, "") {
		return web.Page{}, &pageError{http.StatusForbidden, authz.Forbidden(authz.ManageGlobal, "")}
	}
	ts, err := s.store.ListTokens(r.Context())
	if err != nil {
		return web.Page{}, err
	}
	d := tokensData{}
	if p.token != nil {
		d.Current = p.token.ID
	}
	for _, t := range ts {
		d.Tokens = append(d.Tokens, tokenView(t))
	}
	return web.Page{Name: "tokens", Title: "Tokens", Nav: "tokens", Data: d}, nil
}
