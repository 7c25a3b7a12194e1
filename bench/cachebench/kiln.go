package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/sticky"
	"github.com/kilnci/kiln/internal/store"
)

// kiln is a control plane running in this process, as `kiln up` runs it,
// with agents started and stopped at will. Agents talk to it over HTTP on
// loopback, as remote ones would.
type kiln struct {
	dir    string
	srv    *server.Server
	url    string
	admin  string
	engine string
	agents []*agent.Agent
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

func startKiln(ctx context.Context, dir, engine string, log *slog.Logger) (*kiln, error) {
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Listen = filepath.Join(dir, "server"), "127.0.0.1:0"
	// The shared machine's disk may already be near the default 75% mark
	// (other people's data); this benchmark measures speed, not eviction.
	cfg.Cache.DiskHighWater = 0.95
	ctx, cancel := context.WithCancel(ctx)
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		return nil, err
	}
	ln, _ := srv.Listen()
	k := &kiln{dir: dir, srv: srv, url: "http://" + ln.Addr().String(), engine: engine, log: log, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(k.done); _ = srv.Serve(ctx, ln) }()
	if k.admin, _, err = srv.EnsureAdminToken(ctx); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

// quiesce waits until no agent is busy (a job's cleanup, a spare being
// made, run after the job reported) and flushes the dirty pages they
// left, so that the next measurement does not share the machine with them.
func (k *kiln) quiesce(ctx context.Context) error {
	for {
		busy := false
		for _, a := range k.agents {
			busy = busy || a.Busy()
		}
		if !busy {
			syscall.Sync()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (k *kiln) close() {
	k.cancel()
	<-k.done
	k.srv.Close()
}

// startAgent runs an agent with a data directory of its own (git mirrors,
// sticky volumes, workspaces) under the benchmark's directory: the same id
// gets the same directory again, as a restarted host would. stop ends it
// gracefully and waits.
func (k *kiln) startAgent(ctx context.Context, id string, capacity int, label string) (stop func(), err error) {
	tok, err := k.srv.LocalAgentToken(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(k.dir, "agents", id)
	// Agents sweep the engine's sandboxes labelled with their id when they
	// start, and sandbox names carry it: the id must be unique on the
	// engine (shared here with other people's Kiln servers), not just in
	// this server.
	id = fmt.Sprintf("cachebench-%d-%s", os.Getpid(), id)
	mirrors, err := gitmirror.New(filepath.Join(dir, "git"))
	if err != nil {
		return nil, err
	}
	volumes, err := sticky.New(sticky.Config{Dir: filepath.Join(dir, "volumes"), Logger: k.log})
	if err != nil {
		return nil, err
	}
	cfg := agent.DefaultConfig()
	cfg.Server, cfg.Token, cfg.ID, cfg.Capacity = k.url, tok, id, capacity
	cfg.WorkDir, cfg.Labels = filepath.Join(dir, "work"), []string{"linux", label}
	cfg.DefaultCPUs, cfg.DefaultMemory = 2, 4<<30
	cfg.ClaimWait = 5 * time.Second
	// The engine set up as `kiln agent` sets it up: a runtime of the
	// agent's own, with a pool of ready networks.
	rt, err := docker.New(k.engine)
	if err != nil {
		return nil, err
	}
	rt.EnableNetworkPool(id, capacity, k.log)
	a, err := agent.New(cfg, rt, mirrors, volumes, k.log)
	if err != nil {
		return nil, err
	}
	k.agents = append(k.agents, a)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	return func() {
		cancel()
		<-done
		rt.DrainNetworkPool(context.Background())
	}, nil
}

// call sends a REST request with the admin token and decodes the answer.
func (k *kiln) call(method, path string, in, out any) error {
	return apiclient.Client{URL: k.url, Token: k.admin}.Do(context.Background(), method, path, in, out)
}

func (k *kiln) addProject(name, cloneURL, branch string) error {
	return k.call("POST", "/api/v1/projects", map[string]any{
		"name": name, "clone_url": cloneURL, "default_branch": branch,
		"webhook_secret": "cachebench-webhook-secret-" + name,
	}, nil)
}

// run is one build as the benchmark saw it.
type run struct {
	build   *api.BuildView
	elapsed time.Duration // trigger (API call) → the build seen finished
	lines   []store.LogLine
}

// build triggers a build of commit on branch through the API and polls it
// until it ends. The poll is every 50ms: negligible against builds that
// take seconds.
func (k *kiln) build(ctx context.Context, project, branch, commit string) (*run, error) {
	t0 := time.Now()
	var b api.BuildView
	if err := k.call("POST", "/api/v1/projects/"+project+"/builds", map[string]string{"branch": branch, "commit": commit}, &b); err != nil {
		return nil, err
	}
	for {
		if err := k.call("GET", fmt.Sprintf("/api/v1/builds/%d", b.ID), nil, &b); err != nil {
			return nil, err
		}
		if b.Status.Terminal() {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	r := &run{build: &b, elapsed: time.Since(t0)}
	var jobs []struct {
		Lines []store.LogLine
	}
	if err := k.call("GET", fmt.Sprintf("/api/v1/builds/%d/logs", b.ID), nil, &jobs); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		r.lines = append(r.lines, j.Lines...)
	}
	if b.Status != store.StatusSuccess {
		return r, fmt.Errorf("build %d of %s at %.12s: %s %s\n%s", b.ID, project, commit, b.Status, b.Error, r.tail(40))
	}
	return r, nil
}

// tail is the end of the build's log, for error messages.
func (r *run) tail(n int) string {
	var sb strings.Builder
	for _, l := range r.lines[max(0, len(r.lines)-n):] {
		sb.WriteString("    " + l.Text + "\n")
	}
	return sb.String()
}
