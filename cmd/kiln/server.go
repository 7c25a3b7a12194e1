package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/kilnci/kiln/internal/server"
)

// serverFlags binds the control plane's flags to a server.Config.
func serverFlags(fs *flag.FlagSet) *server.Config {
	cfg := server.DefaultConfig()
	fs.StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), "directory for the database, secret key, git mirrors and tokens ($KILN_HOME)")
	fs.StringVar(&cfg.Listen, "listen", envOr("KILN_LISTEN", cfg.Listen), "address to serve the API, webhooks and agent protocol on")
	fs.StringVar(&cfg.SecretKey, "secret-key", os.Getenv("KILN_SECRET_KEY"), "64 hex chars encrypting secrets at rest (default: DATA_DIR/secret.key)")
	fs.Int64Var(&cfg.MaxWebhookBody, "max-webhook-body", cfg.MaxWebhookBody, "largest webhook body accepted, in bytes")
	fs.DurationVar(&cfg.Scheduler.Lease, "lease", cfg.Scheduler.Lease, "how long a job's lease lives without a heartbeat")
	fs.IntVar(&cfg.Scheduler.MaxAttempts, "max-attempts", cfg.Scheduler.MaxAttempts, "attempts per job when attempts end in error (infrastructure faults)")
	fs.DurationVar(&cfg.Scheduler.RetryDelay, "retry-delay", cfg.Scheduler.RetryDelay, "pause before retrying an errored attempt (times the attempt number)")
	return &cfg
}

func newLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln server", flag.ContinueOnError)
	cfg := serverFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger()
	srv, err := server.New(ctx, *cfg, log)
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
	fmt.Printf("  data dir:   %s\n", dataDir)
	fmt.Printf("  webhooks:   http://%s/hooks/{github,gitlab,gitea}/PROJECT\n", addr)
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
