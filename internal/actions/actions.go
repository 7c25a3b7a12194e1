// Package actions runs GitHub Actions jobs on ephemeral runners, each in a
// fresh Kiln sandbox, through Kiln's one engine: a queued workflow_job
// whose runs-on labels a pool serves becomes an ordinary Kiln build with
// one "runner job" (store.Job.Pool set), which the scheduler leases to an
// agent like any other job; the job's one step starts the runner. There is
// no second execution path.
//
// What this package adds around that engine:
//
//   - HandleWorkflowJob: a verified workflow_job delivery moves the job's
//     recorded state forward (store.RecordWorkflowJob: duplicates and steps
//     back change nothing) and, for a newly queued job, makes its runner job.
//   - Launch, called by the agent protocol when an agent claims a runner
//     job: check with GitHub that the job is still queued, then ask for a
//     just-in-time runner configuration (one runner name per launch, so a
//     retried attempt never adds a second runner), delivered to the agent
//     only as a secret environment variable.
//   - Reconcile: webhooks are hints; every interval it lists the queued
//     jobs of the repositories Kiln serves and repairs what webhooks
//     missed, and marks jobs GitHub says are done.
//   - Warm: pools with warm > 0 keep that many idle runners registered
//     ahead of any job (warm runner jobs); a queued job waits a grace for
//     one of them instead of getting its own runner at once.
//   - Reap: runners that never come online, stay idle, or outlive their
//     lifetime are removed from GitHub and their sandboxes destroyed
//     (through the job's cancel path); orphans both ways are swept.
//
// Every call to GitHub goes through internal/github, which never retries:
// this package decides, with github.Retryable and github.Backoff, and
// watches the rate limit.
package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/store"
)

// Connection says how Kiln reaches GitHub: as a GitHub App (AppID and
// PrivateKeyPEM; each pool names its installation) or with a token.
type Connection struct {
	// BaseURL is the REST API root ("" means api.github.com; GitHub
	// Enterprise Server is https://HOST/api/v3/).
	BaseURL       string
	AppID         int64
	PrivateKeyPEM []byte
	Token         string
	// WebhookSecret verifies deliveries to /hooks/github-actions.
	WebhookSecret string
	// HTTPClient carries the API requests (nil: a 30s-timeout client).
	HTTPClient *http.Client
}

// Configured reports whether Kiln can call GitHub at all.
func (c Connection) Configured() bool { return c.AppID != 0 || c.Token != "" }

// App reports whether Kiln authenticates as a GitHub App.
func (c Connection) App() bool { return c.AppID != 0 }

