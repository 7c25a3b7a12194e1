package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/server"
)

// serverOptions are the control plane's flags: a server.Config, and the
// files read once the flags are parsed.
type serverOptions struct {
	cfg              server.Config
	appKeyFile       string
	checkRunLogLines int
	oidcSecretFile   string
	oidcScopes       string
}

// serverFlags binds the control plane's flags to a server.Config.
func serverFlags(fs *flag.FlagSet) *serverOptions {
	o := &serverOptions{cfg: server.DefaultConfig()}
	cfg := &o.cfg
	fs.StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), "directory for the database, secret key, git mirrors and tokens ($KILN_HOME)")
	fs.StringVar(&cfg.Database, "database", os.Getenv("KILN_DATABASE"), "the store: a postgres:// URL (PostgreSQL; several servers may share it) or a SQLite file (default: DATA_DIR/kiln.db) ($KILN_DATABASE)")
	fs.StringVar(&cfg.Listen, "listen", envOr("KILN_LISTEN", cfg.Listen), "address to serve the API, webhooks and agent protocol on")
	fs.StringVar(&cfg.SecretKey, "secret-key", os.Getenv("KILN_SECRET_KEY"), "64 hex chars encrypting secrets at rest (default: DATA_DIR/secret.key)")
	fs.Int64Var(&cfg.MaxWebhookBody, "max-webhook-body", cfg.MaxWebhookBody, "largest webhook body accepted, in bytes")
	fs.IntVar(&cfg.WebhookConcurrency, "webhook-concurrency", cfg.WebhookConcurrency, "webhook bodies read and verified at once; beyond it a delivery waits up to 10s, then gets 503")
	fs.DurationVar(&cfg.Scheduler.Lease, "lease", cfg.Scheduler.Lease, "how long a job's lease lives without a heartbeat")
	fs.IntVar(&cfg.Scheduler.MaxAttempts, "max-attempts", cfg.Scheduler.MaxAttempts, "attempts per job when attempts end in error (infrastructure faults)")
	fs.DurationVar(&cfg.Scheduler.RetryDelay, "retry-delay", cfg.Scheduler.RetryDelay, "pause before retrying an errored attempt (times the attempt number)")
	fs.IntVar(&cfg.Scheduler.QuarantineAfter, "quarantine-after", cfg.Scheduler.QuarantineAfter, "consecutive attempts ended in error (infrastructure) that quarantine an agent (0: never)")
	fs.DurationVar(&cfg.Scheduler.QuarantineFor, "quarantine-for", cfg.Scheduler.QuarantineFor, "first quarantine of a broken agent; doubled per further error, up to -quarantine-max")
	fs.DurationVar(&cfg.Scheduler.QuarantineMax, "quarantine-max", cfg.Scheduler.QuarantineMax, "longest quarantine of a broken agent")
	fs.DurationVar(&cfg.Scheduler.RetryElsewhere, "retry-elsewhere", cfg.Scheduler.RetryElsewhere, "how long a job whose attempt ended in error waits for another agent than the one it failed on")
	fs.DurationVar(&cfg.Scheduler.AffinityWait, "affinity-wait", cfg.Scheduler.AffinityWait, "how long a job with sticky caches waits for an agent holding its project's volumes")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM, how long the server waits for requests in flight before it closes them")
	fs.IntVar(&cfg.Scheduler.Planners, "planners", cfg.Scheduler.Planners, "builds planned at once (their .kiln.yml read), never two of one project")
	fs.DurationVar(&cfg.Scheduler.PlanTimeout, "plan-timeout", cfg.Scheduler.PlanTimeout, "longest the planning of one build may take, git included")
	fs.IntVar(&cfg.Scheduler.ProjectMaxRunning, "project-max-running", cfg.Scheduler.ProjectMaxRunning, "jobs one project may run at once, unless it sets its own cap (0: no cap); claims are fair across projects either way")
	fs.IntVar(&cfg.Scheduler.MaxJobsPerBuild, "max-jobs-per-build", cfg.Scheduler.MaxJobsPerBuild, "most jobs one .kiln.yml may define; past it the build fails with a located error")
	gitFlags(fs, &cfg.Git)
	fs.StringVar(&cfg.PublicURL, "public-url", "", "base `URL` agents, jobs and forges reach this server at: forge statuses link to it, and onboarding (kiln project add -github …) gives forges URL/hooks/… (default: http:// + the listen address, and no webhook is created)")
	fs.StringVar(&cfg.MetricsToken, "metrics-token", os.Getenv("KILN_METRICS_TOKEN"), "bearer token /metrics requires, e.g. from a Prometheus scrape config (default: none, /metrics is open) ($KILN_METRICS_TOKEN)")
	fs.DurationVar(&cfg.Cache.MaxAge, "cache-max-age", cfg.Cache.MaxAge, "evict cache entries unused for this long")
	fs.Int64Var(&cfg.Cache.ProjectBudgetBytes, "cache-project-budget", cfg.Cache.ProjectBudgetBytes, "bytes of cache one project may hold (least recently used evicted first)")
	fs.Float64Var(&cfg.Cache.DiskHighWater, "cache-disk-high-water", cfg.Cache.DiskHighWater, "share of the cache's disk that may be in use; above it entries are evicted and uploads refused")
	fs.StringVar(&cfg.CacheS3.Endpoint, "cache-s3-endpoint", "", "keep finalized cache archives in this S3-compatible store, host[:port] or https://host[:port] (default: on local disk); credentials from $KILN_S3_ACCESS_KEY/$KILN_S3_SECRET_KEY or $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY")
	fs.StringVar(&cfg.CacheS3.Bucket, "cache-s3-bucket", "", "bucket of the cache's archives (must exist)")
	fs.StringVar(&cfg.CacheS3.Region, "cache-s3-region", "", "region of the bucket (default: us-east-1)")
	fs.StringVar(&cfg.CacheS3.Prefix, "cache-s3-prefix", "kiln-cache", "key prefix of the cache's archives in the bucket; the cache owns every key under it")
	fs.BoolVar(&cfg.CacheS3.Insecure, "cache-s3-insecure", false, "speak plain http to the S3 endpoint (a local test server)")
	fs.Var(daysValue{&cfg.LogRetention.MaxAge}, "log-retention", "delete a finished build's logs after this long, e.g. 30d (0: keep forever; a project may set its own)")
	fs.Var(daysValue{&cfg.LogArchiveAfter}, "log-archive-after", "move a finished build's logs out of the database into the log archive after this long, e.g. 1d or 24h (0: never); the archive is DATA_DIR/log-archive, or with -cache-s3-* the cache's bucket under -log-archive-s3-prefix")
	fs.StringVar(&cfg.LogArchiveS3Prefix, "log-archive-s3-prefix", cfg.LogArchiveS3Prefix, "key prefix of the log archive in the cache's S3 bucket (with -cache-s3-*); the archive owns every key under it")
	fs.Func("artifacts-max-bytes", "most bytes of files one job's artifacts may hold, e.g. 1g or 500m (0: no limit); past it the job fails and nothing is uploaded (default 1g)", func(v string) error {
		if strings.TrimSpace(v) == "0" {
			cfg.ArtifactMaxBytes = 0
			return nil
		}
		n, err := parseBytes(v)
		cfg.ArtifactMaxBytes = n
		return err
	})
	fs.Var(daysValue{&cfg.ArtifactExpire}, "artifacts-expire", "keep a build's artifacts this long unless its pipeline says (expire-in), e.g. 30d or 12h")
	fs.StringVar(&cfg.ArtifactsS3Prefix, "artifacts-s3-prefix", cfg.ArtifactsS3Prefix, "key prefix of build artifacts in the cache's S3 bucket (with -cache-s3-*: artifacts are kept there, downloads redirected to presigned URLs); artifacts own every key under it")
	fs.Int64Var(&cfg.LogRetention.MaxBytes, "log-max-bytes", cfg.LogRetention.MaxBytes, "bytes of logs each project keeps; older builds' logs are deleted first (0: no limit; a project may set its own)")
	fs.Int64Var(&cfg.ReserveBytes, "disk-reserve", cfg.ReserveBytes, "bytes kept in DATA_DIR/reserve and released when the disk is full, so deletes can still run (0: none)")
	fs.DurationVar(&cfg.LeaderTTL, "leader-ttl", cfg.LeaderTTL, "life of the leader lease without a renewal: servers sharing a database run the background work (reapers, GitHub reconciler, warm runners, cache eviction, forge statuses, log retention) on one of them, and another takes it over within this long when it dies (at once when it stops)")
	fs.IntVar(&o.checkRunLogLines, "check-run-log-lines", 20, "last log lines of a failed step shown in its GitHub check run, to whoever can read the repository (0: none)")
	fs.Func("trusted-proxies", "`CIDR,...` of reverse proxies whose X-Forwarded-For names the client the audit log records (default: none; the TCP peer is the client)", func(v string) error {
		p, err := api.ParseTrustedProxies(v)
		cfg.TrustedProxies = p
		return err
	})
	githubFlags(fs, o)
	oidcFlags(fs, o)
	return o
}

