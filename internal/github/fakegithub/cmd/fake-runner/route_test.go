package main

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const routeHeader = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

func littleEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the tables below are as a little-endian kernel prints them")
	}
}

func TestDefaultGateway(t *testing.T) {
	littleEndian(t)
	for _, tc := range []struct {
		name, table, want, err string
	}{
		{
			name: "docker bridge",
			table: routeHeader +
				"eth0\t00000000\t0100D50A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
				"eth0\t0000D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
			want: "10.213.0.1",
		},
		{
			name: "default route after others",
			table: routeHeader +
				"eth0\t0058A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
				"eth0\t00000000\t0158A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
			want: "192.168.88.1",
		},
		{
			name: "lowest metric wins",
			table: routeHeader +
				"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
				"eth0\t00000000\t010011AC\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
			want: "172.17.0.1",
		},
		{
			name: "down or gatewayless default routes are skipped",
			table: routeHeader +
				"eth0\t00000000\t0100D50A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n" + // not up
				"tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n" + // no gateway
				"eth1\t00000000\t0101000A\t0003\t0\t0\t50\t00000000\t0\t0\t0\n",
			want: "10.0.1.1",
		},
		{
			name: "a host route to 0.0.0.0 with a mask is no default",
			table: routeHeader +
				"eth0\t00000000\t0100D50A\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n",
			err: "no default route",
		},
		{name: "no default route", table: routeHeader + "eth0\t0000D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", err: "no default route"},
		{name: "empty", table: "", err: "no default route"},
		{name: "bad gateway", table: routeHeader + "eth0\t00000000\t01ZZ\t0003\t0\t0\t0\t00000000\t0\t0\t0\n", err: "line 2: gateway"},
		{name: "short lines are ignored", table: routeHeader + "eth0 00000000\n\n", err: "no default route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, err := defaultGateway(strings.NewReader(tc.table))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, %v; want error containing %q", ip, err, tc.err)
				}
				return
			}
			if err != nil || ip.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", ip, err, tc.want)
			}
		})
	}
}

// This machine's own table parses (or says plainly there is no default
// route): the format the tests above assume is the kernel's.
func TestDefaultGatewayOfThisMachine(t *testing.T) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		t.Skip("no /proc/net/route:", err)
	}
	defer f.Close()
	ip, err := defaultGateway(f)
	if err != nil && err.Error() != "no default route" {
		t.Fatal(err)
	}
	t.Logf("default gateway: %v", ip)
}

// The dialer sends host.kiln.test to the gateway in the route file and
// leaves every other name alone.
func TestGatewayDialer(t *testing.T) {
	littleEndian(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	routes := filepath.Join(t.TempDir(), "route")
	// 127.0.0.1 as the gateway: "0100007F".
	if err := os.WriteFile(routes, []byte(routeHeader+"eth0\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dial := gatewayDialer(&net.Dialer{}, routes, filepath.Join(t.TempDir(), "no-hosts"))
	for _, host := range []string{HostAlias, "HOST.Kiln.Test", HostAlias + ".", "127.0.0.1"} {
		c, err := dial(context.Background(), "tcp", net.JoinHostPort(host, port))
		if err != nil {
			t.Fatalf("dial %s: %v", host, err)
		}
		if got := c.RemoteAddr().String(); got != ln.Addr().String() {
			t.Errorf("dial %s reached %s", host, got)
		}
		c.Close()
	}
	none := filepath.Join(t.TempDir(), "none")
	if _, err := gatewayDialer(&net.Dialer{}, none, none)(context.Background(), "tcp", net.JoinHostPort(HostAlias, port)); err == nil || !strings.Contains(err.Error(), HostAlias) {
		t.Fatalf("dial without a route file: %v", err)
	}

	// A gateway that refuses (slirp4netns's 10.0.2.2 without host
	// loopback; here 127.0.0.2, where nothing listens on the port): the
	// host's address in the hosts file is tried next.
	refusing := filepath.Join(t.TempDir(), "route")
	if err := os.WriteFile(refusing, []byte(routeHeader+"tap0\t00000000\t0200007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost\n# comment\n127.0.0.1\thost.containers.internal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := gatewayDialer(&net.Dialer{}, refusing, hosts)(context.Background(), "tcp", net.JoinHostPort(HostAlias, port))
	if err != nil {
		t.Fatalf("dial with a refusing gateway: %v", err)
	}
	if got := c.RemoteAddr().String(); got != ln.Addr().String() {
		t.Errorf("reached %s", got)
	}
	c.Close()
}

func TestHostCandidates(t *testing.T) {
	littleEndian(t)
	dir := t.TempDir()
	routes, hosts := filepath.Join(dir, "route"), filepath.Join(dir, "hosts")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(routes, routeHeader+"eth0\t00000000\t0100580A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
	for _, tc := range []struct {
		name, hosts string
		want        []string
	}{
		{"docker: no host name", "127.0.0.1\tlocalhost\n10.213.5.2\tabc123\n", []string{"10.88.0.1"}},
		{"podman bridge: same as the gateway", "10.88.0.1\thost.containers.internal\n", []string{"10.88.0.1"}},
		{"podman slirp4netns", "192.0.2.2\thost.containers.internal host.docker.internal # both\n", []string{"10.88.0.1", "192.0.2.2"}},
		{"both names: podman's first", "172.17.0.1 HOST.DOCKER.INTERNAL\n10.0.0.9 host.containers.internal\n", []string{"10.88.0.1", "10.0.0.9", "172.17.0.1"}},
		{"junk lines", "host.containers.internal\nnot-an-ip host.containers.internal\n", []string{"10.88.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(hosts, tc.hosts)
			got, err := hostCandidates(routes, hosts)
			if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	// No route file: the hosts file alone; neither: an error.
	write(hosts, "192.0.2.2 host.containers.internal\n")
	if got, err := hostCandidates(filepath.Join(dir, "none"), hosts); err != nil || len(got) != 1 || got[0] != "192.0.2.2" {
		t.Fatalf("hosts only: %v, %v", got, err)
	}
	if _, err := hostCandidates(filepath.Join(dir, "none"), filepath.Join(dir, "none")); err == nil {
		t.Fatal("no route and no hosts file: no error")
	}
}
