// Package leader runs background work on one server at a time: the one
// holding a named leader lease in the store. Replicas sharing a database
// each run an Elector for the lease; the holder renews it every TTL/3 and
// runs the work, the others keep trying, and when the holder stops (its
// context ends: it releases the lease) or dies (the lease expires), one of
// them takes over.
//
// The lease makes the work run once, not correct: a holder that loses the
// lease stops its work as soon as it knows, which may be a moment after
// another took over, so the work must stay safe when two run at once (the
// store's conditional writes make it so). What the lease saves is doing
// it twice: a status sent twice, GitHub asked twice.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// Leases is the store's side (store.Store has it): one conditional write
// each, by the store's clock.
type Leases interface {
	// AcquireLease takes or renews the lease; token changes with each
	// new tenure.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, token int64, err error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Gauge is set to 1 while the lease is held, 0 otherwise (a Prometheus
// gauge has Set).
type Gauge interface{ Set(float64) }

// DefaultTTL is a lease's life without a renewal: how long the work may
// stand still after its holder died without releasing it.
const DefaultTTL = 15 * time.Second

// ErrLost is the cause of the work's context when the lease was lost
// (a renewal failed, or another holder has it).
var ErrLost = errors.New("leader lease lost")

type Config struct {
	// Name is the lease's; Holder this process's (NewHolderID).
	Name, Holder string
	// TTL is the lease's life without a renewal (DefaultTTL when 0).
	TTL time.Duration
	// Every is how often the lease is tried and renewed: TTL/3 when 0.
	// (Tests set it apart from TTL, whose expiry they drive through the
	// store's clock.)
	Every time.Duration
	Log   *slog.Logger
	Gauge Gauge // optional
}

// Elector holds or waits for one lease.
type Elector struct {
	leases  Leases
	cfg     Config
	leading atomic.Bool
}

func New(leases Leases, cfg Config) (*Elector, error) {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Every == 0 {
		cfg.Every = cfg.TTL / 3
	}
	switch {
	case leases == nil:
		return nil, errors.New("leader: no store")
	case cfg.Name == "" || cfg.Holder == "":
		return nil, errors.New("leader: lease name and holder required")
	case cfg.TTL < 3*time.Millisecond:
		return nil, fmt.Errorf("leader-ttl: %s is too short", cfg.TTL)
	case cfg.Every <= 0 || cfg.Every > cfg.TTL/3:
		return nil, fmt.Errorf("leader: renewing every %s leaves a lease of %s no time to spare: at most a third of it", cfg.Every, cfg.TTL)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Log = cfg.Log.With("lease", cfg.Name, "holder", cfg.Holder)
	return &Elector{leases: leases, cfg: cfg}, nil
}

// NewHolderID is a holder id for this process: its host's name (for the
// operator reading the lease) and random bytes (a process started again
// on the same host is another holder).
func NewHolderID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "kiln"
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// Leading reports whether this elector holds the lease now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Run tries for the lease every Every until ctx ends; while it holds it,
// work runs with a context that ends as soon as the lease may be lost (a
// renewal failed or found another holder) or ctx ends. Run waits for work
// to return before it tries again, and at the end releases the lease, so
// a successor starts at its next try rather than at the expiry. work
// should run until its context ends; if it returns sooner, Run releases
// the lease and returns.
func (e *Elector) Run(ctx context.Context, work func(context.Context)) {
	e.setLeading(false)
	failures := 0
	for {
		held, token, err := e.acquire(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Logged once per streak: a store down for a while is
			// logged by its users too.
			if failures == 0 {
				e.cfg.Log.Warn("leader lease: cannot try for it", "err", err)
			}
			failures++
		case held:
			failures = 0
			if !e.lead(ctx, token, work) {
				return
			}
		default:
			failures = 0
		}
		t := time.NewTimer(e.cfg.Every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// acquire tries for (or renews) the lease, bounded: a renewal that hangs
// fails before the lease would run out (see lead).
func (e *Elector) acquire(ctx context.Context) (bool, int64, error) {
	actx, cancel := context.WithTimeout(ctx, e.callTimeout())
	defer cancel()
	return e.leases.AcquireLease(actx, e.cfg.Name, e.cfg.Holder, e.cfg.TTL)
}

// callTimeout bounds one call to the store, T: a renewal that started at
// s and succeeded (the store has the lease as ours until at least s+TTL)
// returned by s+T; the next starts by the tick after that, s+T+Every, and
// fails by s+2T+Every, which is before s+TTL whenever T < (TTL-Every)/2.
// A third leaves the work time to stop.
func (e *Elector) callTimeout() time.Duration { return (e.cfg.TTL - e.cfg.Every) / 3 }

// lead runs work while the lease is held with token, renewing it every
// Every; work is told the lease is lost (its context ends) when a renewal
// fails, while the store still has it as ours (callTimeout). It reports
// whether Run should go on trying (the lease was lost, not given up).
func (e *Elector) lead(ctx context.Context, token int64, work func(context.Context)) (again bool) {
	log := e.cfg.Log.With("token", token)
	log.Info("leader lease acquired: running the background work here")
	e.setLeading(true)
	defer e.setLeading(false)
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	done := make(chan struct{})
	go func() { defer close(done); work(wctx) }()
	t := time.NewTicker(e.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			e.release(ctx, log)
			return false
		case <-done:
			if ctx.Err() == nil {
				log.Warn("leader lease: the background work returned on its own; giving the lease up")
			}
			e.release(ctx, log)
			return false
		case <-t.C:
		}
		held, got, err := e.acquire(ctx)
		if ctx.Err() != nil {
			continue // shutting down: the next select releases
		}
		var why string
		switch {
		case err != nil:
			why = "renewal failed: " + err.Error()
		case !held:
			why = "another holder has it"
		case got != token:
			why = "it expired meanwhile" // renewed as a new tenure: another may have held it
		default:
			continue
		}
		stop(fmt.Errorf("%w: %s", ErrLost, why))
		<-done
		log.Warn("leader lease lost: background work stopped here", "reason", why)
		return true
	}
}

// release gives the lease up, with a moment of its own since ctx has
// ended; if it fails, the lease expires after TTL instead.
func (e *Elector) release(ctx context.Context, log *slog.Logger) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.leases.ReleaseLease(rctx, e.cfg.Name, e.cfg.Holder); err != nil {
		log.Warn("leader lease: release failed; another server takes over when it expires", "err", err, "ttl", e.cfg.TTL)
		return
	}
	log.Info("leader lease released")
}

func (e *Elector) setLeading(v bool) {
	e.leading.Store(v)
	if e.cfg.Gauge != nil {
		if v {
			e.cfg.Gauge.Set(1)
		} else {
			e.cfg.Gauge.Set(0)
		}
	}
}