// oidcFlags binds single sign-on (docs/auth.md). The client secret is
// read from the environment or a file, never from the command line.
func oidcFlags(fs *flag.FlagSet, o *serverOptions) {
	c := &o.cfg.OIDC
	fs.StringVar(&c.Issuer, "oidc-issuer", os.Getenv("KILN_OIDC_ISSUER"), "sign users in at this OpenID Connect provider's issuer `URL`; its redirect URL is PUBLIC_URL/auth/callback (default: none, tokens only) ($KILN_OIDC_ISSUER)")
	fs.StringVar(&c.ClientID, "oidc-client-id", os.Getenv("KILN_OIDC_CLIENT_ID"), "Kiln's client id at the OpenID provider ($KILN_OIDC_CLIENT_ID)")
	fs.StringVar(&o.oidcSecretFile, "oidc-client-secret-file", "", "file holding the client's secret (default: $KILN_OIDC_CLIENT_SECRET)")
	fs.StringVar(&c.GroupsClaim, "oidc-groups-claim", "groups", "the ID token's claim listing the user's groups, which group role bindings match")
	fs.StringVar(&o.oidcScopes, "oidc-scopes", "", "scopes asked for besides openid, comma-separated (default: email,profile; add groups where the provider gives the groups claim only for it, e.g. Dex)")
	fs.DurationVar(&o.cfg.SessionTTL, "session-ttl", 12*time.Hour, "life of a signed-in session (browser or kiln login)")
}

