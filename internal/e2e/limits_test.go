package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// waitAgent waits until the agent registered.
func (h *harness) waitAgent(id string) {
	h.t.Helper()
	waitUntil(h.t, "agent "+id+" registered", func() bool {
		var as []store.Agent
		h.do("GET", "/api/v1/agents", nil, &as)
		for _, a := range as {
			if a.ID == id {
				return true
			}
		}
		return false
	})
}

// A pipeline cannot lift its sandbox's limits: the agents' limits are
// maximums. Asking for more than any agent allows is the file's error,
// located, at plan time (against the default limits while no agent has
// registered, then against the agents'); asking for less is applied.
func TestPipelineCannotLiftSandboxLimits(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		check := func(project, file string, want ...string) *store.Build {
			t.Helper()
			repo, _ := newRepo(t, map[string]string{".kiln.yml": file})
			h.addProject(project, repo, projectOpts{})
			b := h.waitDone(h.trigger(project, "main"))
			log := h.logText(b.ID)
			if b.Status != store.StatusFailure || len(b.Jobs) != 1 || b.Jobs[0].Name != "pipeline" {
				t.Fatalf("%s: status %s, %d jobs (want a plan failure); log:\n%s", project, b.Status, len(b.Jobs), log)
			}
			for _, w := range want {
				if !strings.Contains(log, w) {
					t.Errorf("%s: log lacks %q:\n%s", project, w, log)
				}
			}
			return b
		}
		// No agent yet: the default limits (2 CPUs, 2g, 1024 pids).
		check("bomb", pipelineFile("resources: {memory: 1t, pids: 4194304}\n", "echo ran"),
			".kiln.yml:2:21: resources.memory: asks for 1t, more than any agent allows (at most 2g)",
			".kiln.yml:2:31: resources.pids: asks for 4194304, more than any agent allows (at most 1024)")

		// The agent reports its own limits (the harness's: 1 CPU, 256m).
		h.startAgent("a1", nil)
		h.waitAgent("a1")
		check("cpus", fmt.Sprintf("image: %s\njobs:\n  test:\n    resources:\n      cpus: 2\n    steps:\n      - run: echo ran\n", testenv.BaseImage),
			".kiln.yml:5:13: jobs.test.resources.cpus: asks for 2, more than any agent allows (at most 1)")
		check("labels", pipelineFile("runs-on: [linux, big]\nresources: {memory: 4g}\n", "echo ran"),
			"resources.memory: asks for 4g, more than any agent with labels linux, big allows (at most 2g)")

		// Less than the limits is what the sandbox gets.
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("resources: {memory: 128m, pids: 100}\n",
			`cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes`,
			`cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max`)})
		h.addProject("small", repo, projectOpts{})
		b := h.waitDone(h.trigger("small", "main"))
		log := h.logText(b.ID)
		if b.Status != store.StatusSuccess {
			t.Fatalf("small: %s\n%s", b.Status, log)
		}
		for _, w := range []string{"] 134217728\n", "] 100\n"} {
			if !strings.Contains(log, w) {
				t.Errorf("small: log lacks %q:\n%s", w, log)
			}
		}
	})
}

// A job goes only to an agent whose limits cover it: a2 (2 CPUs) is known
// but stopped, so the job waits for it rather than run on a1 (1 CPU).
func TestJobWaitsForAnAgentWithinItsLimits(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.agentConfig = func(c *agent.Config) {
			if c.ID == "a2" {
				c.DefaultCPUs = 2
			}
		}
		_, stop := h.startAgent("a2", nil)
		h.waitAgent("a2")
		stop()
		h.startAgent("a1", nil)
		h.waitAgent("a1")
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("resources: {cpus: 2}\n", "echo ran")})
		h.addProject("app", repo, projectOpts{})
		id := h.trigger("app", "main")
		h.waitFor(id, "planned", func(b *store.Build) bool { return len(b.Jobs) == 1 })
		h.startAgent("a2", nil)
		b := h.waitDone(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].AgentID != "a2" || b.Jobs[0].Attempt != 1 {
			t.Fatalf("build %s on %q (attempt %d), want success on a2:\n%s", b.Status, b.Jobs[0].AgentID, b.Jobs[0].Attempt, h.logText(id))
		}
	})
}
