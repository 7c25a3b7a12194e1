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
	"strconv"
	"strings"
)

// HostAlias is the host name that, in a JIT configuration's serverUrl,
// means "the machine this container runs on". The runner resolves it to
// its default gateway: in a container on a bridge network (Docker's or
// Podman's, one per job in Kiln) that is the bridge's address on the host,
// where a server listening on 0.0.0.0 answers. ".test" is reserved (RFC
// 2606): the name can never mean anything else.
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

// gatewayDialer dials like d, but HostAlias goes to the default gateway
// read from routeFile (normally /proc/net/route), read at each dial so a
// network that changes under the runner is followed.
func gatewayDialer(d *net.Dialer, routeFile string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && strings.EqualFold(strings.TrimSuffix(host, "."), HostAlias) {
			f, err := os.Open(routeFile)
			if err != nil {
				return nil, fmt.Errorf("resolve %s: %w", HostAlias, err)
			}
			gw, err := defaultGateway(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("resolve %s from %s: %w", HostAlias, routeFile, err)
			}
			addr = net.JoinHostPort(gw.String(), port)
		}
		return d.DialContext(ctx, network, addr)
	}
}
