package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/sandbox/netguard"
	"github.com/kilnci/kiln/internal/sticky"
)

// agentOptions are the agent's flags.
type agentOptions struct {
	cfg     agent.Config
	engine  string
	dataDir string
	labels  string
	memory  string
	logMax  string
	disk    string
	// stickyMax bounds one sticky cache volume.
	stickyMax int64
	// git bounds the agent's git commands (checkouts); kiln up sets it
	// from the server's flags.
	git gitmirror.Config
	// runtime is the engine connection build made (drained at shutdown).
	runtime *docker.Runtime
	// firewall is -sandbox-firewall: "on" or "off".
	firewall string
	// allow is -sandbox-allow: more host:port endpoints sandboxes may reach.
	allow string
	// publicURL is where jobs reach the cache service, when it differs
	// from the agent's server URL (kiln up: the server's public URL).
	publicURL string
}

// close releases what build set up on the engine (idle pooled networks).
func (o *agentOptions) close() {
	if o.runtime != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		o.runtime.DrainNetworkPool(ctx)
	}
}

func agentFlags(fs *flag.FlagSet, local bool) *agentOptions {
	o := &agentOptions{cfg: agent.DefaultConfig(), git: gitmirror.DefaultConfig()}
	if !local {
		gitFlags(fs, &o.git)
		o.cfg.Server = envOr("KILN_SERVER", "http://127.0.0.1:8080")
		fs.Var(&serverList{s: &o.cfg.Server}, "server", "control plane URL ($KILN_SERVER); several, comma-separated or the flag repeated, are replicas the agent fails over between")
		fs.StringVar(&o.cfg.Token, "token", os.Getenv("KILN_AGENT_TOKEN"), "agent token, from 'kiln token create --kind agent' ($KILN_AGENT_TOKEN)")
		fs.StringVar(&o.dataDir, "data-dir", filepath.Join(defaultDataDir(), "agent"), "agent state: its id, git mirrors, job workspaces")
	}
	fs.StringVar(&o.cfg.Name, "name", hostname(), "agent name shown in the API")
	fs.StringVar(&o.labels, "labels", "linux", "comma-separated labels; a job runs only on agents carrying all its runs-on labels")
	fs.IntVar(&o.cfg.Capacity, "capacity", o.cfg.Capacity, "jobs run at once")
	fs.StringVar(&o.engine, "engine", os.Getenv("KILN_ENGINE"), "container engine socket, e.g. unix:///run/podman/podman.sock (default: detected)")
	fs.Float64Var(&o.cfg.DefaultCPUs, "cpus", o.cfg.DefaultCPUs, "CPU limit per job: a job gets it unless it asks for less, and never more")
	fs.StringVar(&o.memory, "memory", "2g", "memory limit per job (e.g. 512m, 2g): a job gets it unless it asks for less, and never more")
	fs.StringVar(&o.disk, "disk", "10g", "disk quota per job, its workspace and /tmp together (a loop-mounted ext4 file: needs root), e.g. 2g: a job gets it unless it asks for less, and never more; 0: no quota")
	fs.Int64Var(&o.cfg.DefaultPids, "pids", o.cfg.DefaultPids, "process limit per job: a job gets it unless it asks for less, and never more")
	fs.StringVar(&o.logMax, "job-log-max-bytes", "256m", "most step output kept per job (e.g. 64m, 1g; -1: no limit); past it the rest is dropped, with a [kiln] line saying so")
	fs.Int64Var(&o.cfg.LogMaxLines, "job-log-max-lines", logs.DefaultMaxJobLines, "most step output lines kept per job (-1: no limit); past it the rest is dropped, with a [kiln] line saying so")
	fs.Int64Var(&o.stickyMax, "sticky-max-bytes", 10<<30, "largest size of one sticky cache volume; a job that grows it beyond keeps the previous one")
	fs.DurationVar(&o.cfg.StickyMaxAge, "sticky-max-age", o.cfg.StickyMaxAge, "prune sticky cache volumes unused for this long")
	fs.DurationVar(&o.cfg.ShutdownGrace, "shutdown-grace", o.cfg.ShutdownGrace, "on SIGTERM, how long running jobs may go on before they are stopped and reported as errors (retried)")
	fs.DurationVar(&o.cfg.SpareIdle, "spare-idle", o.cfg.SpareIdle, "after a job with sticky caches, keep a sandbox made ahead of time for the project's next job this long (0: never)")
	fs.Float64Var(&o.cfg.ImageGCHigh, "image-gc-high", o.cfg.ImageGCHigh, "percent of the engine's data disk past which Kiln's least recently used images (pulled or built by Kiln, none a job here needs) and build leftovers are removed (0: never)")
	fs.Float64Var(&o.cfg.ImageGCLow, "image-gc-low", o.cfg.ImageGCLow, "percent of the engine's data disk image housekeeping removes images down to")
	fs.DurationVar(&o.cfg.ImageGCInterval, "image-gc-interval", o.cfg.ImageGCInterval, "how often image housekeeping looks at the engine's disk (it also looks before a job whose image is not on the host)")
	fs.StringVar(&o.firewall, "sandbox-firewall", "on", "on: sandboxes cannot reach the host's addresses or private networks, except the server's address (its cache service) and -sandbox-allow (needs root); off: they reach everything the host does")
	fs.StringVar(&o.allow, "sandbox-allow", "", "comma-separated host:port endpoints on the host or private networks that sandboxes may still reach (TCP)")
	return o
}

