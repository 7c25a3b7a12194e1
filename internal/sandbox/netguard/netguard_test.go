package netguard

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestRuleset(t *testing.T) {
	rs := Ruleset(Policy{
		Allow: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.2:8080"), netip.MustParseAddrPort("192.0.2.2:8080"), netip.MustParseAddrPort("[fd00::1]:9000")},
		DNS:   []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("fd00::3")},
		Host:  []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("10.213.0.1"), netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("::ffff:198.51.100.7")},
	})
	for _, want := range []string{
		"delete table inet kiln\n",
		"ip daddr 192.0.2.2 tcp dport 8080 accept",
		"ip6 daddr fd00::1 tcp dport 9000 accept",
		"ip daddr 10.0.2.3 meta l4proto { tcp, udp } th dport 53 accept",
		"ip6 daddr fd00::3 meta l4proto { tcp, udp } th dport 53 accept",
		"192.0.2.2/32", "2001:db8::5/128", "198.51.100.7/32", // the host's public addresses
		"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10",
		`oifname "lo" accept`,
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	if strings.Count(rs, "tcp dport 8080") != 1 {
		t.Errorf("duplicate allow rule:\n%s", rs)
	}
	// Inside a blocked range already: an interval set refuses overlaps.
	if strings.Contains(rs, "10.213.0.1/32") {
		t.Errorf("covered host address listed:\n%s", rs)
	}
	// Accepts come before the rejects.
	if strings.Index(rs, "tcp dport 8080 accept") > strings.Index(rs, "@blocked4 reject") {
		t.Errorf("allow rule after the reject:\n%s", rs)
	}
}

// root skips a test that needs to manage nftables.
func root(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (nftables in a network namespace of the test's own)")
	}
	for _, tool := range []string{"nft", "nsenter", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// The table is applied in a namespace of the test's own, twice: one table,
// the second's rules. No packet is sent.
func TestApplyIdempotent(t *testing.T) {
	root(t)
	ctx := t.Context()
	ns := exec.Command("unshare", "--net", "sleep", "600")
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Process.Kill(); _ = ns.Wait() })
	pid := ns.Process.Pid
	netns := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	// Wait until unshare has moved into its namespace (it execs sleep after).
	for {
		self, _ := os.Readlink("/proc/self/ns/net")
		other, err := os.Readlink(netns)
		if err != nil {
			t.Fatal(err)
		}
		if other != self {
			break
		}
	}
	for i, allow := range []string{"192.0.2.2:8080", "192.0.2.2:9090"} {
		g, err := New(ctx, []netip.AddrPort{netip.MustParseAddrPort(allow)})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Apply(ctx, pid, netns); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	out, err := exec.Command("nsenter", "--net="+netns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if n := bytes.Count(out, []byte("table inet kiln")); n != 1 {
		t.Fatalf("%d tables:\n%s", n, out)
	}
	if !bytes.Contains(out, []byte("dport 9090")) || bytes.Contains(out, []byte("dport 8080")) {
		t.Fatalf("not the second ruleset:\n%s", out)
	}
	// The host's own ruleset is untouched.
	host, _ := exec.Command("nft", "list", "tables").CombinedOutput()
	if bytes.Contains(host, []byte("table inet kiln\n")) {
		t.Fatalf("a kiln table in the host's namespace:\n%s", host)
	}
}

func TestApplyNeedsAProcess(t *testing.T) {
	g := &Guard{}
	if err := g.Apply(context.Background(), 0, "/proc/1/ns/net"); err == nil {
		t.Fatal("no error for pid 0")
	}
}

// The table never lands in a namespace that is not the sandbox's: not the
// agent's own (an engine on another host may name a pid that is some
// local process), not one other than the process's.
func TestApplyRefusesOtherNamespaces(t *testing.T) {
	root(t)
	g, err := New(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	if err := g.Apply(t.Context(), self, "/proc/self/ns/net"); err == nil || !strings.Contains(err.Error(), "own network namespace") {
		t.Fatalf("applied in the agent's own namespace: %v", err)
	}
	ns := exec.Command("unshare", "--net", "sleep", "600")
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Process.Kill(); _ = ns.Wait() })
	if err := g.Apply(t.Context(), self, "/proc/"+strconv.Itoa(ns.Process.Pid)+"/ns/net"); err == nil {
		t.Fatal("applied with a pid whose namespace is not the named one")
	}
	if err := g.Apply(t.Context(), 1<<22+1, "/proc/self/ns/net"); err == nil {
		t.Fatal("applied for a process that does not exist")
	}
	host, _ := exec.Command("nft", "list", "tables").CombinedOutput()
	if bytes.Contains(host, []byte("table inet kiln\n")) {
		t.Fatalf("a kiln table in the host's namespace:\n%s", host)
	}
}

func TestParseResolvConf(t *testing.T) {
	got, err := parseResolvConf(strings.NewReader("# comment\nsearch example.org\nnameserver 10.0.2.3\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\nnameserver ::ffff:127.0.0.11\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("127.0.0.11")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("nameserver 10.0.2.3\n")
	f.Add("nameserver fe80::1%eth0\nsearch a b\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, _ := parseResolvConf(strings.NewReader(s))
		for _, a := range got {
			if !a.IsValid() || a.Is4In6() {
				t.Fatalf("bad address %v from %q", a, s)
			}
			// Every address renders into a rule nft can read.
			if !strings.Contains(Ruleset(Policy{DNS: []netip.Addr{a}}), " daddr "+a.String()+" ") {
				t.Fatalf("%v missing from the ruleset", a)
			}
		}
	})
}

func TestParseAllow(t *testing.T) {
	got, err := ParseAllow(t.Context(), []string{"192.0.2.2:8080", "[fd00::1]:443", " 127.0.0.1:1 "})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != netip.MustParseAddrPort("192.0.2.2:8080") || got[1] != netip.MustParseAddrPort("[fd00::1]:443") {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"192.0.2.2", "192.0.2.2:0", "192.0.2.2:70000", "192.0.2.2:http", ":"} {
		if _, err := ParseAllow(t.Context(), []string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
