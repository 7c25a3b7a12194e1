// Package api serves Kiln's HTTP surface: the REST API under /api/v1 (behind
// bearer tokens), forge webhooks under /hooks, the agent protocol under
// /api/v1/agent (behind agent tokens), live logs as server-sent events, and
// Prometheus metrics.
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/dispatch"
	"github.com/kilnci/kiln/internal/logarchive"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/auth"
	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/cache"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/scheduler"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/web"
)

type Config struct {
	// MaxWebhookBody bounds a webhook request body; larger ones get 413.
	MaxWebhookBody int64
	// PublicURL is the base URL jobs reach the server (and its cache service) at.
	PublicURL string
	// Health, when set, is checked by /healthz after the store's own
	// health (the server checks the data directory's free space).
	Health func(context.Context) error
	// AllowFileRemotes lets a project's clone URL be a file:// URL.
	AllowFileRemotes bool
	// WebhookConcurrency bounds the webhook bodies read and verified at
	// once; a delivery waits at most WebhookQueueWait for a slot, then
	// gets 503. WebhookReadTimeout bounds the reading of one body.
	WebhookConcurrency int
	WebhookQueueWait   time.Duration
	WebhookReadTimeout time.Duration
	// SpoolDir holds the webhook bodies too large to hold in memory while
	// they are verified (default: the system's temporary directory).
	SpoolDir string
	// MetricsToken, when set, is the bearer token /metrics requires;
	// empty: /metrics is open.
	MetricsToken string
	// GitHubApp says the server has a GitHub App (its id and key), so a
	// project may connect to GitHub through one of its installations.
	GitHubApp bool
	// GitHubAppID and GitHubAppKey are that App, for onboarding a
	// repository through one of its installations (forgeapi).
	GitHubAppID  int64
	GitHubAppKey []byte
	// HookBaseURL is the public URL the operator gave (-public-url),
	// where forges deliver webhooks: "" when none was given, and then
	// Kiln creates no webhook (the default, the listen address, is
	// rarely one a forge reaches).
	HookBaseURL string
	// LogArchive holds the logs of builds archived out of the store
	// (store.Build.LogsArchivedAt); nil: none are.
	LogArchive *logarchive.Archive
	// Artifacts holds build artifacts' archives (nil: none are taken);
	// ArtifactMaxBytes bounds one job's files (0: no bound);
	// ArtifactExpire is how long they are kept when the pipeline does
	// not say.
	Artifacts        blobstore.Store
	ArtifactMaxBytes int64
	ArtifactExpire   time.Duration
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client the audit log records (-trusted-proxies); none: the TCP
	// peer is the client.
	TrustedProxies []netip.Prefix
	// OIDC signs users in (sso.go); nil: single sign-on is off and only
	// tokens authenticate.
	OIDC *auth.Provider
	// SessionTTL is a signed-in session's life (default 12h).
	SessionTTL time.Duration
	// SecureCookies marks the session cookies Secure (the public URL is
	// https).
	SecureCookies bool
}

type Server struct {
	cfg     Config
	store   *store.Store
	sched   *scheduler.Scheduler
	metrics *metrics.Metrics
	caches  *cache.Service
	actions *actions.Service
	// dispatch turns agents' claims into assignments.
	dispatch *dispatch.Dispatcher
	watch    *watcher
	jobs     sync.Map // job id -> build id, to wake log streams without a query
	warm     sync.Map // agent id -> its last reported warm projects, joined
	log      *slog.Logger
	mux      *http.ServeMux
	// hookSlots bounds the webhook bodies read at once; dummySecret is
	// what a delivery for no project (or a project without a secret) is
	// verified with: random, so it matches nothing.
	hookSlots   chan struct{}
	dummySecret string
	// onboarding is held from an onboarding's forge calls until its
	// project is stored, so that two at once cannot leave the forge's
	// hook with one secret and the project with the other.
	onboarding sync.Mutex
	// pages are the dashboard's templates (dashboard.go).
	pages *web.Pages
}

