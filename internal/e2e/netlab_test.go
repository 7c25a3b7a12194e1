package e2e

// A small network of "hosts" for the multi-host test: each host is a
// network namespace with one veth onto a bridge, and the test's own
// (root) namespace is on the bridge too, as the gateway, so that what
// stays there (the test, PostgreSQL's socket, the S3 server through a
// forwarder, the fake GitHub) is reachable from every host.
//
//	root namespace: GATEWAY (10.231.N.1) ── veth ──┐
//	                                               sw0 (a bridge, in namespace PREFIX-sw)
//	host s1: eth0 10.231.N.11 ─── veth (p-s1) ─────┤
//	host a1: eth0 10.231.N.21 ─── veth (p-a1) ─────┘ …
//
// The bridge lives in a namespace of its own rather than in the root one:
// there its frames meet an empty firewall, while the root namespace's
// FORWARD chain (Docker's, policy DROP, with br_netfilter) would drop
// traffic bridged between two hosts, and the test must not change the
// machine's firewall. Cutting a host off takes its veth down at the
// bridge.
//
// Names carry the test process's pid (PREFIX is "kmh" + pid), so that a
// run killed before its cleanup leaves namespaces another run recognizes
// as dead and removes, with whatever still runs in them.

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kilnci/kiln/internal/testenv"
)

// netlabPrefix starts the name of every namespace and link a netlab makes.
const netlabPrefix = "kmh"

type netlab struct {
	t       *testing.T
	prefix  string // netlabPrefix + pid
	subnet  string // "10.231.N": the /24 of the bridge
	gateway string // the root namespace's address on the bridge
	hosts   int
}

// netHost is one host of a netlab: a network namespace and its address.
type netHost struct {
	lab  *netlab
	name string // s1, a1, …
	ns   string
	ip   string
}

// requireNetlab skips the test unless it can make network namespaces (as
// root, with ip and nsenter), or fails it where the engines are required
// (KILN_REQUIRE_ENGINES=1, as CI's scripts/test.sh sets): there a skip
// would hide that the test never ran.
func requireNetlab(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "network namespaces need " + strings.Join(missing, ", ") + " (run the test as root on a machine with iproute2 and util-linux)"
	if os.Getenv(testenv.EnvRequireEngines) == "1" {
		t.Fatal(msg + " (" + testenv.EnvRequireEngines + "=1)")
	}
	t.Skip(msg)
}

// ipCmd runs ip with args and fails the test if it fails.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetlab makes the bridge and the gateway's link, removing first what
// dead runs left; everything is removed when the test ends.
func newNetlab(t *testing.T) *netlab {
	t.Helper()
	removeDeadNetlabs(t)
	l := &netlab{t: t, prefix: netlabPrefix + strconv.Itoa(os.Getpid())}
	l.subnet = freeSubnet(t)
	l.gateway = l.subnet + ".1"
	sw := l.prefix + "-sw"
	ipCmd(t, "netns", "add", sw)
	t.Cleanup(func() { l.remove() })
	ipCmd(t, "-n", sw, "link", "add", "name", "sw0", "type", "bridge")
	ipCmd(t, "-n", sw, "link", "set", "dev", "sw0", "up")
	ipCmd(t, "link", "add", l.prefix, "type", "veth", "peer", "name", "uplink", "netns", sw)
	ipCmd(t, "addr", "add", l.gateway+"/24", "dev", l.prefix)
	ipCmd(t, "link", "set", "dev", l.prefix, "up")
	ipCmd(t, "-n", sw, "link", "set", "dev", "uplink", "master", "sw0", "up")
	return l
}

// freeSubnet picks a /24 of 10.231.0.0/16 no interface of this machine is
// on, from the pid on (Docker's pool here is 10.213.0.0/16).
func freeSubnet(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v\n%s", err, out)
	}
	for i := range 256 {
		s := fmt.Sprintf("10.231.%d", (os.Getpid()+i)%256)
		if !strings.Contains(string(out), " "+s+".") {
			return s
		}
	}
	t.Fatal("no free /24 in 10.231.0.0/16")
	return ""
}

// namespaces lists the network namespaces a netlab made (by name).
func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// removeDeadNetlabs removes the namespaces (and so their links) of
// netlabs whose test process is gone, first killing what still runs in
// them (the servers and agents of a run killed before its cleanup).
func removeDeadNetlabs(t *testing.T) {
	t.Helper()
	for _, ns := range namespaces(t, netlabPrefix) {
		pid, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(ns, "-", 2)[0], netlabPrefix))
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // not a netlab's, or its run is alive
		}
		t.Logf("removing %s, left by a dead run (pid %d)", ns, pid)
		removeNamespace(t, ns)
	}
}

// removeNamespace kills what runs in ns, then deletes it.
func removeNamespace(t *testing.T, ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		t.Logf("ip netns del %s: %v\n%s", ns, err, out)
	}
}

// remove deletes every namespace of the lab: the bridge's takes the
// gateway's link with it (its peer). Processes started through command
// are stopped by their own cleanups, which run first (registered later).
func (l *netlab) remove() {
	for _, ns := range namespaces(l.t, l.prefix+"-") {
		removeNamespace(l.t, ns)
	}
}

// addHost makes a host: a namespace with loopback up and eth0 on the
// bridge at the next address.
func (l *netlab) addHost(name string) *netHost {
	l.t.Helper()
	l.hosts++
	h := &netHost{lab: l, name: name, ns: l.prefix + "-" + name, ip: fmt.Sprintf("%s.%d", l.subnet, 10+l.hosts)}
	sw := l.prefix + "-sw"
	ipCmd(l.t, "netns", "add", h.ns)
	ipCmd(l.t, "-n", sw, "link", "add", "name", "p-"+name, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	ipCmd(l.t, "-n", sw, "link", "set", "dev", "p-"+name, "master", "sw0", "up")
	ipCmd(l.t, "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
	ipCmd(l.t, "-n", h.ns, "link", "set", "dev", "eth0", "up")
	ipCmd(l.t, "-n", h.ns, "link", "set", "dev", "lo", "up")
	return h
}

// cut takes the host's link down at the bridge: nothing it sends arrives,
// and nothing reaches it, until mend.
func (h *netHost) cut() {
	h.lab.t.Helper()
	ipCmd(h.lab.t, "-n", h.lab.prefix+"-sw", "link", "set", "dev", "p-"+h.name, "down")
}

func (h *netHost) mend() {
	h.lab.t.Helper()
	ipCmd(h.lab.t, "-n", h.lab.prefix+"-sw", "link", "set", "dev", "p-"+h.name, "up")
}

// start runs kiln with args on the host: in its network namespace only
// (nsenter --net, which then execs kiln, so the process is kiln's own and
// a SIGKILL reaches it), sharing the machine's files, mounts and Unix
// sockets (the engine's, PostgreSQL's).
func (h *netHost) start(env []string, args ...string) *proc {
	h.lab.t.Helper()
	return startProcOf(h.lab.t, "nsenter", env, append([]string{"--net=/run/netns/" + h.ns, "--", kilnBin}, args...)...)
}

// listen listens on a free port of the gateway's address: there every
// host reaches the test's own servers.
func (l *netlab) listen() net.Listener {
	l.t.Helper()
	ln, err := net.Listen("tcp", l.gateway+":0")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

// forward relays TCP connections to the gateway's address on to target
// (a server of the root namespace that listens on loopback only) and
// returns the address hosts dial.
func (l *netlab) forward(target string) string {
	l.t.Helper()
	ln := l.listen()
	var wg sync.WaitGroup
	l.t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	})
	return ln.Addr().String()
}
