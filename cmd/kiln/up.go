package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sync"

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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.Run(ctx); err != nil {
			log.Error("agent stopped", "err", err)
		}
	}()
	err = srv.Serve(ctx, ln)
	cancel()
	wg.Wait()
	return err
}
