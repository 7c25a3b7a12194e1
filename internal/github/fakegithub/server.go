// Package fakegithub is a fake GitHub for tests: a real HTTP server that
// speaks the REST endpoints Kiln uses, with GitHub's paths, JSON shapes,
// status codes, pagination (Link headers) and rate-limit headers, so that
// the real client (go-github, ghinstallation) runs against it unchanged.
//
// It serves:
//
//	POST   /app/installations/{id}/access_tokens          (RS256 JWT of a registered App)
//	POST   /orgs/{org}/actions/runners/generate-jitconfig
//	POST   /repos/{owner}/{repo}/actions/runners/generate-jitconfig
//	GET    /orgs/{org}/actions/runners, /repos/{owner}/{repo}/actions/runners
//	GET    /orgs/{org}/actions/runners/{id}, /repos/{owner}/{repo}/actions/runners/{id}
//	DELETE /orgs/{org}/actions/runners/{id}, /repos/{owner}/{repo}/actions/runners/{id}
//	GET    /repos/{owner}/{repo}/actions/runs?status=
//	GET    /repos/{owner}/{repo}/actions/runs/{run_id}/jobs
//	GET    /repos/{owner}/{repo}/actions/jobs/{job_id}
//	POST   /repos/{owner}/{repo}/statuses/{sha}            (recorded: Statuses)
//	POST   /repos/{owner}/{repo}/check-runs                (installation tokens only; recorded: CheckRunEvents)
//	PATCH  /repos/{owner}/{repo}/check-runs/{id}
//	GET    /repos/{owner}/{repo}/check-runs/{id}
//	git    /{owner}/{repo}.git/...                         (ServeRepository: smart HTTP, a live token as the password)
//	GET    /repos/{owner}/{repo}                           (AddRepo)
//	GET    /repos/{owner}/{repo}/hooks, POST …/hooks, PATCH …/hooks/{id}  (recorded: Hooks)
//
// under an optional path prefix (WithPathPrefix("/api/v3") for a GitHub
// Enterprise Server layout). Every API call but the token exchange needs an
// installation token it issued or a token added with AddToken.
//
// GitHub's runner broker, which a real runner talks to once it has its JIT
// configuration, cannot run here. In its place the fake serves, at the
// broker URL written into every JIT configuration (BrokerURL):
//
//	POST /_fake/runner/register  {"jitconfig": "<encoded_jit_config>"}
//	POST /_fake/runner/acquire   {"runner_id": N}
//	POST /_fake/runner/complete  {"runner_id": N, "conclusion": "success"}
//
// See broker.go. Test controls (QueueJob, CancelRun, FailNext, SetLatency, RateLimit,
// Calls, ...) drive and observe it. All methods are safe for concurrent use.
package fakegithub

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoint names, as counted by Calls and matched by FailNext's pattern.
const (
	EndpointAccessTokens      = "access_tokens"
	EndpointGenerateJITConfig = "generate-jitconfig"
	EndpointListRunners       = "list-runners"
	EndpointGetRunner         = "get-runner"
	EndpointDeleteRunner      = "delete-runner"
	EndpointListRuns          = "list-runs"
	EndpointListJobs          = "list-jobs"
	EndpointGetJob            = "get-job"

	// The broker's endpoints are counted but never faulted or rate limited.
	EndpointRunnerRegister = "runner-register"
	EndpointRunnerAcquire  = "runner-acquire"
	EndpointRunnerComplete = "runner-complete"
)

// RateLimitPerHour is the X-RateLimit-Limit the fake announces.
const RateLimitPerHour = 5000

// Server is the fake GitHub.
type Server struct {
	ts     *httptest.Server
	prefix string

	mu         sync.Mutex
	now        func() time.Time
	tokenTTL   time.Duration
	maxPerPage int
	brokerURL  string

	apps          map[int64]*app  // by app id
	installations map[int64]int64 // installation id → app id
	instOrder     []int64
	tokens        map[string]time.Time // token → expiry (zero: never)
	issued        int

	runners  map[int64]*Runner
	secrets  map[int64]string // runner id → JIT credential
	runs     map[int64]*run
	jobs     map[int64]*Job
	labelIDs map[string]int64
	repoIDs  map[string]int64
	lastID   struct{ runner, run, job, checkRun int64 }

	calls     map[string]int
	callLog   []Call
	faults    []*fault
	rateLimit *rateFault
	used      int
	resetAt   time.Time

	statuses    []CommitStatus
	checkRuns   map[int64]*CheckRun
	checkEvents []CheckRunEvent
	latencies   []latency // SetLatency

	gitRepos  map[string]string // lower-case owner/repo → directory (git.go)
	gitServed int
	repos     repoTable
}

// Option configures New.
type Option func(*options)

type options struct {
	prefix   string
	listener net.Listener
}

