// Package docker implements sandbox.Runtime on the Docker Engine API, as
// served by Docker itself or by Podman's compatible socket.
//
// One sandbox is one container plus one bridge network of its own, both
// named after Spec.Name and carrying Spec.Labels. The container's main
// process is a shell that idles until Destroy; every Exec is an exec
// instance inside it.
//
// Security defaults, applied to every sandbox:
//   - not privileged; SecurityOpt no-new-privileges, so setuid binaries
//     cannot raise privileges;
//   - the engine's default seccomp profile (and AppArmor profile where the
//     host has one) is kept: Kiln never asks for "unconfined";
//   - capabilities: the engine's default set minus NET_RAW (raw packets,
//     ARP/ICMP spoofing on the bridge), MKNOD (device nodes) and AUDIT_WRITE.
//     CHOWN, DAC_OVERRIDE, FOWNER, SETUID/SETGID, SYS_CHROOT and friends
//     stay: package managers and ordinary build tools need them. This is
//     Podman's default set, and Docker's minus those three. Ping works
//     without NET_RAW through ICMP datagram sockets (iputils' ping; not
//     busybox's, which wants a raw socket): the sandbox's own
//     net.ipv4.ping_group_range is opened to every group, as Docker does
//     by default and Podman (root only) does not;
//   - no host engine socket: a Mount whose source is a container engine's
//     socket, or a directory holding one (/, /run, …), is refused;
//   - a network of its own, so concurrent jobs cannot reach each other's
//     services;
//   - with EnableNetworkGuard, a firewall in the sandbox's network
//     namespace (package netguard): the host's addresses and private
//     networks refused, except the cache service's endpoint and DNS.
package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"golang.org/x/sync/singleflight"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/netguard"
)

// idleScript is the sandbox's main process: it does nothing until the
// container is removed. The trap makes a TERM (a Podman force-remove
// stops the container before removing it) end it at once instead of
// waiting out the stop timeout; `sleep & wait` lets the shell run the trap
// without waiting for sleep to finish.
const idleScript = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"

// droppedCaps are removed from the engine's default capability set; see
// the package comment for why these and not more.
var droppedCaps = []string{"NET_RAW", "MKNOD", "AUDIT_WRITE"}

// validName is what both engines accept as a container and a network name.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// cleanupTimeout bounds the removal of a half-created sandbox, which runs
// on a context of its own so that a canceled Create still cleans up.
const cleanupTimeout = 30 * time.Second

// Runtime is a sandbox.Runtime backed by one engine. It is safe for
// concurrent use.
type Runtime struct {
	cli  *client.Client
	host string

	// names maps the ids returned by Create to the sandbox names, so
	// Destroy knows the network to remove without asking the engine. A
	// Runtime that did not create the sandbox (an agent restarted after a
	// crash) falls back to inspecting the container.
	mu    sync.Mutex
	names map[string]string
	// pooled maps the ids of sandboxes on a pooled network to it.
	pooled map[string]string
	pool   *netPool        // nil unless EnableNetworkPool
	guard  *netguard.Guard // nil unless EnableNetworkGuard
	// engineKnown and podman cache which engine answers (see networkOptions).
	engineKnown, podman bool
	// pulls makes concurrent pulls of one image one transfer (pull.go).
	pulls singleflight.Group
}

var _ sandbox.Runtime = (*Runtime)(nil)

// New connects to the engine at host ("unix:///run/docker.sock"); "" means
// the environment (DOCKER_HOST and its TLS settings) or the default socket. It does not contact the engine: the
// API version is negotiated on the first call (the engines Kiln targets
// speak 1.41, the client newer versions).
func New(host string) (*Runtime, error) {
	opts := []client.Opt{client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	} else {
		opts = append(opts, client.FromEnv) // DOCKER_HOST, DOCKER_TLS_VERIFY, …
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: connect to %q: %w", host, err)
	}
	return &Runtime{cli: cli, host: cli.DaemonHost(), names: make(map[string]string), pooled: make(map[string]string)}, nil
}

// Host returns the engine address this Runtime talks to.
func (r *Runtime) Host() string { return r.host }

// Close releases the connections to the engine.
func (r *Runtime) Close() error { return r.cli.Close() }

// Ping checks the engine answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx); err != nil {
		return r.wrap("ping", err)
	}
	return nil
}

