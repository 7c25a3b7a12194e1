package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// setup is one of the control planes measured.
type setup struct {
	name     string
	postgres bool
	replicas int
}

// cluster is a setup running: its servers in this process, each with a
// data dir of its own, all on one database (as the end-to-end failover
// tests run replicas), and a round-robin over their URLs.
type cluster struct {
	servers  []*server.Server
	urls     []string
	admin    string
	database string // "" for SQLite (DATA_DIR/kiln.db)
	next     atomic.Uint64
	stops    []func()
	drop     func() error
}

// secretKey is every replica's: they decrypt each other's rows (the
// project's webhook secret).
var secretKey = strings.Repeat("c7", 32)

// start runs s's servers under dir, on a fresh database: SQLite in the
// first server's data dir, or a new database on the PostgreSQL server
// pgAdmin names (dropped at stop).
func start(ctx context.Context, s setup, pgAdmin, dir string, log *slog.Logger) (*cluster, error) {
	c := &cluster{}
	if s.postgres {
		db, drop, err := storetest.NewPostgresDatabase(ctx, pgAdmin, "ctlbench_")
		if err != nil {
			return nil, err
		}
		c.database, c.drop = db, drop
	}
	for i := range s.replicas {
		cfg := server.DefaultConfig()
		cfg.DataDir, cfg.Listen = filepath.Join(dir, fmt.Sprintf("server-%d", i)), "127.0.0.1:0"
		cfg.Database, cfg.SecretKey = c.database, secretKey
		srv, err := server.New(ctx, cfg, log.With("replica", i))
		if err != nil {
			c.stop()
			return nil, err
		}
		ln, err := srv.Listen()
		if err != nil {
			srv.Close()
			c.stop()
			return nil, err
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(sctx, ln); srv.Close() }()
		c.stops = append(c.stops, func() { cancel(); <-done })
		c.servers, c.urls = append(c.servers, srv), append(c.urls, "http://"+ln.Addr().String())
	}
	var err error
	if c.admin, _, err = c.servers[0].EnsureAdminToken(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// url is the next server's, round robin: the load balancer.
func (c *cluster) url() string { return c.urls[(c.next.Add(1)-1)%uint64(len(c.urls))] }

// api calls the REST API with the admin token (through the first server).
func (c *cluster) api(ctx context.Context, method, path string, in, out any) error {
	return apiclient.Client{URL: c.urls[0], Token: c.admin}.Do(ctx, method, path, in, out)
}

// queuedJobs counts the jobs waiting in the queue.
func (c *cluster) queuedJobs(ctx context.Context) (int, error) {
	rows, err := c.servers[0].Store.DB().QueryContext(ctx, `SELECT COUNT(*) FROM jobs WHERE status = 'queued'`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, rows.Err()
}

// waitQueued waits until n jobs are queued (the planners have planned
// every build), at most within.
func (c *cluster) waitQueued(ctx context.Context, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		got, err := c.queuedJobs(ctx)
		if err != nil || got == n {
			return err
		}
		if got > n || time.Now().After(deadline) {
			return fmt.Errorf("%d jobs queued, want %d (after %s)", got, n, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// txStats sums the servers' store transaction counters.
func (c *cluster) txStats() store.TxStats {
	var sum store.TxStats
	for _, s := range c.servers {
		t := s.Store.TxStats()
		sum.Begun, sum.RolledBack = sum.Begun+t.Begun, sum.RolledBack+t.RolledBack
		sum.Wait, sum.Held, sum.PoolWait = sum.Wait+t.Wait, sum.Held+t.Held, sum.PoolWait+t.PoolWait
	}
	return sum
}

// stop ends the servers (each waits for its requests and loops), then
// drops the PostgreSQL database.
func (c *cluster) stop() {
	for _, s := range c.stops {
		s()
	}
	if c.drop != nil {
		if err := c.drop(); err != nil {
			fmt.Fprintln(os.Stderr, "ctlbench:", err)
		}
	}
}

// client is the load generator's HTTP client: enough idle connections
// per server that the senders and agents reuse theirs rather than open
// new ones for each request.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute}}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