// WithPathPrefix serves the API below prefix, as GitHub Enterprise Server
// does below /api/v3. URL then ends in prefix + "/".
func WithPathPrefix(prefix string) Option {
	return func(o *options) { o.prefix = "/" + strings.Trim(prefix, "/") }
}

// WithListener serves on l instead of a new loopback listener, e.g. on an
// address a container can reach.
func WithListener(l net.Listener) Option {
	return func(o *options) { o.listener = l }
}

// New starts a fake GitHub. Close it when done.
func New(opts ...Option) *Server {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.prefix == "/" {
		o.prefix = ""
	}
	s := &Server{
		prefix:        o.prefix,
		now:           time.Now,
		tokenTTL:      time.Hour,
		maxPerPage:    100,
		apps:          map[int64]*app{},
		installations: map[int64]int64{},
		tokens:        map[string]time.Time{},
		runners:       map[int64]*Runner{},
		secrets:       map[int64]string{},
		runs:          map[int64]*run{},
		jobs:          map[int64]*Job{},
		labelIDs:      map[string]int64{},
		repoIDs:       map[string]int64{},
		calls:         map[string]int{},
		checkRuns:     map[int64]*CheckRun{},
		gitRepos:      map[string]string{},
	}
	// Ids start far apart, and job ids past 2^32 as GitHub's are, so that a
	// runner id used as a job id, or an int32 somewhere, shows.
	s.lastID.runner, s.lastID.run, s.lastID.job, s.lastID.checkRun = 0, 5_000_000_000, 14_000_000_000, 30_000_000_000
	s.resetAt = s.now().Add(time.Hour).Truncate(time.Second)

	mux := http.NewServeMux()
	s.route(mux)
	s.ts = httptest.NewUnstartedServer(mux)
	if o.listener != nil {
		s.ts.Listener.Close()
		s.ts.Listener = o.listener
	}
	s.ts.Start()
	s.brokerURL = s.ts.URL + "/"
	return s
}

// URL is the API root, with a trailing slash: the Config.BaseURL of a client.
func (s *Server) URL() string { return s.ts.URL + s.prefix + "/" }

// Close shuts the server down.
func (s *Server) Close() { s.ts.Close() }

// BrokerURL is where runners reach the fake broker (/_fake/runner/...), as
// written into JIT configurations ("serverUrl"); by default this server.
func (s *Server) BrokerURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.brokerURL
}

// SetBrokerURL changes the broker URL written into JIT configurations
// generated from now on, e.g. to an address a container reaches the host by.
func (s *Server) SetBrokerURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.brokerURL = strings.TrimSuffix(u, "/") + "/"
}

// SetClock replaces the fake's clock (time.Now): it dates tokens, runs and
// jobs, and judges JWTs and token expiry.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetMaxPerPage lowers the page size cap (GitHub's is 100), so that a
// handful of items spans several pages.
func (s *Server) SetMaxPerPage(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxPerPage = max(n, 1)
}

// Calls is how many requests reached endpoint (one of the Endpoint*
// names), counting those answered with an injected fault.
func (s *Server) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// Call is one API request the fake received, as CallLog lists them.
type Call struct {
	Endpoint string // one of the Endpoint* names
	// Remote is the client's IP address (the request's RemoteAddr without
	// its port): which host called, when several share the fake.
	Remote string
	At     time.Time
}

// CallLog lists the API requests received so far (the broker's and git's
// are not in it), in the order they came, with who sent them.
func (s *Server) CallLog() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.callLog...)
}

// remoteIP is r's client address without its port.
func remoteIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// fault lets skip requests to endpoints matching pattern through, then
// answers n of them with status.
type fault struct {
	pattern string
	skip    int
	status  int
	n       int
}

// rateFault answers n API requests as rate limited.
type rateFault struct {
	n          int
	status     int
	reset      time.Time     // primary: X-RateLimit-Remaining: 0 and this reset
	retryAfter time.Duration // secondary: Retry-After
}

// FailNext answers the next n requests whose endpoint name matches pattern
// (path.Match syntax over the Endpoint* names: "*-runner", "*") with
// status and GitHub's error body for it, before doing anything. 429 comes
// without Retry-After (use SecondaryRateLimit for that).
func (s *Server) FailNext(pattern string, status, n int) {
	s.FailAfter(pattern, 0, status, n)
}

// FailAfter is FailNext after letting skip matching requests through: with
// a small SetMaxPerPage it fails a listing on a later page.
func (s *Server) FailAfter(pattern string, skip, status, n int) {
	if _, err := path.Match(pattern, ""); err != nil {
		panic(fmt.Sprintf("fakegithub: FailNext: bad pattern %q: %v", pattern, err))
	}
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{pattern: pattern, skip: skip, status: status, n: n})
}