// New builds the HTTP edge. acts serves GitHub Actions pools (its
// webhook, pools, runners, and the launch of claimed runner jobs).
func New(cfg Config, st *store.Store, sched *scheduler.Scheduler, m *metrics.Metrics, log *slog.Logger, caches *cache.Service, acts *actions.Service) *Server {
	if cfg.WebhookConcurrency <= 0 {
		cfg.WebhookConcurrency = 16
	}
	if cfg.WebhookQueueWait <= 0 {
		cfg.WebhookQueueWait = 10 * time.Second
	}
	s := &Server{cfg: cfg, store: st, sched: sched, metrics: m, caches: caches, actions: acts,
		dispatch: dispatch.New(st, sched, caches, acts, cfg.PublicURL, cfg.ArtifactMaxBytes), watch: newWatcher(), log: log, mux: http.NewServeMux(),
		hookSlots: make(chan struct{}, cfg.WebhookConcurrency), dummySecret: rand.Text()}
	// Every agent request but the registration (which checks its body's
	// version too) is refused when its protocol version is not one this
	// server speaks.
	agent := func(h http.HandlerFunc) http.Handler { return s.auth(store.TokenAgent, s.agentProtocol(h)) }

	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.Handle("GET /metrics", s.metricsAuth(m.Handler()))
	s.mux.HandleFunc("POST /hooks/{forge}/{project}", s.webhook)
	s.mux.HandleFunc("POST "+ActionsHookPath, s.actionsHook)

	s.mux.Handle("GET /api/v1/projects", s.allow(authz.ListProjects, nil, s.listProjects))
	s.mux.Handle("POST /api/v1/projects", s.allow(authz.ManageGlobal, nil, s.createProject))
	s.mux.Handle("GET /api/v1/projects/{project}", s.allow(authz.ViewProject, onProject, s.getProject))
	s.mux.Handle("PATCH /api/v1/projects/{project}", s.allow(authz.ManageProject, onProject, s.updateProject))
	s.mux.Handle("DELETE /api/v1/projects/{project}", s.allow(authz.ManageProject, onProject, s.deleteProject))
	s.mux.Handle("GET /api/v1/projects/{project}/secrets", s.allow(authz.ManageProject, onProject, s.listSecrets))
	s.mux.Handle("PUT /api/v1/projects/{project}/secrets/{name}", s.allow(authz.ManageProject, onProject, s.setSecret))
	s.mux.Handle("DELETE /api/v1/projects/{project}/secrets/{name}", s.allow(authz.ManageProject, onProject, s.deleteSecret))
	s.mux.Handle("GET /api/v1/projects/{project}/registries", s.allow(authz.ManageProject, onProject, s.listRegistries))
	s.mux.Handle("PUT /api/v1/projects/{project}/registries/{host}", s.allow(authz.ManageProject, onProject, s.setRegistry))
	s.mux.Handle("DELETE /api/v1/projects/{project}/registries/{host}", s.allow(authz.ManageProject, onProject, s.deleteRegistry))
	s.mux.Handle("POST /api/v1/projects/{project}/builds", s.allow(authz.OperateBuilds, onProject, s.triggerBuild))

	s.mux.Handle("GET /api/v1/builds", s.allow(authz.ListProjects, nil, s.listBuilds))
	s.mux.Handle("GET /api/v1/builds/{id}", s.allow(authz.ViewProject, onBuild, s.getBuild))
	s.mux.Handle("POST /api/v1/builds/{id}/cancel", s.allow(authz.OperateBuilds, onBuild, s.cancelBuild))
	s.mux.Handle("POST /api/v1/builds/{id}/retry", s.allow(authz.OperateBuilds, onBuild, s.retryBuild))
	s.mux.Handle("POST /api/v1/builds/{id}/approve", s.allow(authz.OperateBuilds, onBuild, s.approveBuild))
	s.mux.Handle("POST /api/v1/builds/{id}/reject", s.allow(authz.OperateBuilds, onBuild, s.rejectBuild))
	s.mux.Handle("GET /api/v1/builds/{id}/logs", s.allow(authz.ViewProject, onBuild, s.buildLogs))
	s.mux.Handle("GET /api/v1/builds/{id}/logs/stream", s.allow(authz.ViewProject, onBuild, s.streamBuildLogs))
	s.mux.Handle("GET /api/v1/builds/{id}/artifacts", s.allow(authz.ViewProject, onBuild, s.listArtifacts))
	s.mux.Handle("GET /api/v1/builds/{id}/artifacts/{job}", s.allow(authz.ViewProject, onBuild, s.getArtifact))

	s.mux.Handle("GET /api/v1/insights", s.allow(authz.ListProjects, nil, s.insightsReport))
	// A status badge: public ones for anyone (no sign-in), private ones
	// behind the caller's principal (badge.go).
	s.mux.HandleFunc("GET /badge/{file}", s.badgeRoute)

	s.mux.Handle("GET /api/v1/tokens", s.allow(authz.ManageGlobal, nil, s.listTokens))
	s.mux.Handle("POST /api/v1/tokens", s.allow(authz.ManageGlobal, nil, s.createToken))
	s.mux.Handle("DELETE /api/v1/tokens/{id}", s.allow(authz.ManageGlobal, nil, s.revokeToken))
	s.mux.Handle("GET /api/v1/agents", s.allow(authz.ViewAgents, nil, s.listAgents))
	s.mux.Handle("GET /api/v1/projects/{project}/caches", s.allow(authz.ViewProject, onProject, s.listCaches))
	s.mux.Handle("DELETE /api/v1/projects/{project}/caches/{id}", s.allow(authz.OperateBuilds, onProject, s.deleteCache))
	s.mux.Handle("POST /api/v1/caches/prune", s.allow(authz.ManageGlobal, nil, s.pruneCaches))
	s.mux.Handle("GET /api/v1/pools", s.allow(authz.ManageGlobal, nil, s.listPools))
	s.mux.Handle("POST /api/v1/pools", s.allow(authz.ManageGlobal, nil, s.createPool))
	s.mux.Handle("GET /api/v1/pools/{name}", s.allow(authz.ManageGlobal, nil, s.getPool))
	s.mux.Handle("PATCH /api/v1/pools/{name}", s.allow(authz.ManageGlobal, nil, s.updatePool))
	s.mux.Handle("DELETE /api/v1/pools/{name}", s.allow(authz.ManageGlobal, nil, s.deletePool))
	s.mux.Handle("GET /api/v1/runners", s.allow(authz.ManageGlobal, nil, s.listRunners))
	s.mux.Handle("GET /api/v1/audit", s.allow(authz.ManageGlobal, nil, s.listAudit))
	s.mux.Handle("GET /api/v1/roles", s.allow(authz.ManageGlobal, nil, s.listRoles))
	s.mux.Handle("PUT /api/v1/roles", s.allow(authz.ManageGlobal, nil, s.setRole))
	s.mux.Handle("DELETE /api/v1/roles", s.allow(authz.ManageGlobal, nil, s.removeRole))

	s.ssoRoutes()
	s.dashboardRoutes()

	s.mux.Handle("POST "+protocol.Prefix+"/register", s.auth(store.TokenAgent, s.agentRegister))
	s.mux.Handle("POST "+protocol.Prefix+"/claim", agent(s.agentClaim))
	s.mux.Handle("POST "+protocol.Prefix+"/jobs/{id}/heartbeat", agent(s.agentHeartbeat))
	s.mux.Handle("POST "+protocol.Prefix+"/jobs/{id}/steps", agent(s.agentStep))
	s.mux.Handle("POST "+protocol.Prefix+"/jobs/{id}/logs", agent(s.agentLogs))
	s.mux.Handle("POST "+protocol.Prefix+"/jobs/{id}/finish", agent(s.agentFinish))
	s.mux.Handle("POST "+protocol.Prefix+"/jobs/{id}/caches", agent(s.agentCacheEvent))
	s.mux.Handle("POST "+protocol.Prefix+"/jobs/{id}"+protocol.ArtifactsPath, agent(s.agentArtifacts))

	// The actions/cache-compatible service: its own token (scoped to a
	// project and branch) authenticates its requests.
	for _, prefix := range []string{"/twirp/github.actions.results.api.v1.CacheService/", "/_apis/artifactcache/", "/cache-blobs/"} {
		s.mux.Handle(prefix, caches.Handler())
	}

	s.mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	}))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// healthz is ok only while the store can write (a read would still