// gitFlags binds the git deadlines and the file:// switch, shared by the
// server and the agent (kiln up binds them once, for both).
func gitFlags(fs *flag.FlagSet, g *gitmirror.Config) {
	fs.DurationVar(&g.FetchTimeout, "git-fetch-timeout", g.FetchTimeout, "deadline of each git fetch from a repository; its processes are killed at it")
	fs.DurationVar(&g.LocalTimeout, "git-local-timeout", g.LocalTimeout, "deadline of each local git command (reading a mirror, a job's checkout)")
	fs.BoolVar(&g.AllowFileRemotes, "allow-file-remotes", g.AllowFileRemotes, "allow file:// clone URLs (local paths are always allowed)")
}

// githubFlags binds the GitHub Actions connection and timing (docs/actions.md).
func githubFlags(fs *flag.FlagSet, o *serverOptions) {
	a := &o.cfg.Actions
	fs.StringVar(&a.GitHub.BaseURL, "github-api-url", os.Getenv("KILN_GITHUB_API_URL"), "GitHub REST API root: empty for api.github.com, https://HOST/api/v3/ for GitHub Enterprise Server ($KILN_GITHUB_API_URL)")
	fs.Int64Var(&a.GitHub.AppID, "github-app-id", 0, "GitHub App id (each pool names its installation)")
	fs.StringVar(&o.appKeyFile, "github-app-key", os.Getenv("KILN_GITHUB_APP_KEY"), "file holding the GitHub App's private key (PEM) ($KILN_GITHUB_APP_KEY)")
	fs.StringVar(&a.GitHub.Token, "github-token", os.Getenv("KILN_GITHUB_TOKEN"), "GitHub token instead of an App: fine-grained with Administration (repository runners) or Self-hosted runners (organization) write, Actions read ($KILN_GITHUB_TOKEN)")
	fs.StringVar(&a.GitHub.WebhookSecret, "github-webhook-secret", os.Getenv("KILN_GITHUB_WEBHOOK_SECRET"), "secret of the workflow_job webhook sent to /hooks/github-actions ($KILN_GITHUB_WEBHOOK_SECRET)")
	fs.DurationVar(&a.ReconcileInterval, "github-reconcile-interval", a.ReconcileInterval, "how often queued GitHub jobs are listed to repair missed webhooks")
	fs.DurationVar(&a.ReapInterval, "github-reap-interval", a.ReapInterval, "how often GitHub's runners are checked against Kiln's runner jobs")
	fs.DurationVar(&a.BootstrapTimeout, "runner-bootstrap-timeout", a.BootstrapTimeout, "a runner not online this long after its sandbox started is removed")
	fs.DurationVar(&a.IdleTimeout, "runner-idle-timeout", a.IdleTimeout, "an online runner idle this long is removed")
	fs.DurationVar(&a.MaxLifetime, "runner-max-lifetime", a.MaxLifetime, "a runner older than this is removed once not busy")
}

