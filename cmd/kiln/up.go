package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/kilnci/kiln/internal/server"
)

// runUp runs the control plane and one agent in one process. The agent
// still talks to the control plane over HTTP (loopback), exactly as an agent
// on another host would.
func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln up", flag.ContinueOnError)
	so := serverFlags(fs)
	o := agentFlags(fs, true)
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
	o.cfg.Server = "http://" + ln.Addr().String()
	o.publicURL = srv.PublicURL() // where jobs reach the cache service
	o.git = cfg.Git
	if o.cfg.Token, err = srv.LocalAgentToken(ctx); err != nil {
		return err
	}
	a, host, err := o.build(ctx, filepath.Join(cfg.DataDir, "agent"))
	if err != nil {
		ln.Close()
		return err
	}
	defer o.close()
	announce(ctx, srv, ln.Addr().String(), cfg.DataDir)
	fmt.Printf("  agent:      %s (capacity %d, engine %s)\n", o.cfg.Name, o.cfg.Capacity, host)

	// Shutdown order: the agent first (it stops claiming, lets its jobs
	// finish within -shutdown-grace, then ends the rest as errors and
	// reports them), then the server (in-flight requests, bounded by
	// -shutdown-timeout), then the store (srv.Close, deferred). The server
	// runs under a context of its own so that the agent's reports find it
	// still listening.
	srvCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvCtx, ln) }()
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		if err := a.Run(agentCtx); err != nil {
			log.Error("agent stopped", "err", err)
		}
	}()
	select {
	case <-ctx.Done():
		log.Info("shutdown: signal received; stopping the agent first", "grace", o.cfg.ShutdownGrace)
	case err = <-served:
		// The server stopped on its own (its listener failed): the agent
		// cannot report anything more; stop it at once.
		log.Error("server stopped; stopping the agent", "err", err)
		stopAgent()
		<-agentDone
		return err
	}
	<-agentDone
	log.Info("shutdown: agent stopped; stopping the server")
	stopServer()
	err = <-served
	log.Info("shutdown: server stopped; closing the store")
	return err
}
