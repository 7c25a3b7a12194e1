// Package agent is the host agent: it claims jobs from the control plane over
// the agent protocol (HTTP long-poll), runs each in a fresh sandbox, streams
// its log, heartbeats its lease and reports the outcome. It never reads the
// pipeline file: the server sends each job compiled.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sticky"
)

type Config struct {
	// Server is the control plane's base URL, or several, comma-separated:
	// replicas of one control plane, which the agent fails over between
	// (see client).
	Server   string
	Token    string // agent token
	ID       string // stable across restarts, so the server can release what a crashed run left
	Name     string
	Labels   []string
	Capacity int
	// WorkDir holds job workspaces (and nothing else the agent must keep).
	WorkDir string
	// The sandbox limits: a job that sets none gets them, one may ask for
	// less, and none gets more (the agent reports them as its maximums).
	DefaultCPUs   float64
	DefaultMemory int64
	DefaultPids   int64
	// DefaultDisk is each job's disk quota (its workspace and /tmp), a
	// loop-mounted filesystem of that size; 0: no quota.
	DefaultDisk int64
	// LayerWatch is how often a running job's writable layer (outside its
	// quota disk) is measured against its disk quota; 0: never.
	LayerWatch time.Duration
	Version    string
	HTTPClient *http.Client
	// ClaimWait is how long the server may hold one claim request.
	ClaimWait time.Duration
	// StickyMaxAge prunes sticky cache volumes unused for this long.
	StickyMaxAge time.Duration
	// SpareIdle is how long a spare sandbox, made ahead of time for the
	// next job of a project with sticky caches, waits for it; 0: no spares.
	SpareIdle time.Duration
	// ShutdownGrace is how long running jobs may go on once Run's context
	// ends (the agent stops claiming at once). Past it they are stopped and
	// reported as errors, so the server retries them. 0: stopped at once.
	ShutdownGrace time.Duration
	// LogMaxBytes and LogMaxLines bound one job's step output (text bytes,
	// newlines included, and lines); past either, the rest is dropped with
	// a "[kiln]" line saying so. 0: the default (logs.DefaultMaxJobBytes,
	// logs.DefaultMaxJobLines); negative: no limit.
	LogMaxBytes int64
	LogMaxLines int64
	// Image housekeeping (imagegc.go): past ImageGCHigh percent of the
	// engine's data disk, Kiln's images are removed, least recently used
	// first, until below ImageGCLow; looked at every ImageGCInterval and
	// before a job whose image is not on the host. ImageGCHigh 0: never.
	// ImageState is the file recording the images Kiln pulled ("": kept
	// in memory only).
	ImageGCHigh     float64
	ImageGCLow      float64
	ImageGCInterval time.Duration
	ImageState      string
}

func DefaultConfig() Config {
	return Config{Capacity: 2, DefaultCPUs: pipeline.DefaultLimits.CPUs, DefaultMemory: pipeline.DefaultLimits.MemoryBytes, DefaultPids: pipeline.DefaultLimits.Pids, DefaultDisk: pipeline.DefaultLimits.DiskBytes, LayerWatch: 5 * time.Second, ClaimWait: 30 * time.Second, StickyMaxAge: 14 * 24 * time.Hour, SpareIdle: 10 * time.Minute,
		ShutdownGrace: 10 * time.Second, ImageGCHigh: 75, ImageGCLow: 70, ImageGCInterval: 5 * time.Minute}
}

// limits are the most a job's sandbox gets on this agent.
func (a *Agent) limits() pipeline.Resources {
	return pipeline.Resources{CPUs: a.cfg.DefaultCPUs, MemoryBytes: a.cfg.DefaultMemory, Pids: a.cfg.DefaultPids, DiskBytes: a.cfg.DefaultDisk}
}

type Agent struct {
	cfg     Config
	rt      sandbox.Runtime
	mirrors *gitmirror.Mirrors
	volumes *sticky.Volumes // nil: no sticky caches on this agent
	api     *client
	log     *slog.Logger

	heartbeat time.Duration
	lease     time.Duration

	promotions promotions // sticky volumes being promoted after their job reported
	spares     spares     // the sandbox made ahead of time for the next job
	images     *imageGC   // nil: no image housekeeping
	busy       atomic.Int64
	running    atomic.Int64 // jobs claimed and not yet reported and cleaned up (busy also counts spares)
}

// Busy reports whether the agent is running a job, or still cleaning up
// after one (its sandbox, caches and workspace; a spare made or dropped).
// A benchmark waits for it to be false before it times anything else.
func (a *Agent) Busy() bool { return a.busy.Load() > 0 }