// config returns the server configuration, with the files the flags name read.
func (o *serverOptions) config() (server.Config, error) {
	cfg := o.cfg
	cfg.ForgeStatuses.LogLines = o.checkRunLogLines
	if o.checkRunLogLines <= 0 {
		cfg.ForgeStatuses.LogLines = -1 // none
	}
	if cfg.CacheS3.Enabled() {
		if err := cfg.CacheS3.CredentialsFromEnv(os.Getenv); err != nil {
			return cfg, fmt.Errorf("cache-s3: %w", err)
		}
	}
	if cfg.OIDC.Enabled() {
		cfg.OIDC.ClientSecret = os.Getenv("KILN_OIDC_CLIENT_SECRET")
		if o.oidcSecretFile != "" {
			b, err := os.ReadFile(o.oidcSecretFile)
			if err != nil {
				return cfg, fmt.Errorf("oidc-client-secret-file: %w", err)
			}
			cfg.OIDC.ClientSecret = strings.TrimSpace(string(b))
		}
		if cfg.OIDC.ClientSecret == "" {
			return cfg, errors.New("oidc: the client secret is missing: set $KILN_OIDC_CLIENT_SECRET or -oidc-client-secret-file")
		}
		if o.oidcScopes != "" {
			cfg.OIDC.Scopes = []string{}
			for _, sc := range strings.Split(o.oidcScopes, ",") {
				if sc = strings.TrimSpace(sc); sc != "" {
					cfg.OIDC.Scopes = append(cfg.OIDC.Scopes, sc)
				}
			}
		}
	}
	if cfg.SessionTTL <= 0 {
		return cfg, errors.New("session-ttl: want a positive duration, e.g. 12h")
	}
	if o.appKeyFile != "" {
		key, err := os.ReadFile(o.appKeyFile)
		if err != nil {
			return cfg, fmt.Errorf("github-app-key: %w", err)
		}
		cfg.Actions.GitHub.PrivateKeyPEM = key
	}
	return cfg, nil
}

func newLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln server", flag.ContinueOnError)
	so := serverFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := so.config()
	if err != nil {
		return err
	}
	log := newLogger()
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := srv.Listen()
	if err != nil {
		return err
	}
	announce(ctx, srv, ln.Addr().String(), cfg.DataDir)
	return srv.Serve(ctx, ln)
}

// announce prints where Kiln listens and, on first start, the admin token.
func announce(ctx context.Context, srv *server.Server, addr, dataDir string) {
	tok, created, err := srv.EnsureAdminToken(ctx)
	fmt.Printf("kiln %s listening on http://%s\n", version, addr)
	fmt.Printf("  dashboard:  http://%s/ (sign in with an admin token, or through single sign-on when -oidc-issuer is set)\n", addr)
	fmt.Printf("  data dir:   %s\n", dataDir)
	fmt.Printf("  webhooks:   http://%s/hooks/{github,gitlab,gitea}/PROJECT\n", addr)
	if srv.Actions.WebhookSecret() != "" {
		fmt.Printf("  actions:    http://%s/hooks/github-actions (workflow_job)\n", addr)
	}
	fmt.Printf("  metrics:    http://%s/metrics\n", addr)
	switch {
	case err != nil:
		fmt.Printf("  admin token: error: %v\n", err)
	case created:
		fmt.Printf("  admin token (first start; also saved to %s/admin-token):\n    %s\n", dataDir, tok)
	case tok != "":
		fmt.Printf("  admin token: in %s/admin-token\n", dataDir)
	}
}
