// Package server wires the control plane: store, scheduler, API and metrics,
// from one Config. `kiln server`, `kiln up` and the end-to-end tests all
// start it through here.
package server

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/auth"
	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/cache"
	"github.com/kilnci/kiln/internal/forgestatus"
	"github.com/kilnci/kiln/internal/gitauth"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/leader"
	"github.com/kilnci/kiln/internal/logarchive"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/scheduler"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

type Config struct {
	// DataDir holds the database, the secret key, git mirrors and tokens.
	DataDir string
	// Database is the store: a postgres:// URL for PostgreSQL (several
	// servers may share one), else a SQLite file's path; "" is
	// DataDir/kiln.db.
	Database string
	// Listen is the address to serve on, e.g. 127.0.0.1:8080.
	Listen string
	// SecretKey (64 hex characters) encrypts secrets at rest; when empty,
	// DataDir/secret.key is used (created on first start).
	SecretKey      string
	MaxWebhookBody int64
	// WebhookConcurrency bounds the webhook bodies read and verified at
	// once (each holds at most 256 KiB in memory, the rest in a file);
	// a delivery waits up to WebhookQueueWait for a slot, then gets 503.
	// WebhookReadTimeout bounds the reading of one body.
	WebhookConcurrency int
	WebhookQueueWait   time.Duration
	WebhookReadTimeout time.Duration
	Scheduler          scheduler.Config
	// PublicURL is the base URL agents and jobs reach this server at (the
	// cache service hands it out). Default: http:// + the listen address.
	PublicURL string
	// MetricsToken, when set, is the bearer token /metrics requires.
	MetricsToken string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For the
	// audit log believes for a request's client address; none: the TCP
	// peer's address.
	TrustedProxies []netip.Prefix
	// OIDC, when its issuer is set, signs users in through that OpenID
	// provider (docs/auth.md); its redirect URL is PublicURL/auth/callback.
	OIDC auth.Config
	// SessionTTL is a signed-in session's life (default 12h).
	SessionTTL time.Duration
	// Cache configures the cache service; Dir and SigningKey are set from
	// DataDir and the secret key.
	Cache cache.Config
	// CacheS3, when its endpoint or bucket is set, keeps the cache's
	// finalized archives in an S3-compatible store (downloads then come
	// from its presigned URLs); the bucket is checked at start. Uploads
	// in progress stay under DataDir/cache.
	CacheS3 blobstore.S3Config
	// EvictEvery is how often the cache service evicts.
	EvictEvery time.Duration
	// Actions connects Kiln to GitHub for its runner pools (a GitHub App
	// or a token, the webhook secret, reconciler and reaper timing).
	Actions actions.Config
	// ShutdownTimeout bounds how long Serve waits, once its context ends,
	// for requests in flight (agents' long-poll claims end at once).
	ShutdownTimeout time.Duration
	// LogRetention is every project's default log retention (a project
	// may override it); RetentionEvery is how often it is applied.
	LogRetention   RetentionPolicy
	RetentionEvery time.Duration
	// LogArchiveAfter: a finished build older than this has its log lines
	// moved out of the database into the log archive (0: never). The
	// archive is DataDir/log-archive, or the cache's S3 bucket under
	// LogArchiveS3Prefix when CacheS3 is set.
	LogArchiveAfter    time.Duration
	LogArchiveS3Prefix string
	// ArtifactMaxBytes bounds the files of one job's artifacts (0: no
	// bound); ArtifactExpire is how long artifacts are kept when the
	// pipeline does not say (expire-in); ArtifactsEvery is how often the
	// expired are deleted. They are kept in DataDir/artifacts, or with
	// CacheS3 in its bucket under ArtifactsS3Prefix.
	ArtifactMaxBytes  int64
	ArtifactExpire    time.Duration
	ArtifactsEvery    time.Duration
	ArtifactsS3Prefix string
	// ReserveBytes is the space kept in DataDir/reserve for deletes on a
	// full disk (0: none); HealthEvery is how often the store's writes are
	// probed (and the reserve made again once there is room).
	ReserveBytes int64
	HealthEvery  time.Duration
	// MinFreeBytes: with less free space in DataDir, /healthz answers 503
	// (a small write may still fit in SQLite's write-ahead log, so a write
	// probe alone can miss a full disk).
	MinFreeBytes int64
	// Git bounds the control plane's git commands (plan-time reads) and
	// says whether file:// clone URLs are allowed (at project add too).
	Git gitmirror.Config
	// ForgeStatuses tunes the sender of commit statuses and check runs
	// (PublicURL is set from PublicURL, the GitHub App from Actions).
	ForgeStatuses forgestatus.Config
	// LeaderTTL is the life of the leader lease without a renewal: when
	// the server running the background work dies, another takes it
	// over within this long (at once when it shuts down cleanly).
	LeaderTTL time.Duration
}

