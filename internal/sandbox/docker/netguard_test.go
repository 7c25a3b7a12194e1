package docker

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/netguard"
	"github.com/kilnci/kiln/internal/sandbox/sandboxtest"
	"github.com/kilnci/kiln/internal/testenv"
)

// A sandbox reaches nothing on the host: not a server listening on all the
// host's addresses (`kiln server -listen 0.0.0.0:8080`), whether through
// the host's side of the sandbox's bridge (Docker's gateway) or through the
// host's own address; except the endpoint Kiln serves to jobs (the cache
// service). The same probes from a sandbox without the firewall connect,
// which shows the probes work (and what jobs could do before). Every probe
// goes to an address of this machine.
func TestSandboxFirewall(t *testing.T) {
	hostIP := hostAddress(t)
	// Two servers on every address of the host: "admin" stands for the
	// API, which jobs must not reach; "cache" for the cache service.
	admin, cache := listenAll(t), listenAll(t)
	allowed := netip.AddrPortFrom(hostIP, cache.port)
	guard, err := netguard.New(t.Context(), []netip.AddrPort{allowed})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			for _, guarded := range []bool{false, true} {
				t.Run(fmt.Sprintf("guarded=%v", guarded), func(t *testing.T) {
					ctx := t.Context()
					r := newRuntime(t, e.Host)
					if guarded {
						r.EnableNetworkGuard(guard)
					}
					name := "kiln-netguard-" + randomHex(t)
					t.Cleanup(func() { _ = r.Destroy(context.Background(), name) })
					id, err := r.Create(ctx, sandbox.Spec{Name: name, Image: testenv.BaseImage,
						Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: "test-netguard"}})
					if err != nil {
						t.Fatal(err)
					}
					targets := []netip.AddrPort{netip.AddrPortFrom(hostIP, admin.port)}
					if gw := gateway(t, r, id); gw.IsValid() {
						// Docker: the host's side of the sandbox's bridge.
						targets = append(targets, netip.AddrPortFrom(gw, admin.port))
					}
					for _, to := range targets {
						ok, out := connect(t, r, id, to)
						if guarded && ok {
							t.Errorf("the sandbox reached %s on the host (the API's stand-in):\n%s", to, out)
						}
						if !guarded && !ok {
							t.Errorf("without the firewall the sandbox should reach %s (is the probe broken?):\n%s", to, out)
						}
					}
					if ok, out := connect(t, r, id, allowed); !ok {
						t.Errorf("the sandbox cannot reach the cache service's endpoint %s:\n%s", allowed, out)
					}
					if guarded {
						// The job cannot change the table (no CAP_NET_ADMIN)
						// nor go around it (no CAP_NET_RAW: no packet sockets).
						var out bytes.Buffer
						if _, err := r.Exec(ctx, id, sandbox.ExecSpec{Cmd: []string{"grep", "CapEff", "/proc/self/status"}, Output: &out}); err != nil {
							t.Fatal(err)
						}
						hex := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out.String()), "CapEff:"))
						caps, err := strconv.ParseUint(hex, 16, 64)
						if err != nil {
							t.Fatalf("CapEff %q: %v", out.String(), err)
						}
						const netAdmin, netRaw = 12, 13
						if caps&(1<<netAdmin|1<<netRaw) != 0 {
							t.Errorf("sandbox has CAP_NET_ADMIN or CAP_NET_RAW: CapEff %s", hex)
						}
					}
				})
			}
		})
	}
}

// connect runs busybox nc in the sandbox against to; ok when it connected.
func connect(t *testing.T, r *Runtime, id string, to netip.AddrPort) (bool, string) {
	t.Helper()
	var out bytes.Buffer
	code, err := r.Exec(t.Context(), id, sandbox.ExecSpec{
		Cmd:    []string{"nc", "-w", "10", to.Addr().String(), fmt.Sprint(to.Port())},
		Output: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	return code == 0, out.String()
}

// gateway returns the sandbox's gateway when it is on a bridge (Docker),
// or the zero Addr (Podman's user-mode networking has none on the host).
func gateway(t *testing.T, r *Runtime, id string) netip.Addr {
	t.Helper()
	c, err := r.cli.ContainerInspect(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.NetworkSettings.Networks {
		if a, err := netip.ParseAddr(n.Gateway); err == nil {
			return a
		}
	}
	return netip.Addr{}
}

// hostAddress is a non-loopback IPv4 address of this machine that is not
// on a container bridge (the address a server on 0.0.0.0 is reached at).
func hostAddress(t *testing.T) netip.Addr {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		if strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "kn") || strings.HasPrefix(i.Name, "docker") ||
			strings.HasPrefix(i.Name, "veth") || strings.HasPrefix(i.Name, "podman") || strings.HasPrefix(i.Name, "cni") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
					return ip.Unmap()
				}
			}
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine to listen on")
	return netip.Addr{}
}

type server struct{ port uint16 }

// listenAll listens on every address of the host and accepts (and closes)
// connections until the test ends.
func listenAll(t *testing.T) server {
	t.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			c.Close()
		}
	}()
	return server{port: uint16(ln.Addr().(*net.TCPAddr).Port)}
}

// The conformance suite passes with the firewall on (and pooled networks,
// as the agent runs them).
func TestConformanceFirewall(t *testing.T) {
	guard, err := netguard.New(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			sandboxtest.Run(t, func(t *testing.T) sandbox.Runtime {
				r := newRuntime(t, e.Host)
				r.EnableNetworkPool("test-"+randomHex(t), 2, nil)
				r.EnableNetworkGuard(guard)
				t.Cleanup(func() { r.DrainNetworkPool(context.Background()) })
				return leftovers{r}
			})
		})
	}
}
