package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
	"github.com/kilnci/kiln/internal/testenv"
)

// answered counts the agent protocol requests each server answered
// (below 500), by the last element of their path: claim, heartbeat, …
type answered struct {
	mu sync.Mutex
	n  map[string]int // "host path-end"
}

func (c *answered) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && resp.StatusCode < 500 {
		c.mu.Lock()
		c.n[r.URL.Host+" "+r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		c.mu.Unlock()
	}
	return resp, err
}

func (c *answered) count(serverURL, what string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[strings.TrimPrefix(serverURL, "http://")+" "+what]
}

func (c *answered) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.n)
}

// An agent given two replicas' URLs loses the one it claimed its job
// through, mid-job: its heartbeats, log, steps and finish go to the other,
// and the job ends as it would have, in its first attempt (its lease
// never lapsed), with its whole log.
func TestAgentFailsOverToAnotherServer(t *testing.T) {
	if !storetest.HavePostgres() {
		t.Skipf("%s is not set: no PostgreSQL server to test (scripts/postgres.sh starts one)", storetest.Env)
	}
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		database := storetest.PostgresDatabase(t)
		same := func(c *server.Config) {
			c.Database = database
			c.SecretKey = strings.Repeat("5e", 32)
		}
		first := startServerWith(t, e, same)
		second := startServerWith(t, e, same)
		second.admin = first.admin
		reached := &answered{n: map[string]int{}}
		first.agentConfig = func(c *agent.Config) {
			c.Server = first.url + "," + second.url
			c.HTTPClient = &http.Client{Timeout: c.ClaimWait + 30*time.Second, Transport: reached}
		}
		work, _ := first.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", gateStep, "echo after")})
		second.addProject("app", repo, projectOpts{})
		id := second.trigger("app", "main")
		second.waitFor(id, "a running step", stepRunning)
		if reached.count(first.url, "claim") == 0 || reached.count(second.url, "claim") != 0 {
			t.Fatalf("the job was not claimed through the first server: %s", reached)
		}

		first.stop()
		waitUntil(t, "a heartbeat through the second server", func() bool { return reached.count(second.url, "heartbeat") > 0 }, reached.String)
		openGate(t, work)
		b := second.waitDone(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 1 {
			t.Fatalf("build %s, job attempt %d, want success in the first:\n%s", b.Status, b.Jobs[0].Attempt, second.logText(id))
		}
		if log := second.logText(id); !strings.Contains(log, "waiting") || !strings.Contains(log, "released") || !strings.Contains(log, "after") {
			t.Errorf("log:\n%s", log)
		}
		if reached.count(second.url, "finish") != 1 || reached.count(second.url, "steps") == 0 || reached.count(first.url, "finish") != 0 {
			t.Errorf("requests answered: %s", reached)
		}
	})
}