// Create creates the sandbox's network and container, both named
// spec.Name, and starts the container. On any failure it removes what it
// made, so a failed Create leaves nothing behind; a Create canceled at a bad
// moment can still leave something, which Destroy(spec.Name) removes.
// LabelManaged is always set.
//
// Four round trips on the engine, the first two side by side: inspect the
// image, create the network, create the container, start it.
func (r *Runtime) Create(ctx context.Context, spec sandbox.Spec) (string, error) {
	if !validName.MatchString(spec.Name) {
		return "", fmt.Errorf("docker: create: sandbox name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", spec.Name)
	}
	if spec.Image == "" {
		return "", fmt.Errorf("docker: create %s: spec has no Image", spec.Name)
	}
	mounts, err := r.mounts(spec.Mounts)
	if err != nil {
		return "", fmt.Errorf("docker: create %s: %w", spec.Name, err)
	}
	labels := make(map[string]string, len(spec.Labels)+1)
	maps.Copy(labels, spec.Labels)
	labels[sandbox.LabelManaged] = "true" // Destroy and cleanups go by it

	// The image check and the network creation are independent: run them
	// side by side to save a round trip on the job's critical path. A
	// missing image costs a network removal, which is the rare case.
	imgErr := make(chan error, 1)
	go func() {
		_, err := r.cli.ImageInspect(ctx, spec.Image)
		imgErr <- err
	}()
	netName, pooled := spec.Name, ""
	r.mu.Lock()
	pool := r.pool
	r.mu.Unlock()
	// Podman: user-mode networking (slirp4netns), a private network stack
	// per sandbox with outbound NAT and no bridge or firewall rules shared
	// with other sandboxes. Netavark 1.4 (Podman 4.3) keeps its isolation
	// between bridges in global firewall rules that one network's teardown
	// removes for all: under overlapping sandboxes, one could reach another.
	podman := r.isPodman(ctx)
	if pool != nil && !podman {
		pooled = pool.take()
	}
	var netErr error
	switch {
	case podman:
		netName = ""
	case pooled != "":
		netName = pooled
	default:
		netErr = r.createNetwork(ctx, spec.Name, labels)
	}
	// A network of that name that existed before is not ours to remove;
	// after any other failure (a canceled call, say) ours may exist.
	netOurs := netName == spec.Name && !isConflict(netErr)
	giveBack := func() {
		if pooled != "" {
			pool.put(pooled)
		}
	}
	if err := <-imgErr; err != nil {
		giveBack()
		if netOurs {
			r.cleanup(ctx, "", spec.Name)
		}
		if cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("docker: create %s: image %q: %w (Create never pulls: see Pull)",
				spec.Name, spec.Image, sandbox.ErrImageNotFound)
		}
		return "", r.wrap("create "+spec.Name+": inspect image "+spec.Image, err)
	}
	if netErr != nil {
		if netOurs {
			r.cleanup(ctx, "", spec.Name)
		}
		return "", r.wrap("create "+spec.Name+": network", netErr)
	}

	var pids *int64
	if spec.PidsLimit > 0 {
		pids = &spec.PidsLimit
	}
	var swap int64
	if spec.MemoryBytes > 0 {
		swap = spec.MemoryBytes // no swap beyond the memory limit
	}
	cfg := &container.Config{
		Image:      spec.Image,
		Entrypoint: []string{"/bin/sh", "-c", idleScript},
		Env:        spec.Env,
		WorkingDir: spec.WorkDir,
		Labels:     labels,
	}
	hostCfg := &container.HostConfig{
		NetworkMode: container.NetworkMode(cmp.Or(netName, "slirp4netns")),
		Mounts:      mounts,
		Privileged:  false,
		CapDrop:     droppedCaps,
		SecurityOpt: []string{"no-new-privileges"},
		Sysctls:     map[string]string{"net.ipv4.ping_group_range": "0 2147483647"},
		// The idle process prints nothing and Exec output is streamed,
		// not logged: skip the engine's log file.
		LogConfig: container.LogConfig{Type: "none"},
		Resources: container.Resources{
			NanoCPUs:   int64(spec.CPUs * 1e9),
			Memory:     spec.MemoryBytes,
			MemorySwap: swap,
			PidsLimit:  pids,
		},
	}
	var netCfg *network.NetworkingConfig
	if netName != "" {
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}}
	}
	created, err := r.cli.ContainerCreate(ctx, cfg, hostCfg, netCfg, nil, spec.Name)
	if err != nil {
		ctr := spec.Name // may exist if the call failed late
		if isConflict(err) {
			ctr = "" // an older one of that name: not ours
		}
		r.cleanup(ctx, ctr, spec.Name)
		giveBack() // after the container is gone
		if cerrdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "image") {
			// Removed between the inspect and the create.
			return "", fmt.Errorf("docker: create %s: image %q: %w", spec.Name, spec.Image, sandbox.ErrImageNotFound)
		}
		return "", r.wrap("create "+spec.Name+": container", err)
	}
	if err := r.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		r.cleanup(ctx, created.ID, spec.Name)
		giveBack()
		return "", r.wrap("create "+spec.Name+": start", err)
	}
	if err := r.guardNetwork(ctx, created.ID); err != nil {
		// Fail closed: a sandbox whose firewall is not in place never
		// runs a step.
		r.cleanup(ctx, created.ID, spec.Name)
		giveBack()
		return "", fmt.Errorf("docker: create %s: %w", spec.Name, err)
	}
	r.mu.Lock()
	r.names[created.ID] = spec.Name
	if pooled != "" {
		r.pooled[created.ID] = pooled
	}
	r.mu.Unlock()
	return created.ID, nil
}