// DefaultArtifactExpire is how long artifacts are kept when neither the
// pipeline nor the server's configuration says.
const DefaultArtifactExpire = 30 * 24 * time.Hour

func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080", MaxWebhookBody: 25 << 20, WebhookConcurrency: 16, WebhookQueueWait: 10 * time.Second, WebhookReadTimeout: 30 * time.Second,
		Scheduler: scheduler.DefaultConfig(), Cache: cache.DefaultConfig(), EvictEvery: 10 * time.Minute,
		Actions: actions.DefaultConfig(), ShutdownTimeout: 10 * time.Second,
		LogRetention: RetentionPolicy{MaxAge: 90 * 24 * time.Hour, MaxBytes: 1 << 30}, RetentionEvery: 10 * time.Minute, LogArchiveS3Prefix: "kiln-logs",
		ArtifactMaxBytes: 1 << 30, ArtifactExpire: DefaultArtifactExpire, ArtifactsEvery: 10 * time.Minute, ArtifactsS3Prefix: "kiln-artifacts",
		ReserveBytes: 64 << 20, HealthEvery: 10 * time.Second, MinFreeBytes: 16 << 20, Git: gitmirror.DefaultConfig(),
		LeaderTTL: leader.DefaultTTL}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("data-dir: required")
	case c.MaxWebhookBody <= 0:
		return errors.New("max-webhook-body: must be positive")
	case c.WebhookConcurrency < 1:
		return errors.New("webhook-concurrency: at least 1")
	case c.Scheduler.Lease < time.Second:
		return errors.New("lease: at least 1s")
	case c.Scheduler.MaxAttempts < 1:
		return errors.New("max-attempts: at least 1")
	case c.LogRetention.MaxAge < 0:
		return errors.New("log-retention: must not be negative (0: keep forever)")
	case c.LogArchiveAfter < 0:
		return errors.New("log-archive-after: must not be negative (0: never archive)")
	case c.LogArchiveAfter > 0 && c.CacheS3.Enabled() && overlaps(c.CacheS3.Prefix, c.LogArchiveS3Prefix):
		return fmt.Errorf("log-archive-s3-prefix: %q overlaps the cache's prefix %q: the cache owns every key under its own", c.LogArchiveS3Prefix, c.CacheS3.Prefix)
	case c.ArtifactMaxBytes < 0:
		return errors.New("artifacts-max-bytes: must not be negative (0: no limit)")
	case c.ArtifactExpire != 0 && c.ArtifactExpire < time.Minute:
		return errors.New("artifacts-expire: at least 1m")
	case c.CacheS3.Enabled() && (overlaps(c.CacheS3.Prefix, c.ArtifactsS3Prefix) || overlaps(c.LogArchiveS3Prefix, c.ArtifactsS3Prefix)):
		return fmt.Errorf("artifacts-s3-prefix: %q overlaps the cache's prefix %q or the log archive's %q: each owns every key under its own", c.ArtifactsS3Prefix, c.CacheS3.Prefix, c.LogArchiveS3Prefix)
	case c.LogRetention.MaxBytes < 0:
		return errors.New("log-max-bytes: must not be negative (0: no limit)")
	case c.ReserveBytes < 0:
		return errors.New("disk-reserve: must not be negative (0: none)")
	case c.Scheduler.Planners < 1:
		return errors.New("planners: at least 1")
	case c.Scheduler.PlanTimeout < time.Second:
		return errors.New("plan-timeout: at least 1s")
	case c.Git.FetchTimeout < 0, c.Git.LocalTimeout < 0:
		return errors.New("git-fetch-timeout, git-local-timeout: must not be negative")
	case c.LeaderTTL != 0 && c.LeaderTTL < time.Second:
		return errors.New("leader-ttl: at least 1s")
	}
	return c.Actions.Validate()
}