// serverList is -server: the first given replaces the default (or
// $KILN_SERVER), the next ones add to it.
type serverList struct {
	s   *string
	set bool
}

func (l *serverList) String() string {
	if l.s == nil {
		return ""
	}
	return *l.s
}

func (l *serverList) Set(v string) error {
	if l.set {
		v = *l.s + "," + v
	}
	if _, err := agent.ServerURLs(v); err != nil {
		return err
	}
	*l.s, l.set = v, true
	return nil
}

// guard makes the sandbox firewall -sandbox-firewall asks for (nil: off).
// Sandboxes may reach the servers' addresses (their cache service), the
// public URL's, and -sandbox-allow.
func (o *agentOptions) guard(ctx context.Context) (*netguard.Guard, error) {
	switch o.firewall {
	case "off":
		return nil, nil
	case "on":
	default:
		return nil, fmt.Errorf("-sandbox-firewall %q: want on or off", o.firewall)
	}
	var endpoints []string
	for _, u := range append(strings.Split(o.cfg.Server, ","), o.publicURL) {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		ep, err := urlEndpoint(u)
		if err != nil {
			return nil, err
		}
		endpoints = append(endpoints, ep)
	}
	for _, e := range strings.Split(o.allow, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, e)
		}
	}
	allow, err := netguard.ParseAllow(ctx, endpoints)
	if err != nil {
		return nil, fmt.Errorf("-sandbox-allow: %w", err)
	}
	return netguard.New(ctx, allow)
}