// New makes an agent. volumes may be nil (sticky caches are then skipped
// with a notice in the job's log).
func New(cfg Config, rt sandbox.Runtime, mirrors *gitmirror.Mirrors, volumes *sticky.Volumes, log *slog.Logger) (*Agent, error) {
	if cfg.ID == "" || cfg.Server == "" || cfg.Token == "" || cfg.Capacity <= 0 || cfg.WorkDir == "" {
		return nil, errors.New("agent: ID, Server, Token, WorkDir and a positive Capacity are required")
	}
	if cfg.Name == "" {
		cfg.Name = cfg.ID
	}
	if cfg.ClaimWait <= 0 {
		cfg.ClaimWait = 30 * time.Second
	}
	servers, err := ServerURLs(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	// A claim is held by the server for up to ClaimWait: the client must wait longer.
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: cfg.ClaimWait + 30*time.Second}
	}
	if cfg.ImageGCHigh > 0 && (cfg.ImageGCLow <= 0 || cfg.ImageGCLow > cfg.ImageGCHigh || cfg.ImageGCHigh > 100) {
		return nil, fmt.Errorf("agent: image housekeeping: want 0 < low (%g) <= high (%g) <= 100", cfg.ImageGCLow, cfg.ImageGCHigh)
	}
	log = log.With("agent", cfg.ID)
	a := &Agent{cfg: cfg, rt: rt, mirrors: mirrors, volumes: volumes, api: newClient(servers, cfg.Token, hc, log), log: log}
	if eng, ok := rt.(sandbox.Images); ok && cfg.ImageGCHigh > 0 {
		a.images = newImageGC(eng, rt.Destroy, cfg, log)
	}
	return a, nil
}

// Run registers, cleans up what a previous run left behind, and claims and
// runs jobs until ctx ends.
//
// Shutdown: when ctx ends the agent claims nothing more, at once, but its
// running jobs go on, under a context of their own, for ShutdownGrace: a
// job that finishes in that time is reported as usual. Then the rest are
// stopped with errShutdown and reported as errors (the server retries
// them), their sandboxes destroyed. Run returns once every job is
// reported and cleaned up, so the caller (`kiln up`) stops the server only
// after that: the reports must find it still listening.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.checkDisks(ctx); err != nil {
		return err
	}
	if err := a.register(ctx); err != nil {
		return err
	}
	a.sweep(ctx)
	go a.pruneLoop(ctx)
	if a.images != nil {
		go a.images.loop(ctx, a.cfg.ImageGCInterval)
	}
	jobsCtx, stopJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopJobs(nil)
	slots := make(chan struct{}, a.cfg.Capacity)
	var wg sync.WaitGroup
	// Runs last: jobs are over, then the spare sandbox goes.
	defer a.dropSpares()
	defer a.drain(&wg, stopJobs)
	backoff := time.Second
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		if err := a.rt.Ping(ctx); err != nil {
			// Claim nothing while the engine is down: a job claimed now could
			// only fail. Nothing is lost; queued jobs wait.
			<-slots
			if ctx.Err() == nil {
				a.log.Error("container engine unavailable; not claiming jobs", "err", err, "retry_in", backoff)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 30*time.Second)
			}
			continue
		}
		var warm []string
		if a.volumes != nil {
			warm = a.volumes.Projects()
		}
		asg, err := a.api.claim(ctx, protocol.ClaimRequest{AgentID: a.cfg.ID, Labels: a.cfg.Labels, Free: cap(slots) - len(slots) + 1,
			WaitSeconds: int(a.cfg.ClaimWait / time.Second), Warm: warm, Max: a.limits()})
		if err != nil || asg == nil {
			<-slots
			if _, ok := errors.AsType[*VersionError](err); ok {
				// A replica of another version (mid-upgrade, or one
				// rolled back): this agent cannot work with it.
				a.log.Error("the server refused this agent's protocol version; stopping", "err", err)
				return err
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("claim failed", "err", err, "retry_in", backoff)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 30*time.Second)
				if permanent(err) {
					_ = a.register(ctx)
				}
			}
			continue
		}
		backoff = time.Second
		wg.Add(1)
		a.busy.Add(1)
		a.running.Add(1)
		go func() {
			defer wg.Done()
			defer a.busy.Add(-1)
			defer a.running.Add(-1)
			defer func() { <-slots }()
			if a.images != nil {
				// The job's image is kept from here to its end; a
				// collection first when it is to be pulled.
				defer a.images.jobStarting(jobsCtx, asg)()
			}
			a.runJob(jobsCtx, ctx, asg)
		}()
	}
	return nil
}

