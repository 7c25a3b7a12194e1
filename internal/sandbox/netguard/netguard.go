// Package netguard keeps sandboxes off the host's own services and private
// networks: it installs an nftables table in a sandbox's network namespace
// whose output chain refuses every packet to the host's addresses and to
// private, link-local, CGNAT and ULA ranges, except the endpoints Kiln serves
// to jobs (the cache service) and the sandbox's DNS resolvers (port 53).
// The internet stays reachable.
//
// Why in the sandbox's namespace and not on the host's input and forward
// hooks: Podman sandboxes use user-mode networking (slirp4netns), whose
// connections leave from a host process like any other, so rules on the
// host cannot tell them apart; inside the sandbox's namespace every packet
// a job sends is the sandbox's, on both engines. The table lives and dies
// with the namespace (nothing to clean up on the host, nothing shared with
// the engines' own iptables rules or with other agents), and a job cannot
// change it: sandboxes run without CAP_NET_ADMIN, and without NET_RAW, so
// no packet socket bypasses the hook.
//
// Why the nft binary and not netlink from Go: the ruleset is readable text,
// the same an operator would type and `nft list table inet kiln` shows
// back, applied atomically by one `nft -f` transaction; a netlink library
// would need every match assembled as bytecode expressions by hand.
package netguard

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TableName is the nftables table (family inet) installed in each sandbox.
const TableName = "kiln"

// applyTimeout bounds one nft run.
const applyTimeout = 30 * time.Second

// blockedRanges are never reachable from a sandbox, whatever the host's
// addresses: private (RFC 1918), loopback, link-local, CGNAT (RFC 6598),
// "this network", IETF protocol assignments, benchmarking, multicast and
// reserved; ULA, link-local and multicast for IPv6, and IPv4-mapped
// addresses.
var blockedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"),
	netip.MustParsePrefix("::/127"), // unspecified and loopback
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// Policy is what one sandbox may reach among the blocked addresses.
type Policy struct {
	// Allow are TCP endpoints a sandbox may connect to although their
	// address is blocked: the cache service Kiln serves to jobs.
	Allow []netip.AddrPort
	// DNS are the sandbox's resolvers, reachable on port 53 (TCP and UDP).
	DNS []netip.Addr
	// Host are the host's own addresses, blocked even when public.
	Host []netip.Addr
}

// Ruleset renders p as an nft script that replaces the table atomically:
// applying it twice leaves one table, the second one's.
func Ruleset(p Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", TableName, TableName, TableName)
	var v4, v6 []string
	add := func(p netip.Prefix) {
		p = p.Masked()
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	for _, r := range blockedRanges {
		add(r)
	}
	for _, a := range dedupe(p.Host) {
		a = a.Unmap()
		if !covered(a) {
			add(netip.PrefixFrom(a, a.BitLen()))
		}
	}
	fmt.Fprintf(&b, "\tset blocked4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { %s }\n\t}\n", strings.Join(v4, ", "))
	fmt.Fprintf(&b, "\tset blocked6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { %s }\n\t}\n", strings.Join(v6, ", "))
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n")
	b.WriteString("\t\toifname \"lo\" accept\n")
	for _, d := range dedupe(p.DNS) {
		d = d.Unmap()
		fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto { tcp, udp } th dport 53 accept\n", family(d), d)
	}
	for _, ap := range dedupeAddrPorts(p.Allow) {
		a := ap.Addr().Unmap()
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport %d accept\n", family(a), a, ap.Port())
	}
	// Neighbour discovery is multicast ICMPv6; without it IPv6 stops.
	b.WriteString("\t\ticmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept\n")
	// Refused at once: a TCP reset (connection refused) rather than an
	// ICMP error, which TCP only heeds after retrying its SYN.
	b.WriteString("\t\tip daddr @blocked4 meta l4proto tcp reject with tcp reset\n")
	b.WriteString("\t\tip6 daddr @blocked6 meta l4proto tcp reject with tcp reset\n")
	b.WriteString("\t\tip daddr @blocked4 reject with icmpx type admin-prohibited\n")
	b.WriteString("\t\tip6 daddr @blocked6 reject with icmpx type admin-prohibited\n")
	b.WriteString("\t}\n}\n")
	return b.String()
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "ip"
	}
	return "ip6"
}

// covered reports an address inside one of blockedRanges (an interval set
// refuses overlapping elements).
func covered(a netip.Addr) bool {
	return slices.ContainsFunc(blockedRanges, func(p netip.Prefix) bool { return p.Contains(a) })
}