// succeed on a full disk): store.Health probes a write and remembers
// failed ones.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.store.Ping(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "database: "+err.Error())
		return
	}
	if err := s.store.Health(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_cannot_write", "database: "+err.Error())
		return
	}
	if s.cfg.Health != nil {
		if err := s.cfg.Health(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type ctxKey struct{}

// auth requires a bearer token of the given kind.
func (s *Server) auth(kind store.TokenKind, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		plain, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || plain == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing bearer token: send Authorization: Bearer <token>")
			return
		}
		tok, err := s.store.Authenticate(r.Context(), plain)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or revoked token")
			return
		}
		if tok.Kind != kind {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("a %s token cannot use this endpoint (needs a %s token)", tok.Kind, kind))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok)))
	})
}

// metricsAuth requires Config.MetricsToken, when set, as the bearer token
// (compared in constant time).
func (s *Server) metricsAuth(next http.Handler) http.Handler {
	if s.cfg.MetricsToken == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.cfg.MetricsToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plain, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(plain))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln-metrics"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "/metrics needs the metrics token: send Authorization: Bearer <token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, protocol.Error{Error: msg, Code: code})
}

// storeError maps store error kinds to HTTP answers.
func (s *Server) storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, store.ErrStaleAttempt):
		s.metrics.StaleWritesRefused.Inc()
		writeError(w, http.StatusConflict, protocol.CodeStaleAttempt, err.Error())
	case errors.Is(err, store.ErrNotYourLease):
		writeError(w, http.StatusForbidden, protocol.CodeNotYourLease, err.Error())
	case errors.Is(err, store.ErrAgentTaken):
		writeError(w, http.StatusForbidden, protocol.CodeAgentTaken, err.Error())
	case errors.Is(err, store.ErrCannotWrite):
		// Not the client's fault and not forever: agents retry a 503.
		s.log.Error("store cannot write", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store_cannot_write", err.Error())
	default:
		s.log.Error("request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error: "+err.Error())
	}
}

// decode reads a JSON body (at most 1 MiB) into v, refusing unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "request body over 1 MiB")
		} else {
			writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
		}
		return false
	}
	return true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid id %q: want a positive integer", r.PathValue("id")))
		return 0, false
	}
	return id, true
}