// RateLimit answers the next n API requests (not the token exchange) with
// GitHub's primary rate limit: 403, X-RateLimit-Remaining: 0 and
// X-RateLimit-Reset: reset.
func (s *Server) RateLimit(n int, reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimit = &rateFault{n: n, status: http.StatusForbidden, reset: reset}
}

// SecondaryRateLimit answers the next n API requests with GitHub's
// secondary rate limit: status (403 or 429) and Retry-After.
func (s *Server) SecondaryRateLimit(n, status int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimit = &rateFault{n: n, status: status, retryAfter: retryAfter}
}

func (s *Server) route(mux *http.ServeMux) {
	api := func(method, pattern, endpoint string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+s.prefix+pattern, s.apiHandler(endpoint, h))
	}
	api("POST", "/app/installations/{id}/access_tokens", EndpointAccessTokens, s.accessToken)
	for _, scope := range []string{"/orgs/{owner}", "/repos/{owner}/{repo}"} {
		api("POST", scope+"/actions/runners/generate-jitconfig", EndpointGenerateJITConfig, s.generateJITConfig)
		api("GET", scope+"/actions/runners", EndpointListRunners, s.listRunners)
		api("GET", scope+"/actions/runners/{id}", EndpointGetRunner, s.getRunner)
		api("DELETE", scope+"/actions/runners/{id}", EndpointDeleteRunner, s.deleteRunner)
	}
	api("GET", "/repos/{owner}/{repo}/actions/runs", EndpointListRuns, s.listRuns)
	api("GET", "/repos/{owner}/{repo}/actions/runs/{run}/jobs", EndpointListJobs, s.listJobs)
	api("GET", "/repos/{owner}/{repo}/actions/jobs/{id}", EndpointGetJob, s.getJob)
	api("POST", "/repos/{owner}/{repo}/statuses/{sha}", EndpointCreateStatus, s.createStatus)
	api("POST", "/repos/{owner}/{repo}/check-runs", EndpointCreateCheckRun, s.createCheckRun)
	api("PATCH", "/repos/{owner}/{repo}/check-runs/{id}", EndpointUpdateCheckRun, s.updateCheckRun)
	api("GET", "/repos/{owner}/{repo}/check-runs/{id}", EndpointGetCheckRun, s.getCheckRun)

	mux.HandleFunc("GET /{owner}/{repo}/info/refs", s.gitHandler)
	mux.HandleFunc("POST /{owner}/{repo}/git-upload-pack", s.gitHandler)
	mux.HandleFunc("POST /{owner}/{repo}/git-receive-pack", s.gitHandler)
	api("GET", "/repos/{owner}/{repo}", EndpointGetRepo, s.getRepo)
	api("GET", "/repos/{owner}/{repo}/hooks", EndpointListHooks, s.listHooks)
	api("POST", "/repos/{owner}/{repo}/hooks", EndpointCreateHook, s.createHook)
	api("PATCH", "/repos/{owner}/{repo}/hooks/{id}", EndpointEditHook, s.editHook)

	broker := func(pattern, endpoint string, h http.HandlerFunc) {
		mux.HandleFunc("POST /_fake/runner/"+pattern, func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.calls[endpoint]++
			s.mu.Unlock()
			h(w, r)
		})
	}
	broker("register", EndpointRunnerRegister, s.runnerRegister)
	broker("acquire", EndpointRunnerAcquire, s.runnerAcquire)
	broker("complete", EndpointRunnerComplete, s.runnerComplete)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found")
	})
}

// APIVersion is the only X-GitHub-Api-Version the fake serves; MediaType
// the Accept it wants.
const (
	APIVersion = "2022-11-28"
	MediaType  = "application/vnd.github+json"
)

// checkAPIHeaders holds a request to the headers GitHub's REST
// documentation tells clients to send: Accept: application/vnd.github+json
// and X-GitHub-Api-Version: 2022-11-28. GitHub itself answers 400 to a
// version it does not support, and serves a request without one, or with
// the older application/vnd.github.v3+json, as 2022-11-28; the fake refuses
// those too, so that a client drifting from the documentation fails its
// tests.
func checkAPIHeaders(h http.Header) string {
	switch v := h.Get("X-GitHub-Api-Version"); v {
	case APIVersion:
	case "":
		return "X-GitHub-Api-Version is missing: send X-GitHub-Api-Version: " + APIVersion + " (fakegithub requires it)"
	default:
		return fmt.Sprintf("API version %q is not supported: send X-GitHub-Api-Version: %s", v, APIVersion)
	}
	if accept := h.Values("Accept"); len(accept) != 1 || accept[0] != MediaType {
		return fmt.Sprintf("Accept %q: send Accept: %s (fakegithub requires it)", strings.Join(accept, ", "), MediaType)
	}
	return ""
}