type Server struct {
	cfg     Config
	Store   *store.Store
	Sched   *scheduler.Scheduler
	Mirrors *gitmirror.Mirrors
	API     *api.Server
	Cache   *cache.Service
	Actions *actions.Service
	// Statuses sends builds' states to their forges (from the store's outbox).
	Statuses *forgestatus.Sender
	// Leader holds (or waits for) the lease under which the background
	// work runs, once across the servers sharing the database.
	Leader  *leader.Elector
	log     *slog.Logger
	ln      net.Listener
	reserve *reserve
	// logArchive holds archived builds' logs (ArchiveLogs).
	logArchive *logarchive.Archive
	// artifacts holds build artifacts' archives (ExpireArtifacts).
	artifacts blobstore.Store
	now       func() time.Time // log retention's clock (tests move it)
	// releaseDir unlocks the data dir (claimDataDir) at Close.
	releaseDir func()
	// hintPub sends wake-ups to the other servers (hints.go).
	hintPub *hintPublisher
}

func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := secureDataDir(cfg.DataDir, log); err != nil {
		return nil, err
	}
	// Webhook bodies being verified; anything left there is a crashed
	// server's.
	spoolDir := filepath.Join(cfg.DataDir, "tmp")
	if err := os.RemoveAll(spoolDir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	database := cfg.Database
	if database == "" {
		database = filepath.Join(cfg.DataDir, "kiln.db")
	}
	if !store.IsPostgres(database) {
		if err := createPrivate(database); err != nil {
			return nil, err
		}
	}
	var key []byte
	var err error
	if cfg.SecretKey != "" {
		key, err = secretbox.ParseKey(cfg.SecretKey)
	} else {
		key, err = secretbox.LoadOrCreateKey(filepath.Join(cfg.DataDir, "secret.key"))
	}
	if err != nil {
		return nil, err
	}
	box, err := secretbox.New(key)
	if err != nil {
		return nil, err
	}
	// Listen first: the public URL (handed to jobs for the cache service)
	// may depend on the port picked.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	hookBase := cfg.PublicURL // only one given is where forges deliver
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + ln.Addr().String()
	}
	st, err := store.Open(ctx, database, box)
	if err != nil {
		ln.Close()
		return nil, err
	}
	fail := func(err error) (*Server, error) { ln.Close(); st.Close(); return nil, err }
	res := newReserve(filepath.Join(cfg.DataDir, "reserve"), cfg.ReserveBytes, log.With("component", "reserve"))
	if ok, err := res.ensure(); err != nil || !ok {
		log.Warn("no disk reserve yet: not enough free space in the data directory (deletes may fail when the disk fills)", "bytes", cfg.ReserveBytes, "err", err)
	}
	st.SetReserve(res)
	mirrors, err := gitmirror.Open(filepath.Join(cfg.DataDir, "git"), cfg.Git)
	if err != nil {
		return fail(err)
	}
	cacheCfg := cfg.Cache
	cacheCfg.Dir = filepath.Join(cfg.DataDir, "cache")
	cacheCfg.SigningKey = deriveKey(key, "kiln cache service signing key v1")
	cacheCfg.PublicURL = cfg.PublicURL
	cacheCfg.Logger = log.With("component", "cache")
	if cfg.CacheS3.Enabled() {
		blobs, err := blobstore.NewS3(ctx, cfg.CacheS3)
		if err != nil {
			return fail(fmt.Errorf("cache-s3: %w", err))
		}
		cacheCfg.Blobs = blobs
	}
	if cfg.LogArchiveAfter > 0 && !cfg.CacheS3.Enabled() && st.Dialect() == "postgres" {
		// Any server may answer for an archived build's logs, and a
		// local archive is on the leader's disk only.
		return fail(errors.New("log-archive-after: on PostgreSQL, which other servers may share, the log archive must be in S3 (-cache-s3-*)"))
	}
	logArchive, err := openLogArchive(ctx, cfg, spoolDir)
	if err != nil {
		return fail(err)
	}
	artifacts, err := openArtifacts(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	if !cfg.CacheS3.Enabled() && st.Dialect() == "postgres" {
		log.Warn("artifacts: kept on this server's disk (DATA_DIR/artifacts), while other servers may share the database: a download that reaches another server finds nothing; use -cache-s3-* for artifacts in S3")
	}
	cacheSvc, err := cache.New(cacheCfg, st.DB())
	if err != nil {
		return fail(fmt.Errorf("cache service: %w", err))
	}
	m := metrics.New(func(ctx context.Context) (map[string]int, error) {
		counts, err := st.CountBuildsByStatus(ctx)
		out := map[string]int{}
		for _, s := range store.AllStatuses {
			out[string(s)] = counts[s]
		}
		return out, err
	})
	m.CountRunners(func(ctx context.Context) (map[string]int, error) {
		counts, err := st.CountRunnerJobs(ctx)
		out := map[string]int{}
		for _, state := range store.RunnerStates[:4] { // the live ones
			out[state] = counts[state]
		}
		return out, err
	})
	m.CountForgeStatuses(st.OldestPendingForgeStatus)
	fsCfg := cfg.ForgeStatuses
	fsCfg.PublicURL = cfg.PublicURL
	// The GitHub App that runs Actions jobs also writes check runs for
	// projects connected through its installations.
	// One set of the App's installation clients (each caching its token)
	// for check runs and for clones.
	var apps *github.Installations
	if gh := cfg.Actions.GitHub; gh.AppID != 0 && len(gh.PrivateKeyPEM) > 0 {
		apps = github.NewInstallations(github.Config{AppID: gh.AppID, PrivateKeyPEM: gh.PrivateKeyPEM, HTTPClient: gh.HTTPClient})
	}
	fsCfg.App = apps
	statuses := forgestatus.New(fsCfg, st, m, log.With("component", "forgestatus"))
	hintPub := newHintPublisher(st, log.With("component", "hints"))
	shared := st.Dialect() == "postgres" // other servers may share the database
	st.OnForgeStatus(func() {
		statuses.Wake()
		if shared {
			hintPub.Publish(store.HintOutbox, 0) // the leader's sender may be another server's
		}
	})
	sched := scheduler.New(cfg.Scheduler, st, mirrors, m, log.With("component", "scheduler"))
	sched.UseGitCredentials(gitauth.New(apps))
	if shared {
		sched.PublishJobsChanged(func() { hintPub.Publish(store.HintJobs, 0) })
	}
	m.CountAgents(sched.AgentStates)
	acts, err := actions.New(cfg.Actions, st, m, log.With("component", "actions"), sched.JobsChanged)
	if err != nil {
		return fail(err)
	}
	holder, releaseDir, err := claimDataDir(cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	// The lease this id may still hold is a dead process's (the data dir
	// was free): given up, so the next acquisition is a new tenure (a new
	// fencing token) and comes at once.
	if err := st.ReleaseLease(ctx, backgroundLease, holder); err != nil {
		releaseDir()
		return fail(err)
	}
	elector, err := leader.New(st, leader.Config{Name: backgroundLease, Holder: holder, TTL: cfg.LeaderTTL,
		Log: log.With("component", "leader"), Gauge: m.Leader.WithLabelValues(backgroundLease)})
	if err != nil {
		releaseDir()
		return fail(err)
	}
	log.Info("leader election: the background work runs on the holder of the lease", "lease", backgroundLease, "holder", holder, "ttl", cfg.LeaderTTL)
	var sso *auth.Provider
	if cfg.OIDC.Enabled() {
		oc := cfg.OIDC
		oc.RedirectURL = strings.TrimRight(cfg.PublicURL, "/") + "/auth/callback"
		if sso, err = auth.New(ctx, oc); err != nil {
			releaseDir()
			return fail(err)
		}
		log.Info("single sign-on", "issuer", oc.Issuer, "redirect_url", oc.RedirectURL)
	}
	a := api.New(api.Config{OIDC: sso, SessionTTL: cfg.SessionTTL, SecureCookies: strings.HasPrefix(cfg.PublicURL, "https://"),
		MaxWebhookBody: cfg.MaxWebhookBody, PublicURL: cfg.PublicURL, Health: diskHealth(cfg.DataDir, cfg.MinFreeBytes),
		AllowFileRemotes: cfg.Git.AllowFileRemotes, SpoolDir: spoolDir, MetricsToken: cfg.MetricsToken, TrustedProxies: cfg.TrustedProxies,
		GitHubApp:          cfg.Actions.GitHub.AppID != 0 && len(cfg.Actions.GitHub.PrivateKeyPEM) > 0,
		WebhookConcurrency: cfg.WebhookConcurrency, WebhookQueueWait: cfg.WebhookQueueWait, WebhookReadTimeout: cfg.WebhookReadTimeout,
		GitHubAppID: cfg.Actions.GitHub.AppID, GitHubAppKey: cfg.Actions.GitHub.PrivateKeyPEM, HookBaseURL: hookBase, LogArchive: logArchive,
		Artifacts: artifacts, ArtifactMaxBytes: cfg.ArtifactMaxBytes, ArtifactExpire: cmp.Or(cfg.ArtifactExpire, DefaultArtifactExpire)}, st, sched, m, log.With("component", "api"), cacheSvc, acts)
	if shared {
		a.PublishBuilds(func(id int64) { hintPub.Publish(store.HintBuild, id) })
	}
	return &Server{hintPub: hintPub, cfg: cfg, Store: st, Sched: sched, Mirrors: mirrors, API: a, Cache: cacheSvc, Actions: acts, Statuses: statuses, Leader: elector, log: log, ln: ln, reserve: res, logArchive: logArchive, artifacts: artifacts, now: time.Now, releaseDir: releaseDir}, nil
}

// overlaps reports whether one key prefix is within the other.
func overlaps(a, b string) bool {
	a, b = strings.Trim(a, "/"), strings.Trim(b, "/")
	return a == "" || b == "" || a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// openLogArchive opens the log archive, also when archiving is off, so
// that builds archived before are still read and pruned. Only a local one
// never used is not made (nil).
func openLogArchive(ctx context.Context, cfg Config, tmpDir string) (*logarchive.Archive, error) {
	if cfg.CacheS3.Enabled() {
		s3cfg := cfg.CacheS3
		s3cfg.Prefix = cfg.LogArchiveS3Prefix
		blobs, err := blobstore.NewS3(ctx, s3cfg)
		if err != nil {
			return nil, fmt.Errorf("log archive: %w", err)
		}
		return &logarchive.Archive{Blobs: blobs, TmpDir: tmpDir}, nil
	}
	dir := filepath.Join(cfg.DataDir, "log-archive")
	if _, err := os.Stat(dir); cfg.LogArchiveAfter <= 0 && errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	blobs, err := blobstore.NewDisk(dir)
	if err != nil {
		return nil, fmt.Errorf("log archive: %w", err)
	}
	return &logarchive.Archive{Blobs: blobs, TmpDir: tmpDir}, nil
}

// deriveKey derives a purpose-bound key from the secret key, so that one
// secret serves several uses without one use's key revealing another's.
func deriveKey(secret []byte, purpose string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(purpose))
	return mac.Sum(nil)
}

// Listen returns the listener New opened on the configured address.
func (s *Server) Listen() (net.Listener, error) { return s.ln, nil }

// PublicURL is the base URL agents and jobs reach this server at.
func (s *Server) PublicURL() string { return s.cfg.PublicURL }

// Serve runs the scheduler and serves HTTP on ln until ctx ends, then shuts
// down gracefully: the listener closes, waiting agents' claims end at once
// (empty), other requests in flight get up to ShutdownTimeout, and the
// scheduler's loops end before Serve returns. The store stays open until
// Close.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// A claim is held open up to 30s waiting for a job, a live log stream
	// as long as its client reads: at shutdown they are ended (a claim's
	// answer is then empty) rather than waited for or cut off.
	draining, drain := context.WithCancel(context.Background())
	defer drain()
	claimPath := protocol.Prefix + "/claim"
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == claimPath || strings.HasSuffix(r.URL.Path, "/logs/stream") {
			rctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			stop := context.AfterFunc(draining, cancel)
			defer stop()
			r = r.WithContext(rctx)
		}
		s.API.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	schedDone := make(chan struct{})
	// The loops use the store: Serve returns after them.
	go func() {
		defer close(schedDone)
		var wg sync.WaitGroup
		// On every server: the planner (each build planned under a lease
		// of its own), this server's store probe and disk reserve, and
		// the cache files of entries the leader evicted.
		wg.Go(func() { s.Sched.RunPlanner(ctx) })
		wg.Go(func() { s.healthLoop(ctx) })
		wg.Go(func() { s.evictLoop(ctx, false) })
		// Wake-ups to and from the other servers on the database.
		wg.Go(func() { s.hints(ctx) })
		// Once across the servers: on the leader lease's holder.
		wg.Go(func() { s.Leader.Run(ctx, s.background) })
		wg.Wait()
	}()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		<-schedDone
		return err
	}
	bound := s.cfg.ShutdownTimeout
	if bound <= 0 {
		bound = 10 * time.Second
	}
	s.log.Info("shutdown: listener closed; waiting for requests in flight", "timeout", bound)
	drain()
	shutCtx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		s.log.Warn("shutdown: requests still in flight were cut off", "err", err)
		_ = hs.Close()
	}
	<-schedDone
	s.log.Info("shutdown: HTTP server and scheduler stopped")
	return nil
}

