package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// preVersions is the release a rolling upgrade comes from: the last
// commit of kiln whose agent protocol was one minor older than this
// one's (1.1, before image pulls: 1.2). Bump it with the minor.
const preVersions = "8fb31d394eb39452b4ed33bd84628778fc9a27cb"

var previous struct {
	once      sync.Once
	bin, skip string
	err       error
}

// previousKiln builds the kiln binary of preVersions from this
// checkout's history (once), or skips the test when the history does not
// have it (a shallow clone).
func previousKiln(t *testing.T) string {
	t.Helper()
	previous.once.Do(func() {
		if out, err := exec.Command("git", "cat-file", "-e", preVersions+"^{commit}").CombinedOutput(); err != nil {
			previous.skip = "kiln " + preVersions[:12] + " is not in this checkout's history: " + strings.TrimSpace(string(out))
			return
		}
		src := filepath.Join(filepath.Dir(kilnBin), "previous")
		if err := os.MkdirAll(src, 0o755); err != nil {
			previous.err = err
			return
		}
		// From the top: in a subdirectory git archives only that.
		archive := exec.Command("sh", "-c", `cd "$(git rev-parse --show-toplevel)" && git archive --format=tar "$1" | tar -x -C "$2"`, "sh", preVersions, src)
		if out, err := archive.CombinedOutput(); err != nil {
			previous.err = err
			previous.skip = string(out)
			return
		}
		build := exec.Command("go", "build", "-o", filepath.Join(filepath.Dir(kilnBin), "kiln-previous"), "./cmd/kiln")
		build.Dir = src
		if out, err := build.CombinedOutput(); err != nil {
			previous.err, previous.skip = err, string(out)
			return
		}
		previous.bin = filepath.Join(filepath.Dir(kilnBin), "kiln-previous")
	})
	if previous.err != nil {
		t.Fatalf("building kiln %s: %v\n%s", preVersions[:12], previous.err, previous.skip)
	}
	if previous.skip != "" {
		t.Skip(previous.skip)
	}
	return previous.bin
}

// A rolling upgrade from the release before protocol versions, with the
// real binaries of both: the upgraded server runs builds on an agent not
// yet upgraded (one minor older), and an upgraded agent refuses a server
// not yet upgraded, saying to upgrade the servers first, instead of
// working with one that would drop what it does not know.
func TestRollingUpgrade(t *testing.T) {
	prev := previousKiln(t)
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		t.Run("previous agent on this server", func(t *testing.T) {
			h := startServer(t, e)
			tok, err := h.srv.LocalAgentToken(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			agentDir := filepath.Join(t.TempDir(), "previous")
			old := startProcOf(t, prev, nil, "agent", "-server", h.url, "-token", tok, "-data-dir", agentDir, "-engine", e.Host, "-name", "previous", "-memory", "256m")
			repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", `echo "built by $KILN_AGENT_NAME"`, "echo second")})
			h.addProject("app", repo, projectOpts{})
			id := h.trigger("app", "main")
			b := h.waitDone(id)
			if b.Status != store.StatusSuccess {
				t.Fatalf("build %s:\n%s\nagent:\n%s", b.Status, h.logText(id), old.output())
			}
			var agents []store.Agent
			h.do("GET", "/api/v1/agents", nil, &agents)
			if len(agents) != 1 || agents[0].Name != "previous" || b.Jobs[0].AgentID != agents[0].ID {
				t.Errorf("agents %s; build %s", dump(agents), dump(b))
			}
		})
		t.Run("this agent against a previous server", func(t *testing.T) {
			dataDir, addr := t.TempDir(), freeAddr(t)
			up := startProcOf(t, prev, []string{"KILN_HOME=" + dataDir}, "up", "-listen", addr, "-engine", e.Host, "-memory", "256m")
			h := &harness{t: t, url: "http://" + addr, dataDir: dataDir}
			h.admin = waitToken(t, up, dataDir)
			var created struct {
				Secret string `json:"secret"`
			}
			if code := h.do("POST", "/api/v1/tokens", map[string]string{"name": "upgraded", "kind": "agent"}, &created); code != http.StatusCreated || created.Secret == "" {
				t.Fatalf("agent token: HTTP %d", code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			cmd := exec.CommandContext(ctx, kilnBin, "agent", "-server", h.url, "-data-dir", t.TempDir(), "-engine", e.Host, "-name", "upgraded",
				"-disk", "0", "-sandbox-firewall", "off")
			cmd.Env = append(os.Environ(), "KILN_AGENT_TOKEN="+created.Secret)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("the agent did not stop:\n%s", out)
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("agent exited with %v, want 1:\n%s", err, out)
			}
			want, want2 := "agent speaks protocol "+protocol.Version+"; this server (kiln ", ") speaks 1.1: upgrade the servers first, then the agents"
			if !strings.Contains(string(out), protocol.CodeServerTooOld) || !strings.Contains(string(out), want) || !strings.Contains(string(out), want2) {
				t.Errorf("agent output does not say %q:\n%s", want, out)
			}
			var agents []store.Agent
			h.do("GET", "/api/v1/agents", nil, &agents)
			for _, a := range agents {
				if a.Name == "upgraded" {
					t.Errorf("the refused agent registered: %s", dump(agents))
				}
			}
		})
	})
}