// EnableNetworkGuard makes Create install g's firewall in every sandbox's
// network namespace before it returns, so before any step runs (see
// package netguard); a sandbox whose firewall cannot be installed is
// removed and Create fails. The agent must run on the engine's host, as
// root. nil turns it off.
func (r *Runtime) EnableNetworkGuard(g *netguard.Guard) {
	r.mu.Lock()
	r.guard = g
	r.mu.Unlock()
}

// guardNetwork installs the firewall in the started container's network
// namespace (its SandboxKey, checked against its main process's): one
// inspect more.
func (r *Runtime) guardNetwork(ctx context.Context, id string) error {
	r.mu.Lock()
	g := r.guard
	r.mu.Unlock()
	if g == nil {
		return nil
	}
	c, err := r.cli.ContainerInspect(ctx, id)
	if err != nil {
		return r.wrap("firewall: inspect", err)
	}
	if c.State == nil || c.State.Pid == 0 {
		return fmt.Errorf("firewall: %w: the container is not running", sandbox.ErrGone)
	}
	var netns string
	if c.NetworkSettings != nil {
		netns = c.NetworkSettings.SandboxKey
	}
	return g.Apply(ctx, c.State.Pid, netns)
}

// cleanup removes what a failed Create made: the container ctr (id or
// name; "" for none) and the network net, on a context that outlives ctx's
// cancellation. Errors are dropped: the Create error is the one to report,
// and Destroy(spec.Name), which the caller always calls, tries again.
func (r *Runtime) cleanup(ctx context.Context, ctr, net string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if ctr != "" {
		_ = r.cli.ContainerRemove(ctx, ctr, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	if net != "" {
		_ = r.networkRemove(ctx, net)
	}
}

// LayerSize returns the size of the sandbox's writable layer (the
// engine's SizeRw; Docker and Podman both compute it, by walking the
// layer's upper directory).
func (r *Runtime) LayerSize(ctx context.Context, id string) (int64, error) {
	c, _, err := r.cli.ContainerInspectWithRaw(ctx, id, true)
	if err != nil {
		return 0, r.wrap("inspect", err)
	}
	if c.SizeRw == nil {
		return 0, nil
	}
	return *c.SizeRw, nil
}

// Destroy force-removes the container (with its anonymous volumes) and its
// network. id is what Create returned, or an Info.ID from List, or the
// sandbox name. A sandbox already gone is not an error, nor is a Destroy
// racing another of the same sandbox. A container without LabelManaged is
// not touched.
//
// Two round trips when this Runtime created the sandbox (remove the
// container, then its network); one more, an inspect, otherwise.
func (r *Runtime) Destroy(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("docker: destroy: empty id")
	}
	r.mu.Lock()
	name, known := r.names[id]
	r.mu.Unlock()
	if !known {
		c, err := r.cli.ContainerInspect(ctx, id)
		switch {
		case isGone(err):
			// No container; id may still name a network left by a Create
			// that died between the two.
			return r.removeOrphanNetwork(ctx, id)
		case err != nil:
			return r.wrap("destroy "+id+": inspect", err)
		}
		if c.Config == nil || c.Config.Labels[sandbox.LabelManaged] != "true" {
			return fmt.Errorf("docker: destroy %s: not a Kiln sandbox (no %s label); left alone", id, sandbox.LabelManaged)
		}
		name = strings.TrimPrefix(c.Name, "/")
	}
	err := r.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case strings.Contains(err.Error(), "already in progress"):
		// Another Destroy of the same sandbox is removing it (Docker
		// answers 409): let it finish, then make sure the network goes.
		if err := r.waitGone(ctx, id); err != nil {
			return err
		}
	default:
		return r.wrap("destroy "+id+": remove container", err)
	}
	r.mu.Lock()
	pooled, isPooled := r.pooled[id]
	delete(r.pooled, id)
	pool := r.pool
	r.mu.Unlock()
	if isPooled && pool != nil {
		pool.put(pooled) // the container is gone: the network is free
	} else if err := r.removeNetwork(ctx, name); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.names, id)
	r.mu.Unlock()
	return nil
}