func (s *Server) Close() error {
	s.ln.Close()
	err := s.Store.Close()
	s.log.Info("shutdown: store closed")
	s.releaseDir()
	return err
}

// backgroundLease names the leader lease of the background work.
const backgroundLease = "background"

// background is the work that runs once across the servers sharing a
// database, on the holder of the leader lease, until ctx ends (shutdown,
// or the lease lost). Each loop is also safe when two servers run it for
// a moment (a lease lost is noticed within a fraction of its TTL): their
// writes are conditional.
func (s *Server) background(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.Sched.RunReaper(ctx) })
	wg.Go(func() { s.Actions.Run(ctx) }) // reconciler, reaper, warm runners
	wg.Go(func() { s.Statuses.Run(ctx) })
	wg.Go(func() { s.retentionLoop(ctx) })
	wg.Go(func() { s.artifactsLoop(ctx) })
	wg.Go(func() { s.evictLoop(ctx, true) })
	wg.Wait()
}

// evictLoop runs the cache service's eviction (the leader: every rule,
// entries and files) or its removal of files no entry owns (every
// server: the leader evicts entries, their files may be here) now and
// then periodically.
func (s *Server) evictLoop(ctx context.Context, leading bool) {
	every := s.cfg.EvictEvery
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if !leading {
			if n, err := s.Cache.RemoveOrphans(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("cache: removing files no entry owns", "err", err)
			} else if n > 0 {
				s.log.Debug("cache: removed files no entry owns", "files", n)
			}
		} else if st, err := s.Cache.Evict(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("cache eviction", "err", err)
		} else if err == nil {
			s.log.Debug("cache eviction", "stats", st)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// EnsureAdminToken creates an admin token on first start (when none exists),
// writes it to DataDir/admin-token (mode 0600) for the local CLI, and
// returns it. On later starts it returns the saved token, if still valid.
func (s *Server) EnsureAdminToken(ctx context.Context) (token string, created bool, err error) {
	path := filepath.Join(s.cfg.DataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		t := strings.TrimSpace(string(b))
		if tok, err := s.Store.Authenticate(ctx, t); err == nil && tok.Kind == store.TokenAdmin {
			return t, false, nil
		}
	}
	n, err := s.Store.CountTokens(ctx, store.TokenAdmin)
	if err != nil {
		return "", false, err
	}
	if n > 0 {
		return "", false, nil // admins exist; their tokens are theirs to keep
	}
	_, plain, err := s.Store.CreateToken(ctx, "admin", store.TokenAdmin)
	if err != nil {
		return "", false, err
	}
	if err := os.WriteFile(path, []byte(plain+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return plain, true, nil
}

// LocalAgentToken returns the agent token `kiln up` gives its in-process
// agent, kept in DataDir/agent-token and created when missing or revoked.
func (s *Server) LocalAgentToken(ctx context.Context) (string, error) {
	path := filepath.Join(s.cfg.DataDir, "agent-token")
	if b, err := os.ReadFile(path); err == nil {
		t := strings.TrimSpace(string(b))
		if tok, err := s.Store.Authenticate(ctx, t); err == nil && tok.Kind == store.TokenAgent {
			return t, nil
		}
	}
	_, plain, err := s.Store.CreateToken(ctx, "local-agent", store.TokenAgent)
	if err != nil {
		return "", err
	}
	return plain, os.WriteFile(path, []byte(plain+"\n"), 0o600)
}