// apiHandler waits out any SetLatency, counts the call, checks the documented headers (400), authenticates it (but the token exchange,
// which checks its own JWT), applies injected rate limits and faults, sets
// the rate-limit headers GitHub sends, and runs h.
func (s *Server) apiHandler(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.wait(endpoint)
		s.mu.Lock()
		s.calls[endpoint]++
		s.callLog = append(s.callLog, Call{Endpoint: endpoint, Remote: remoteIP(r), At: s.now()})
		if msg := checkAPIHeaders(r.Header); msg != "" {
			s.mu.Unlock()
			writeError(w, http.StatusBadRequest, msg)
			return
		}
		if endpoint != EndpointAccessTokens && !s.authenticated(r) {
			s.mu.Unlock()
			writeError(w, http.StatusUnauthorized, "Bad credentials")
			return
		}
		if rl := s.rateLimit; rl != nil && endpoint != EndpointAccessTokens {
			s.answerRateLimited(w, rl)
			if rl.n--; rl.n <= 0 {
				s.rateLimit = nil
			}
			s.mu.Unlock()
			return
		}
		for i, f := range s.faults {
			if ok, _ := path.Match(f.pattern, endpoint); !ok {
				continue
			}
			if f.skip > 0 {
				f.skip--
				continue
			}
			if f.n--; f.n <= 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
			if endpoint != EndpointAccessTokens {
				s.setRateHeaders(w)
			}
			s.mu.Unlock()
			writeError(w, f.status, faultMessage(f.status))
			return
		}
		// The App's own (JWT) requests have a quota of their own.
		if endpoint != EndpointAccessTokens {
			s.setRateHeaders(w)
		}
		s.mu.Unlock()
		h(w, r)
	}
}

// setRateHeaders spends one request of the hour's quota and reports it.
// Called with s.mu held.
func (s *Server) setRateHeaders(w http.ResponseWriter) {
	if now := s.now(); !now.Before(s.resetAt) {
		s.used, s.resetAt = 0, now.Add(time.Hour).Truncate(time.Second)
	}
	s.used = min(s.used+1, RateLimitPerHour-1)
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(RateLimitPerHour))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(RateLimitPerHour-s.used))
	h.Set("X-RateLimit-Used", strconv.Itoa(s.used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(s.resetAt.Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

// answerRateLimited writes GitHub's primary or secondary rate-limit answer.
// Called with s.mu held.
func (s *Server) answerRateLimited(w http.ResponseWriter, rl *rateFault) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-RateLimit-Limit", strconv.Itoa(RateLimitPerHour))
	h.Set("X-RateLimit-Resource", "core")
	var body map[string]any
	if rl.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(rl.retryAfter.Round(time.Second)/time.Second)))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(RateLimitPerHour-s.used))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(s.resetAt.Unix(), 10))
		body = map[string]any{
			"message":           "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
			"documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits",
			"status":            strconv.Itoa(rl.status),
		}
	} else {
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", strconv.Itoa(RateLimitPerHour))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(rl.reset.Unix(), 10))
		body = map[string]any{
			"message":           "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID.",
			"documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit",
			"status":            strconv.Itoa(rl.status),
		}
	}
	w.WriteHeader(rl.status)
	_ = json.NewEncoder(w).Encode(body)
}

func faultMessage(status int) string {
	switch status {
	case http.StatusForbidden:
		return "Resource not accessible by integration"
	case http.StatusConflict:
		return "Conflict"
	case http.StatusUnprocessableEntity:
		return "Validation Failed"
	case http.StatusInternalServerError:
		return "Server Error"
	}
	return http.StatusText(status)
}

// writeError writes GitHub's error body.
func writeError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]any{
		"message":           message,
		"documentation_url": "https://docs.github.com/rest",
		"status":            strconv.Itoa(status),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// paginate applies per_page and page to n items: the slice bounds to answer
// with, and GitHub's Link header (first, prev, next, last) when there is
// more than one page. Called with s.mu held.
func (s *Server) paginate(w http.ResponseWriter, r *http.Request, n int) (lo, hi int) {
	q := r.URL.Query()
	per, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || per <= 0 {
		per = 30
	}
	per = min(per, s.maxPerPage)
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page <= 0 {
		page = 1
	}
	last := max((n+per-1)/per, 1)
	lo, hi = min((page-1)*per, n), min(page*per, n)
	if last == 1 {
		return lo, hi
	}
	link := func(p int, rel string) string {
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		q.Set("per_page", strconv.Itoa(per))
		q.Set("page", strconv.Itoa(p))
		u.RawQuery = q.Encode()
		return fmt.Sprintf("<%s>; rel=%q", u.String(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	w.Header().Set("Link", strings.Join(links, ", "))
	return lo, hi
}

func pathID(r *http.Request, name string) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	return id, err == nil && id > 0
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func stringOrNil(v string) any {
	if v == "" {
		return nil
	}
	return v
}

func int64OrNil(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}