// Config is the Actions service's settings. Zero durations take the
// defaults of DefaultConfig.
type Config struct {
	GitHub Connection
	// ReconcileInterval is how often the reconciler lists queued jobs.
	ReconcileInterval time.Duration
	// ReapInterval is how often the reaper lists runners.
	ReapInterval time.Duration
	// BootstrapTimeout: a runner job running this long whose runner never
	// came online (or that GitHub does not know) is ended.
	BootstrapTimeout time.Duration
	// IdleTimeout: an online runner idle this long is removed.
	IdleTimeout time.Duration
	// MaxLifetime: a runner job running this long is ended once its runner
	// is not busy.
	MaxLifetime time.Duration
	// MinRateRemaining: below this many requests left in GitHub's hourly
	// quota, the reconciler and the reaper wait for the reset, keeping the
	// rest for launches.
	MinRateRemaining int
	// MaxAttempts bounds the attempts of a runner job that end in error
	// (GitHub's rate limit does not count).
	MaxAttempts int
	// MaxLaunches bounds the runner jobs started for one GitHub job
	// (the first, plus the reconciler's relaunches).
	MaxLaunches int
	// MaxChecks bounds the single-job look-ups of one reconciler pass per
	// repository.
	MaxChecks int
	// RepoWindow: repositories named by a webhook this recently are
	// reconciled (with organization pools).
	RepoWindow time.Duration
	// WarmGrace: a queued job expected to be taken by an idle warm runner
	// gets a runner of its own if it is still queued this long after.
	WarmGrace time.Duration
	// WarmInterval is how often warm runners are topped up and trimmed,
	// and jobs whose WarmGrace ended get their own runner.
	WarmInterval time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// DefaultConfig is GARM's and actions-runner-controller's usual timing.
func DefaultConfig() Config {
	return Config{
		ReconcileInterval: 30 * time.Second,
		ReapInterval:      30 * time.Second,
		BootstrapTimeout:  5 * time.Minute,
		IdleTimeout:       10 * time.Minute,
		MaxLifetime:       6 * time.Hour,
		MinRateRemaining:  100,
		MaxAttempts:       3,
		MaxLaunches:       3,
		MaxChecks:         50,
		RepoWindow:        24 * time.Hour,
		WarmGrace:         30 * time.Second,
		WarmInterval:      10 * time.Second,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.ReconcileInterval, d.ReconcileInterval)
	set(&c.ReapInterval, d.ReapInterval)
	set(&c.BootstrapTimeout, d.BootstrapTimeout)
	set(&c.IdleTimeout, d.IdleTimeout)
	set(&c.MaxLifetime, d.MaxLifetime)
	set(&c.RepoWindow, d.RepoWindow)
	set(&c.WarmGrace, d.WarmGrace)
	set(&c.WarmInterval, d.WarmInterval)
	for _, p := range []struct {
		v   *int
		def int
	}{{&c.MaxAttempts, d.MaxAttempts}, {&c.MaxLaunches, d.MaxLaunches}, {&c.MaxChecks, d.MaxChecks}} {
		if *p.v <= 0 {
			*p.v = p.def
		}
	}
	if c.MinRateRemaining < 0 {
		c.MinRateRemaining = 0
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks the GitHub connection, when one is set.
func (c Config) Validate() error {
	if !c.GitHub.Configured() {
		switch {
		case len(c.GitHub.PrivateKeyPEM) > 0:
			return errors.New("github-app-key: set -github-app-id too")
		case c.GitHub.WebhookSecret != "":
			return errors.New("github-webhook-secret: set -github-app-id and -github-app-key, or -github-token, too (Kiln must call GitHub to start runners)")
		}
		return nil
	}
	gc := c.GitHub.clientConfig(1)
	if err := gc.Validate(); err != nil {
		return err
	}
	if c.GitHub.WebhookSecret != "" && len(c.GitHub.WebhookSecret) < 16 {
		return errors.New("github-webhook-secret: at least 16 characters")
	}
	return nil
}

// clientConfig is the internal/github configuration for an installation.
func (c Connection) clientConfig(installation int64) github.Config {
	gc := github.Config{BaseURL: c.BaseURL, HTTPClient: c.HTTPClient}
	if c.App() {
		gc.AppID, gc.PrivateKeyPEM, gc.InstallationID = c.AppID, c.PrivateKeyPEM, installation
	} else {
		gc.Token = c.Token
	}
	return gc
}

// Service is the Actions side of the control plane. Safe for concurrent use.
type Service struct {
	cfg     Config
	store   *store.Store
	metrics *metrics.Metrics
	log     *slog.Logger
	wake    func() // the scheduler's JobsChanged: a runner job was queued or canceled

	mu      sync.Mutex
	clients map[int64]*github.Client // by installation (0 with a token)
}

// New makes the service. wake is called when runner jobs were queued or
// ended (the scheduler's JobsChanged); it may be nil.
func New(cfg Config, st *store.Store, m *metrics.Metrics, log *slog.Logger, wake func()) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if wake == nil {
		wake = func() {}
	}
	return &Service{cfg: cfg.withDefaults(), store: st, metrics: m, log: log, wake: wake, clients: map[int64]*github.Client{}}, nil
}

// Configured reports whether a GitHub connection is set.
func (s *Service) Configured() bool { return s.cfg.GitHub.Configured() }

// WebhookSecret is the secret that verifies Actions webhook deliveries
// ("" when none is set: every delivery is refused).
func (s *Service) WebhookSecret() string { return s.cfg.GitHub.WebhookSecret }

func (s *Service) now() time.Time { return s.cfg.Now() }

// errNotConfigured ends a launch when Kiln has no GitHub connection.
var errNotConfigured = errors.New("no GitHub connection is configured: start kiln with -github-token, or -github-app-id and -github-app-key")

// client returns the GitHub client for an installation (the one client,
// with a token). Clients are kept: each caches its installation token.
func (s *Service) client(installation int64) (*github.Client, error) {
	if !s.cfg.GitHub.Configured() {
		return nil, errNotConfigured
	}
	if !s.cfg.GitHub.App() {
		installation = 0
	} else if installation <= 0 {
		return nil, fmt.Errorf("the pool has no installation_id, which a GitHub App needs")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[installation]; ok {
		return c, nil
	}
	gc := s.cfg.GitHub.clientConfig(installation)
	gc.Now = s.cfg.Now
	c, err := github.New(gc)
	if err != nil {
		return nil, err
	}
	s.clients[installation] = c
	return c, nil
}

// rateWait is how long to hold off calling GitHub through c: until the
// quota resets when fewer than min requests are left, else 0.
func (s *Service) rateWait(c *github.Client, min int) time.Duration {
	remaining, reset := c.RateLimit()
	if remaining < 0 || remaining >= max(min, 1) || reset.IsZero() {
		return 0
	}
	return max(reset.Sub(s.now()), 0)
}

// Run runs the reconciler and the reaper until ctx ends. Without a GitHub
// connection it returns at once.
func (s *Service) Run(ctx context.Context) {
	if !s.Configured() {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.loop(ctx, "reconcile", s.cfg.ReconcileInterval, s.Reconcile) })
	wg.Go(func() { s.loop(ctx, "reap", s.cfg.ReapInterval, s.Reap) })
	wg.Go(func() { s.loop(ctx, "warm", s.cfg.WarmInterval, s.Warm) })
	wg.Wait()
}

// loop runs pass every interval; after a failure it waits the longer of
// the interval and github.Backoff (a rate limit's wait is honoured), and a
// pass may ask for a longer wait itself (the quota is nearly spent).
func (s *Service) loop(ctx context.Context, name string, interval time.Duration, pass func(context.Context) (time.Duration, error)) {
	failures := 0
	for {
		wait, err := pass(ctx)
		if ctx.Err() != nil {
			return
		}
		d := interval
		if err != nil {
			s.log.Warn("actions: "+name+" failed", "err", err, "failures", failures+1)
			d = max(d, github.Backoff(err, failures))
			failures++
		} else {
			failures = 0
		}
		d = max(d, wait)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
