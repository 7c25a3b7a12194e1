package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/kilnci/kiln/internal/sandbox"
)

// LabelNetPool marks a pooled network with the owner of the pool.
const LabelNetPool = "dev.kiln.netpool"

// netPool keeps bridge networks ready for sandboxes, so that creating a
// network (125–300 ms on Docker: a bridge, iptables rules, its DNS) is off
// a job's critical path. Each network serves one sandbox at a time: it is
// taken by Create and given back by Destroy only after the sandbox's
// container is gone, so no two jobs ever share a network. A bridge keeps
// no state of a job once its container is removed.
type netPool struct {
	r     *Runtime
	owner string
	size  int
	log   *slog.Logger

	mu      sync.Mutex
	idle    []string
	busy    map[string]bool
	filling bool
}

// EnableNetworkPool makes Create take networks from a pool of size idle
// networks owned by owner (an agent id: one pool per agent and engine),
// refilled in the background. Networks a previous run of the same owner
// left idle are adopted.
func (r *Runtime) EnableNetworkPool(owner string, size int, log *slog.Logger) {
	if size <= 0 {
		return
	}
	p := &netPool{r: r, owner: owner, size: size, log: log, busy: map[string]bool{}}
	r.mu.Lock()
	r.pool = p
	r.mu.Unlock()
	go p.fill()
}

// take returns an idle network, or "" when none is ready.
func (p *netPool) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		go p.fill()
		return ""
	}
	n := p.idle[len(p.idle)-1]
	p.idle = p.idle[:len(p.idle)-1]
	p.busy[n] = true
	go p.fill()
	return n
}

// put gives back a network whose sandbox is gone.
func (p *netPool) put(name string) {
	p.mu.Lock()
	delete(p.busy, name)
	keep := len(p.idle) < p.size
	if keep {
		p.idle = append(p.idle, name)
	}
	p.mu.Unlock()
	if !keep {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_ = p.r.networkRemove(ctx, name)
	}
}

// fill tops the pool up to size, adopting idle networks of this owner
// first. One fill runs at a time.
func (p *netPool) fill() {
	p.mu.Lock()
	if p.filling {
		p.mu.Unlock()
		return
	}
	p.filling = true
	p.mu.Unlock()
	defer func() { p.mu.Lock(); p.filling = false; p.mu.Unlock() }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p.r.isPodman(ctx) {
		return // Podman sandboxes use user-mode networking: nothing to pool
	}
	p.adopt(ctx)
	for {
		p.mu.Lock()
		need := len(p.idle) < p.size
		p.mu.Unlock()
		if !need {
			return
		}
		var b [6]byte
		_, _ = rand.Read(b[:])
		name := "kiln-net-" + p.owner + "-" + hex.EncodeToString(b[:])
		if err := p.r.createNetwork(ctx, name, map[string]string{sandbox.LabelManaged: "true", LabelNetPool: p.owner}); err != nil {
			if p.log != nil {
				p.log.Warn("network pool: create", "err", err)
			}
			return // Create falls back to a network of its own
		}
		p.mu.Lock()
		p.idle = append(p.idle, name)
		p.mu.Unlock()
	}
}

// adopt takes into the pool this owner's networks that are neither idle
// nor busy here and have no container: left by a previous run.
func (p *netPool) adopt(ctx context.Context) {
	list, err := p.r.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelNetPool+"="+p.owner))})
	if err != nil {
		return
	}
	for _, n := range list {
		p.mu.Lock()
		known := p.busy[n.Name]
		for _, i := range p.idle {
			known = known || i == n.Name
		}
		full := len(p.idle) >= p.size
		p.mu.Unlock()
		if known {
			continue
		}

		insp, err := p.r.cli.NetworkInspect(ctx, n.ID, network.InspectOptions{})
		if err != nil || len(insp.Containers) > 0 {
			continue
		}
		if full {
			_ = p.r.networkRemove(ctx, n.ID)
			continue
		}
		p.mu.Lock()
		p.idle = append(p.idle, n.Name)
		p.mu.Unlock()
	}
}

// DrainNetworkPool removes the pool's idle networks (at shutdown). Busy
// ones go when their sandbox is destroyed.
func (r *Runtime) DrainNetworkPool(ctx context.Context) {
	r.mu.Lock()
	p := r.pool
	r.pool = nil
	r.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	idle := p.idle
	p.idle, p.size = nil, 0
	p.mu.Unlock()
	for _, n := range idle {
		_ = r.networkRemove(ctx, n)
	}
}

// isPodman reports whether the engine is Podman (asked once, then cached).
func (r *Runtime) isPodman(ctx context.Context) bool {
	r.mu.Lock()
	known, podman := r.engineKnown, r.podman
	r.mu.Unlock()
	if known {
		return podman
	}
	v, err := r.cli.ServerVersion(ctx)
	if err != nil {
		return false // a later call asks again
	}
	podman = strings.Contains(strings.ToLower(v.Platform.Name), "podman")
	for _, c := range v.Components {
		podman = podman || strings.Contains(strings.ToLower(c.Name), "podman")
	}
	r.mu.Lock()
	r.engineKnown, r.podman = true, podman
	r.mu.Unlock()
	return podman
}
