// Package server wires the control plane: store, scheduler, API and metrics,
// from one Config. `kiln server`, `kiln up` and the end-to-end tests all
// start it through here.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/scheduler"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

type Config struct {
	// DataDir holds the database, the secret key, git mirrors and tokens.
	DataDir string
	// Listen is the address to serve on, e.g. 127.0.0.1:8080.
	Listen string
	// SecretKey (64 hex characters) encrypts secrets at rest; when empty,
	// DataDir/secret.key is used (created on first start).
	SecretKey      string
	MaxWebhookBody int64
	Scheduler      scheduler.Config
}

func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080", MaxWebhookBody: 25 << 20, Scheduler: scheduler.DefaultConfig()}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("data-dir: required")
	case c.MaxWebhookBody <= 0:
		return errors.New("max-webhook-body: must be positive")
	case c.Scheduler.Lease < time.Second:
		return errors.New("lease: at least 1s")
	case c.Scheduler.MaxAttempts < 1:
		return errors.New("max-attempts: at least 1")
	}
	return nil
}

type Server struct {
	cfg     Config
	Store   *store.Store
	Sched   *scheduler.Scheduler
	Mirrors *gitmirror.Mirrors
	API     *api.Server
	log     *slog.Logger
}

func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
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
	st, err := store.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "kiln.db"), box)
	if err != nil {
		return nil, err
	}
	mirrors, err := gitmirror.New(filepath.Join(cfg.DataDir, "git"))
	if err != nil {
		st.Close()
		return nil, err
	}
	m := metrics.New(func(ctx context.Context) (map[string]int, error) {
		counts, err := st.CountBuildsByStatus(ctx)
		out := map[string]int{}
		for _, s := range store.AllStatuses {
			out[string(s)] = counts[s]
		}
		return out, err
	})
	sched := scheduler.New(cfg.Scheduler, st, mirrors, m, log.With("component", "scheduler"))
	a := api.New(api.Config{MaxWebhookBody: cfg.MaxWebhookBody}, st, sched, m, log.With("component", "api"))
	return &Server{cfg: cfg, Store: st, Sched: sched, Mirrors: mirrors, API: a, log: log}, nil
}

// Listen opens the configured address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	return ln, nil
}

// Serve runs the scheduler and serves HTTP on ln until ctx ends, then shuts
// down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.API, ReadHeaderTimeout: 10 * time.Second}
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); s.Sched.Run(ctx) }()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		<-schedDone
		return err
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutCtx)
	<-schedDone
	return nil
}

func (s *Server) Close() error { return s.Store.Close() }

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