// waitGone waits until the container id no longer exists.
func (r *Runtime) waitGone(ctx context.Context, id string) error {
	delay := 5 * time.Millisecond
	for {
		_, err := r.cli.ContainerInspect(ctx, id)
		switch {
		case cerrdefs.IsNotFound(err):
			return nil
		case err != nil:
			return r.wrap("destroy "+id+": wait for removal", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("docker: destroy %s: wait for removal: %w", id, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// removeOrphanNetwork removes the network name if it exists without its
// container and carries LabelManaged; a network Kiln did not make is left
// alone.
func (r *Runtime) removeOrphanNetwork(ctx context.Context, name string) error {
	n, err := r.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return nil
	case err != nil:
		return r.wrap("destroy "+name+": inspect network", err)
	case n.Labels[sandbox.LabelManaged] != "true":
		return nil
	}
	return r.removeNetwork(ctx, n.ID)
}

// networkChanges serializes, per engine, the network creations and
// removals of every Runtime in this process. Docker's bridge driver
// updates the firewall rules that isolate one bridge network from another
// by checking, then changing: two changes at once have been seen here to
// leave two sandboxes' networks able to reach each other
// (TestConformancePooledNetworks/docker/OwnNetwork, on Docker 20.10, in 2
// of some 6 full runs while a pool filled beside a sandbox's teardown).
// A network change takes 100-300 ms and is off a job's critical path when
// networks are pooled.
var networkChanges sync.Map // engine host -> *sync.Mutex

func (r *Runtime) networkLock() func() {
	mu, _ := networkChanges.LoadOrStore(r.host, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

// createNetwork creates a bridge network, one change at a time.
func (r *Runtime) createNetwork(ctx context.Context, name string, labels map[string]string) error {
	defer r.networkLock()()
	_, err := r.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: network.NetworkBridge, Labels: labels})
	return err
}

// networkRemove removes a network, one change at a time.
func (r *Runtime) networkRemove(ctx context.Context, name string) error {
	defer r.networkLock()()
	return r.cli.NetworkRemove(ctx, name)
}

// removeNetwork removes a sandbox network; one already gone is fine.
func (r *Runtime) removeNetwork(ctx context.Context, name string) error {
	err := r.networkRemove(ctx, name)
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	return r.wrap("destroy "+name+": remove network", err)
}

// List returns the sandboxes (running or not) carrying all the labels.
func (r *Runtime) List(ctx context.Context, labels map[string]string) ([]sandbox.Info, error) {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	cs, err := r.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		if strings.Contains(err.Error(), "getting container from store") && strings.Contains(err.Error(), "container not known") {
			// Podman 4.3 keeps a container whose storage is gone in its
			// database, and then fails every listing: say how to repair it.
			err = fmt.Errorf("%w (the engine's database names a container its storage lost: remove it with `podman rm -f ID`)", err)
		}
		return nil, r.wrap("list", err)
	}
	out := make([]sandbox.Info, 0, len(cs))
	for _, c := range cs {
		info := sandbox.Info{ID: c.ID, Labels: c.Labels}
		if len(c.Names) > 0 {
			info.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		// Filters are applied by the engine; check again so an engine
		// that ignores one cannot hand back someone else's container.
		if hasLabels(info.Labels, labels) {
			out = append(out, info)
		}
	}
	return out, nil
}

// isConflict reports a name already in use. Docker answers 409; Podman
// 4.3's compatible API answers 500 with the reason in the message.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if cerrdefs.IsConflict(err) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "already exists") || strings.Contains(msg, "already in use")
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// wrap adds context to an engine error and marks connection failures as
// sandbox.ErrEngineUnavailable and missing containers as
// sandbox.ErrNotFound.
func (r *Runtime) wrap(op string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("docker: %s: %w", op, err)
	case client.IsErrConnectionFailed(err):
		return fmt.Errorf("docker: %s: %w at %s: %w", op, sandbox.ErrEngineUnavailable, r.host, err)
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("docker: %s: %w: %w", op, sandbox.ErrNotFound, err)
	}
	return fmt.Errorf("docker: %s: %w", op, err)
}

// isGone reports a container that does not exist. Podman 4.3 answers an
// inspect racing a removal with 500 "no such container" instead of 404.
func isGone(err error) bool {
	return cerrdefs.IsNotFound(err) || (err != nil && strings.Contains(err.Error(), "no such container"))
}
