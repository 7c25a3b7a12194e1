package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// `kiln up -listen 0.0.0.0:PORT`, as the README once suggested: a job
// asks the server's /healthz at the host's own address and at its default
// gateway (Docker: the host's side of the sandbox's bridge). With the
// sandbox firewall (the default) it reaches neither; with
// -sandbox-firewall=off it reaches the host's address, which shows the
// probe works. With -public-url naming the host's address (where jobs are
// told the cache service is), the job reaches the server there and only
// there. Every probe goes to an address of this machine.
func TestJobsCannotReachTheServer(t *testing.T) {
	requireKilnFlags(t, "up", "-sandbox-firewall")
	hostIP := hostAddress(t)
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		for _, firewall := range []string{"off", "on", "on-public-url"} {
			t.Run("firewall="+firewall, func(t *testing.T) {
				dataDir := t.TempDir()
				_, port, _ := net.SplitHostPort(freeAddr(t))
				args := []string{"up", "-listen", "0.0.0.0:" + port, "-engine", e.Host, "-memory", "256m"}
				switch firewall {
				case "off":
					args = append(args, "-sandbox-firewall", "off")
				case "on-public-url":
					// Jobs are handed this URL for the cache service: the
					// firewall lets them reach it, at that address only.
					args = append(args, "-public-url", "http://"+net.JoinHostPort(hostIP, port))
				}
				up := startProc(t, []string{"KILN_HOME=" + dataDir}, args...)
				h := &harness{t: t, url: "http://127.0.0.1:" + port, dataDir: dataDir}
				h.admin = waitToken(t, up, dataDir)
				rt, err := docker.New(e.Host)
				if err != nil {
					t.Fatal(err)
				}
				h.rt = rt

				probe := fmt.Sprintf(`gw=$(ip route | awk '/^default/ {print $3}'); `+
					`for a in %s $gw; do if printf 'GET /healthz HTTP/1.0\r\n\r\n' | nc -w 10 $a %s | grep -q '^HTTP/1'; then echo "reached $a"; else echo "refused $a"; fi; done`,
					hostIP, port)
				repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", probe)})
				h.addProject("app", repo, projectOpts{})
				id := h.trigger("app", "main")
				b := h.waitDone(id)
				log := h.logText(id)
				if b.Status != store.StatusSuccess {
					t.Fatalf("build %s\nlog:\n%s\nserver:\n%s", dump(b), log, up.output())
				}
				if !strings.Contains(log, "refused") && !strings.Contains(log, "reached") {
					t.Fatalf("no probe ran:\n%s", log)
				}
				for _, l := range strings.Split(log, "\n") {
					if strings.Contains(l, "reached ") || strings.Contains(l, "refused ") {
						t.Log(l)
					}
				}
				switch firewall {
				case "on":
					if strings.Contains(log, "reached") {
						t.Errorf("a job reached the server's API on the host:\n%s", log)
					}
				case "on-public-url":
					if !strings.Contains(log, "reached "+hostIP) {
						t.Errorf("the job cannot reach the cache service at the public URL's %s:\n%s", hostIP, log)
					}
					if strings.Count(log, "reached ") != 1 {
						t.Errorf("the job reached the server elsewhere than at the public URL:\n%s", log)
					}
				case "off":
					if !strings.Contains(log, "reached "+hostIP) {
						t.Errorf("without the firewall the job should reach %s (is the probe broken?):\n%s", hostIP, log)
					}
				}
				h.waitSandboxGone(b.Jobs[0].ID)
			})
		}
	})
}

// hostAddress is a non-loopback IPv4 address of this machine that is not
// on a container bridge (where a server on 0.0.0.0 is reached).
func hostAddress(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		skip := false
		for _, p := range []string{"br-", "kn", "docker", "veth", "podman", "cni"} {
			skip = skip || strings.HasPrefix(i.Name, p)
		}
		if skip {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine")
	return ""
}
