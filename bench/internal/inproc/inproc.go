// Package inproc runs Kiln as `kiln up` does — a control plane and one
// agent in this process, the agent speaking HTTP to the server on
// loopback — for the benchmarks that measure it against a bare run.
package inproc

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/server"
)

// Agent says how the one agent runs.
type Agent struct {
	ID       string // unique on the engine (sandbox names and sweeps carry it)
	Capacity int    // 0: the agent's default
	Labels   []string
	Memory   int64 // a job's memory when its pipeline sets none
}

// Kiln is a running control plane and agent.
type Kiln struct {
	URL, Admin string
	Server     *server.Server
	stop       func()
}

// Up starts a server configured by cfg (its data under dir/server, on a
// loopback port) and the agent (its mirrors and workspaces under
// dir/agent) on engine, until Stop.
func Up(ctx context.Context, cfg server.Config, engine string, ag Agent, dir string, log *slog.Logger) (*Kiln, error) {
	cfg.DataDir, cfg.Listen = filepath.Join(dir, "server"), "127.0.0.1:0"
	ctx, cancel := context.WithCancel(ctx)
	k := &Kiln{}
	var done []chan struct{}
	var rt *docker.Runtime
	k.stop = func() {
		cancel()
		for _, d := range done {
			<-d
		}
		if rt != nil {
			rt.DrainNetworkPool(context.Background())
		}
	}
	fail := func(err error) (*Kiln, error) { k.stop(); return nil, err }
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		srv.Close()
		return fail(err)
	}
	done = append(done, make(chan struct{}))
	go func(d chan struct{}) { defer close(d); _ = srv.Serve(ctx, ln); srv.Close() }(done[0])
	k.Server, k.URL = srv, "http://"+ln.Addr().String()
	if k.Admin, _, err = srv.EnsureAdminToken(ctx); err != nil {
		return fail(err)
	}
	agentTok, err := srv.LocalAgentToken(ctx)
	if err != nil {
		return fail(err)
	}
	if rt, err = docker.New(engine); err != nil {
		return fail(err)
	}
	acfg := agent.DefaultConfig()
	if ag.Capacity > 0 {
		acfg.Capacity = ag.Capacity
	}
	// As `kiln agent` and `kiln up` run it: per-job bridge networks made
	// ahead of time (Docker; Podman sandboxes use slirp4netns).
	rt.EnableNetworkPool(ag.ID, acfg.Capacity, log)
	mirrors, err := gitmirror.New(filepath.Join(dir, "agent", "git"))
	if err != nil {
		return fail(err)
	}
	acfg.Server, acfg.Token, acfg.ID = k.URL, agentTok, ag.ID
	acfg.WorkDir, acfg.Labels, acfg.DefaultMemory = filepath.Join(dir, "agent", "work"), ag.Labels, ag.Memory
	a, err := agent.New(acfg, rt, mirrors, nil, log)
	if err != nil {
		return fail(err)
	}
	done = append(done, make(chan struct{}))
	go func(d chan struct{}) { defer close(d); _ = a.Run(ctx) }(done[1])
	return k, nil
}

// Stop ends the agent (its jobs end), then the server, and waits for both.
func (k *Kiln) Stop() { k.stop() }