func dedupe(as []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if a.IsValid() && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func dedupeAddrPorts(as []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(as))
	for _, a := range as {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if a.IsValid() && a.Port() != 0 && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Guard applies the policy to sandboxes. It is safe for concurrent use.
type Guard struct {
	allow []netip.AddrPort
	nft   string
	enter string
}

// New checks that this process can manage sandbox firewalls (the nft and
// nsenter tools are installed, and it may enter a network namespace and
// change its nftables: root, or CAP_SYS_ADMIN and CAP_NET_ADMIN) and
// returns a Guard that lets sandboxes reach allow. The error says what is
// missing.
func New(ctx context.Context, allow []netip.AddrPort) (*Guard, error) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("sandbox firewall: the nft tool (package nftables) is not installed: %w", err)
	}
	enter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("sandbox firewall: the nsenter tool (package util-linux) is not installed: %w", err)
	}
	g := &Guard{allow: slices.Clone(allow), nft: nft, enter: enter}
	// A dry run (nft -c) in this process's own namespace: it needs the
	// same rights as the real thing and changes nothing.
	if err := g.run(ctx, "/proc/self/ns/net", Ruleset(g.policy(nil)), "-c"); err != nil {
		return nil, fmt.Errorf("sandbox firewall: cannot manage nftables rules (run the agent as root, or pass -sandbox-firewall=off to let jobs reach the host's services and private networks): %w", err)
	}
	return g, nil
}

// Allowed returns the endpoints sandboxes may reach.
func (g *Guard) Allowed() []netip.AddrPort { return slices.Clone(g.allow) }

func (g *Guard) policy(dns []netip.Addr) Policy {
	return Policy{Allow: g.allow, DNS: dns, Host: hostAddrs()}
}

// Apply installs the table in the network namespace netns (a path to it,
// as the engine reports it: Docker's and Podman's SandboxKey), which must
// be the namespace of the process pid (the sandbox's main process, as this
// host sees it): an engine on another host would name a process and a
// path of its own, and the table must never land in some other namespace,
// least of all the host's. The resolvers named in that process's
// /etc/resolv.conf are reachable on port 53. The host's addresses are read
// now, so a sandbox made after an address changed gets the new one.
func (g *Guard) Apply(ctx context.Context, pid int, netns string) error {
	if pid <= 0 {
		return fmt.Errorf("sandbox firewall: no process id for the sandbox (is it running?)")
	}
	if netns == "" {
		return fmt.Errorf("sandbox firewall: the engine names no network namespace for the sandbox")
	}
	proc := "/proc/" + strconv.Itoa(pid)
	if err := sameNamespace(proc+"/ns/net", netns); err != nil {
		return fmt.Errorf("sandbox firewall: %w (the agent must run on the engine's host, in its PID and mount namespaces)", err)
	}
	dns, err := resolvers(proc + "/root/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sandbox firewall: read the sandbox's resolv.conf: %w", err)
	}
	return g.run(ctx, netns, Ruleset(g.policy(dns)))
}

// sameNamespace checks that the namespace files a and b are one namespace,
// not this process's own.
func sameNamespace(a, b string) error {
	ida, err := nsID(a)
	if err != nil {
		return err
	}
	idb, err := nsID(b)
	if err != nil {
		return err
	}
	self, err := nsID("/proc/self/ns/net")
	if err != nil {
		return err
	}
	switch {
	case ida != idb:
		return fmt.Errorf("%s and %s are different network namespaces", a, b)
	case ida == self:
		return fmt.Errorf("%s is the agent's own network namespace, not a sandbox's", b)
	}
	return nil
}

type nsIdentity struct{ dev, ino uint64 }

func nsID(path string) (nsIdentity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nsIdentity{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nsIdentity{}, fmt.Errorf("stat %s: no device and inode", path)
	}
	return nsIdentity{dev: uint64(st.Dev), ino: st.Ino}, nil
}

func (g *Guard) run(ctx context.Context, netns, ruleset string, flags ...string) error {
	ctx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	args := append([]string{"--net=" + netns, "--", g.nft}, flags...)
	args = append(args, "-f", "-")
	cmd := exec.CommandContext(ctx, g.enter, args...)
	cmd.Stdin = strings.NewReader(ruleset)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", netns, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// resolvers reads the nameserver lines of a resolv.conf.
func resolvers(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseResolvConf(f)
}

func parseResolvConf(f interface{ Read([]byte) (int, error) }) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		s, _, _ := strings.Cut(fields[1], "%") // fe80::1%eth0
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out, sc.Err()
}

// hostAddrs lists this host's interface addresses (the agent runs in the
// host's network namespace, where the engine's bridges are).
func hostAddrs() []netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// ParseAllow resolves "host:port" endpoints (a name resolves to all its
// addresses) for New.
func ParseAllow(ctx context.Context, endpoints []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, e := range endpoints {
		host, port, err := net.SplitHostPort(strings.TrimSpace(e))
		if err != nil {
			return nil, fmt.Errorf("sandbox firewall: allowed endpoint %q: want host:port: %w", e, err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("sandbox firewall: allowed endpoint %q: port %q: want 1-65535", e, port)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(p)))
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("sandbox firewall: allowed endpoint %q: %w", e, err)
		}
		for _, a := range ips {
			out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(p)))
		}
	}
	return out, nil
}
