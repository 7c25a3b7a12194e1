package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// brokenEngine is a container engine that answers /_ping (so an agent
// thinks it is up and claims jobs) and fails every other request with a
// 500, as an engine whose storage or runtime broke does.
type brokenEngine struct {
	path   string
	failed atomic.Int64 // requests other than pings
}

func newBrokenEngine(t *testing.T) *brokenEngine {
	t.Helper()
	dir, err := os.MkdirTemp("", "kiln-broken-engine") // short: a socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &brokenEngine{path: filepath.Join(dir, "engine.sock")}
	ln, err := net.Listen("unix", e.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			w.Header().Set("API-Version", "1.41")
			w.Header().Set("OSType", "linux")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if r.Method != http.MethodHead {
				_, _ = w.Write([]byte("OK"))
			}
			return
		}
		e.failed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, `{"message": "broken engine: cannot %s %s"}`, r.Method, r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return e
}

// agentView reads one agent from GET /api/v1/agents.
func (h *harness) agentView(id string) *api.AgentView {
	h.t.Helper()
	var as []api.AgentView
	if code := h.do("GET", "/api/v1/agents", nil, &as); code != http.StatusOK {
		h.t.Fatalf("GET /api/v1/agents: HTTP %d", code)
	}
	for i := range as {
		if as[i].ID == id {
			return &as[i]
		}
	}
	return nil
}

// attemptsOf lists, per job of the build, the agents its attempts ran on.
func (h *harness) attemptsOf(buildID int64) map[int64][]string {
	h.t.Helper()
	rows, err := h.srv.Store.DB().QueryContext(context.Background(), `SELECT a.job_id, a.agent_id FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.build_id = ? ORDER BY a.job_id, a.attempt`, buildID)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64][]string{}
	for rows.Next() {
		var job int64
		var agent string
		if err := rows.Scan(&job, &agent); err != nil {
			h.t.Fatal(err)
		}
		out[job] = append(out[job], agent)
	}
	return out
}

// TestBrokenAgentIsQuarantined: an agent whose engine answers /_ping but
// fails everything else runs alongside a good agent on a real engine.
// Builds keep coming; every one succeeds on the good agent, no job's
// attempts all land on the broken one (a retried job goes to the other
// agent), and after 3 attempts in error in a row the broken agent is
// quarantined, as the agents API shows, and claims nothing more.
func TestBrokenAgentIsQuarantined(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		cfg := server.DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.Listen = "127.0.0.1:0"
		cfg.Scheduler.Lease = 10 * time.Second
		cfg.Scheduler.RetryDelay = 200 * time.Millisecond
		cfg.Scheduler.PollInterval = 200 * time.Millisecond
		// Long enough that the quarantine and the preference for another
		// agent outlast the test: what is tested is who runs what.
		cfg.Scheduler.QuarantineFor = time.Hour
		cfg.Scheduler.RetryElsewhere = time.Hour
		h, rt := serve(t, e, cfg)
		rt.EnableNetworkPool(fmt.Sprintf("e2e-%d", time.Now().UnixNano()), 2, nil)
		t.Cleanup(func() { rt.DrainNetworkPool(context.Background()) })

		broken := newBrokenEngine(t)
		badRT, err := docker.New("unix://" + broken.path)
		if err != nil {
			t.Fatal(err)
		}
		h.startAgent("bad", badRT)
		h.startAgent("good", nil)

		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", "echo built on a good agent")})
		h.addProject("app", repo, projectOpts{})
		var builds []int64
		for range 4 {
			builds = append(builds, h.trigger("app", "main"))
		}
		// More builds while the broken agent is not yet quarantined: it
		// fails whatever it takes, so it gets there (each build of the
		// loop must still succeed).
		for i := 0; ; i++ {
			for _, id := range builds[len(builds)-min(len(builds), 4):] {
				h.waitDone(id)
			}
			if v := h.agentView("bad"); v != nil && v.State == "quarantined" {
				break
			}
			if i == 10 {
				t.Fatalf("the broken agent was never quarantined: %s", dump(h.agentView("bad")))
			}
			builds = append(builds, h.trigger("app", "main"))
		}
		if broken.failed.Load() == 0 {
			t.Fatal("the broken engine was never used")
		}

		bad := h.agentView("bad")
		if bad.ErrorStreak < 3 || bad.QuarantinedUntil == nil || bad.LastErrorAt == nil {
			t.Errorf("the broken agent's view: %s", dump(bad))
		}
		if good := h.agentView("good"); good == nil || good.State != "ok" || good.ErrorStreak != 0 {
			t.Errorf("the good agent's view: %s", dump(good))
		}
		for _, id := range builds {
			b := h.waitDone(id)
			if b.Status != store.StatusSuccess || b.Jobs[0].AgentID != "good" {
				t.Errorf("build %d: %s", id, dump(b))
			}
			for job, agents := range h.attemptsOf(id) {
				onBad := strings.Count(strings.Join(agents, " "), "bad")
				if onBad > 1 || agents[len(agents)-1] != "good" {
					t.Errorf("job %d ran on %v: a job that failed on the broken agent must go to the good one", job, agents)
				}
			}
		}

		// Quarantined, it gets nothing more: a new build runs on the good agent only.
		id := h.trigger("app", "main")
		if b := h.waitDone(id); b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 1 || b.Jobs[0].AgentID != "good" {
			t.Errorf("build while the broken agent is quarantined: %s", dump(b))
		}
		resp, err := http.Get(h.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics := string(data)
		if !strings.Contains(metrics, `kiln_agents{state="quarantined"} 1`) || !strings.Contains(metrics, `kiln_agents{state="ok"} 1`) {
			t.Errorf("kiln_agents gauge: %s", grepLines(metrics, "kiln_agents"))
		}
	})
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