// errShutdown ends the jobs still running when the shutdown grace is over.
var errShutdown = errors.New("agent shut down")

// drain waits for the running jobs after Run's context ended: up to
// ShutdownGrace on their own, then stopped (stopJobs) and waited for
// until they are reported and their sandboxes destroyed.
func (a *Agent) drain(wg *sync.WaitGroup, stopJobs context.CancelCauseFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	n := a.running.Load()
	if n == 0 {
		<-done
		a.log.Info("shutdown: stopped claiming; no job was running")
		return
	}
	a.log.Info("shutdown: stopped claiming; waiting for running jobs", "jobs", n, "grace", a.cfg.ShutdownGrace)
	t := time.NewTimer(a.cfg.ShutdownGrace)
	defer t.Stop()
	select {
	case <-done:
		a.log.Info("shutdown: running jobs finished within the grace")
		return
	case <-t.C:
	}
	a.log.Warn("shutdown: grace over; stopping the jobs still running, reporting them as errors (they will be retried)", "jobs", a.running.Load())
	stopJobs(fmt.Errorf("%w: the job did not finish within the shutdown grace of %s", errShutdown, a.cfg.ShutdownGrace))
	<-done
	a.log.Info("shutdown: jobs stopped, reported and their sandboxes destroyed")
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (a *Agent) register(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for {
		resp, err := a.api.register(ctx, protocol.RegisterRequest{ID: a.cfg.ID, Name: a.cfg.Name, Labels: a.cfg.Labels, Capacity: a.cfg.Capacity, Version: a.cfg.Version, Max: a.limits()})
		if err == nil {
			a.heartbeat = time.Duration(resp.HeartbeatSeconds) * time.Second
			a.lease = time.Duration(resp.LeaseSeconds) * time.Second
			if len(resp.Released) > 0 {
				a.log.Warn("jobs this agent ran before it restarted were ended as errors and will be retried", "jobs", resp.Released)
			}
			a.log.Info("registered", "server", a.api.server(), "protocol", protocol.Version, "capacity", a.cfg.Capacity, "labels", a.cfg.Labels)
			return nil
		}
		if _, ok := errors.AsType[*VersionError](err); ok {
			a.log.Error("the server refused this agent's protocol version; stopping", "err", err)
			return fmt.Errorf("agent: register: %w", err)
		}
		if permanent(err) {
			return fmt.Errorf("agent: register: %w", err)
		}
		a.log.Warn("cannot reach the server; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// sweep destroys sandboxes and workspaces a previous run of this agent left
// behind (it crashed or was killed mid-job).
func (a *Agent) sweep(ctx context.Context) {
	// The job disks first: unmounting them here does not disturb a sandbox
	// still using one (its own mount namespace keeps the filesystem until
	// it is destroyed, below).
	a.sweepDisks(ctx)
	left, err := a.rt.List(ctx, map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: a.cfg.ID})
	if err != nil {
		a.log.Warn("sweep: cannot list sandboxes", "err", err)
	}
	for _, sb := range left {
		if err := a.rt.Destroy(ctx, sb.ID); err != nil {
			a.log.Warn("sweep: destroy", "sandbox", sb.Name, "err", err)
		} else {
			a.log.Info("sweep: removed a sandbox left by a previous run", "sandbox", sb.Name)
		}
	}
	if a.volumes != nil {
		// Unmount and drop job views a crash left behind.
		if err := a.volumes.Recover(ctx); err != nil {
			a.log.Warn("sweep: sticky volumes", "err", err)
		}
	}
	// Artifacts packed for an upload that never ended.
	_ = os.RemoveAll(filepath.Join(a.cfg.WorkDir, "artifacts"))
	dir := filepath.Join(a.cfg.WorkDir, "jobs")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// pruneLoop removes sticky volumes unused for StickyMaxAge, now and every
// six hours, so a host does not keep caches of projects long gone.
func (a *Agent) pruneLoop(ctx context.Context) {
	if a.volumes == nil || a.cfg.StickyMaxAge <= 0 {
		return
	}
	t := time.NewTicker(6 * time.Hour)
	defer t.Stop()
	for {
		if n, err := a.volumes.Prune(ctx, a.cfg.StickyMaxAge); err != nil && ctx.Err() == nil {
			a.log.Warn("prune sticky volumes", "err", err)
		} else if n > 0 {
			a.log.Info("pruned unused sticky volumes", "removed", n, "unused_for", a.cfg.StickyMaxAge)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
