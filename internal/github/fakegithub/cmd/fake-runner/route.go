package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// HostAlias is the host name that, in a JIT configuration's serverUrl,
// means "the machine this container runs on". The runner resolves it to
// its default gateway: in a container on a bridge network (Docker's or
// Podman's, one per job in Kiln) that is the bridge's address on the host,
// where a server listening on 0.0.0.0 answers; where the gateway does not
// answer (slirp4netns), to the host's address the engine wrote into
// /etc/hosts (see hostCandidates). ".test" is reserved (RFC 2606): the
// name can never mean anything else.
const HostAlias = "host.kiln.test"

// Route flags from linux/route.h.
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// defaultGateway returns the gateway of the default route in a
// /proc/net/route table: the up, gatewayed route to 0.0.0.0/0 with the
// lowest metric. The kernel prints addresses as the hex of the 32-bit
// value in network order read as a native integer, so on a little-endian
// machine 192.168.1.1 is "0101A8C0".
func defaultGateway(r io.Reader) (net.IP, error) {
	sc := bufio.NewScanner(r)
	var (
		best   net.IP
		metric uint64
		line   int
	)
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if line == 1 || len(f) < 8 { // the header: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
			continue
		}
		dest, gw, flags, met, mask := f[1], f[2], f[3], f[6], f[7]
		fl, err := strconv.ParseUint(flags, 16, 32)
		if err != nil || fl&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		if dest != "00000000" || mask != "00000000" {
			continue
		}
		ip, err := parseRouteAddr(gw)
		if err != nil {
			return nil, fmt.Errorf("route table line %d: gateway %q: %w", line, gw, err)
		}
		m, err := strconv.ParseUint(met, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("route table line %d: metric %q: %w", line, met, err)
		}
		if best == nil || m < metric {
			best, metric = ip, m
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if best == nil {
		return nil, errors.New("no default route")
	}
	return best, nil
}

// parseRouteAddr decodes one /proc/net/route address.
func parseRouteAddr(s string) (net.IP, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return nil, errors.New("want 8 hex digits")
	}
	ip := make(net.IP, 4)
	binary.NativeEndian.PutUint32(ip, binary.BigEndian.Uint32(b))
	return ip, nil
}

// hostNames are the names engines write into a container's /etc/hosts for
// the host: Podman's host.containers.internal (the bridge's address, or
// with slirp4netns the host's own address), Docker's host.docker.internal
// (when asked for with host-gateway).
var hostNames = []string{"host.containers.internal", "host.docker.internal"}

// hostCandidates are the addresses HostAlias may mean, in the order tried:
// the default gateway from the route table (on a bridge network, the
// bridge's host side), then the host names of the hosts file. The gateway
// does not always answer: slirp4netns (Podman's user-mode networking)
// refuses its gateway 10.0.2.2 unless host loopback is allowed, and there
// the hosts file has the host's address.
func hostCandidates(routeFile, hostsFile string) ([]string, error) {
	var out []string
	var errs []error
	if f, err := os.Open(routeFile); err != nil {
		errs = append(errs, err)
	} else {
		gw, err := defaultGateway(f)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", routeFile, err))
		} else {
			out = append(out, gw.String())
		}
	}
	if f, err := os.Open(hostsFile); err == nil {
		for _, ip := range lookupHosts(f, hostNames) {
			if !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
		f.Close()
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// lookupHosts returns the addresses a hosts file gives names, in the order
// of names.
func lookupHosts(r io.Reader, names []string) []string {
	found := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 || net.ParseIP(f[0]) == nil {
			continue
		}
		for _, n := range f[1:] {
			n = strings.ToLower(n)
			if _, seen := found[n]; !seen {
				found[n] = f[0]
			}
		}
	}
	var out []string
	for _, n := range names {
		if ip, ok := found[n]; ok {
			out = append(out, ip)
		}
	}
	return out
}

// gatewayDialer dials like d, but HostAlias goes to the first of its
// hostCandidates that accepts the connection (read at each dial, so a
// network that changes under the runner is followed).
func gatewayDialer(d *net.Dialer, routeFile, hostsFile string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || !strings.EqualFold(strings.TrimSuffix(host, "."), HostAlias) {
			return d.DialContext(ctx, network, addr)
		}
		ips, err := hostCandidates(routeFile, hostsFile)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", HostAlias, err)
		}
		var errs []error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip, port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, fmt.Errorf("%s (%s): %w", HostAlias, strings.Join(ips, ", "), errors.Join(errs...))
	}
}