// urlEndpoint is the host:port a URL is served at.
func urlEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("sandbox firewall: server URL %q: want http(s)://host:port", s)
	}
	if u.Port() != "" {
		return u.Host, nil
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

func hostname() string {
	h, _ := os.Hostname()
	if h == "" {
		return "agent"
	}
	return h
}

// build finishes the agent's configuration and creates it.
func (o *agentOptions) build(ctx context.Context, dataDir string) (*agent.Agent, string, error) {
	mem, err := parseBytes(o.memory)
	if err != nil {
		return nil, "", fmt.Errorf("-memory: %w", err)
	}
	o.cfg.DefaultMemory = mem
	if o.logMax == "-1" {
		o.cfg.LogMaxBytes = -1
	} else if o.cfg.LogMaxBytes, err = parseBytes(o.logMax); err != nil {
		return nil, "", fmt.Errorf("-job-log-max-bytes: %w", err)
	}
	if o.cfg.LogMaxLines == 0 || o.cfg.LogMaxLines < -1 {
		return nil, "", errors.New("-job-log-max-lines: want a positive number or -1 (no limit)")
	}
	if strings.TrimSpace(o.disk) == "0" {
		o.cfg.DefaultDisk = 0
	} else if o.cfg.DefaultDisk, err = parseBytes(o.disk); err != nil {
		return nil, "", fmt.Errorf("-disk: %w", err)
	} else if o.cfg.DefaultDisk < 1<<20 {
		return nil, "", fmt.Errorf("-disk: at least 1m, or 0 for no quota")
	}
	for _, l := range strings.Split(o.labels, ",") {
		if l = strings.TrimSpace(l); l != "" {
			o.cfg.Labels = append(o.cfg.Labels, l)
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", err
	}
	if o.cfg.ID, err = agentID(filepath.Join(dataDir, "agent-id")); err != nil {
		return nil, "", err
	}
	o.cfg.WorkDir = filepath.Join(dataDir, "work")
	o.cfg.ImageState = filepath.Join(dataDir, "images.json")
	o.cfg.Version = version
	host := o.engine
	if host == "" {
		if host, err = docker.Detect(ctx); err != nil {
			return nil, "", fmt.Errorf("no container engine found (%v); start Docker or Podman, or pass -engine", err)
		}
	}
	guard, err := o.guard(ctx)
	if err != nil {
		return nil, "", err
	}
	rt, err := docker.New(host)
	if err != nil {
		return nil, "", err
	}
	if guard != nil {
		rt.EnableNetworkGuard(guard)
		newLogger().Info("sandbox firewall on: sandboxes reach the internet, and of the host and private networks only these", "allowed", fmt.Sprint(guard.Allowed()))
	} else {
		newLogger().Warn("sandbox firewall off (-sandbox-firewall=off): jobs can reach the host's services and private networks")
	}
	// Keep a bridge network ready per job slot: off the job's critical path.
	rt.EnableNetworkPool(o.cfg.ID, o.cfg.Capacity, newLogger().With("component", "netpool"))
	o.runtime = rt
	mirrors, err := gitmirror.Open(filepath.Join(dataDir, "git"), o.git)
	if err != nil {
		return nil, "", err
	}
	volumes, err := sticky.New(sticky.Config{Dir: filepath.Join(dataDir, "volumes"), MaxBytes: o.stickyMax})
	if err != nil {
		return nil, "", fmt.Errorf("sticky cache volumes: %w", err)
	}
	a, err := agent.New(o.cfg, rt, mirrors, volumes, newLogger().With("component", "agent"))
	return a, host, err
}

// agentID returns the agent's stable id, kept in path. A stable id lets the
// server end, at once, the jobs a crashed run of this agent left running.
func agentID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "agent-" + hex.EncodeToString(b[:])
	return id, os.WriteFile(path, []byte(id+"\n"), 0o600)
}

func parseBytes(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for suffix, m := range map[string]int64{"k": 1 << 10, "m": 1 << 20, "g": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512m or 2g)", s)
	}
	return n * mult, nil
}

func runAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln agent", flag.ContinueOnError)
	o := agentFlags(fs, false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.cfg.Token == "" {
		return errors.New("-token (or KILN_AGENT_TOKEN) is required: create one with 'kiln token create --kind agent NAME'")
	}
	a, host, err := o.build(ctx, o.dataDir)
	if err != nil {
		return err
	}
	defer o.close()
	fmt.Printf("kiln agent %s: engine %s, server %s\n", o.cfg.Name, host, o.cfg.Server)
	err = a.Run(ctx)
	if ctx.Err() != nil {
		newLogger().Info("shutdown: agent stopped")
	}
	return err
}
