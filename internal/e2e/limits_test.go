package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/sandbox/diskquota"
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

// Each job has a disk quota, its workspace and /tmp together: the agent's
// (-disk) unless the pipeline asks for less. A job writing past it fails,
// not retried, with a [kiln] line naming the quota; asking for more than the
// agent allows is refused at plan time.
func TestDiskQuotaFailsTheJobClearly(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.agentConfig = func(c *agent.Config) { c.DefaultDisk, c.LayerWatch = 16<<20, 200*time.Millisecond }
		workDir, _ := h.startAgent("a1", nil)
		h.waitAgent("a1")
		run := func(project, extra string, steps ...string) (*store.Build, string) {
			t.Helper()
			repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile(extra, steps...)})
			h.addProject(project, repo, projectOpts{})
			b := h.waitDone(h.trigger(project, "main"))
			return b, h.logText(b.ID)
		}
		wantFull := func(b *store.Build, log, quota string) {
			t.Helper()
			if b.Status != store.StatusFailure || len(b.Jobs) != 1 || b.Jobs[0].Attempt != 1 {
				t.Fatalf("status %s (want failure, one attempt):\n%s", b.Status, log)
			}
			for _, w := range []string{"No space left on device",
				"[kiln] step \"dd if=/dev/zero of=big bs=1M count=64\": the job's disk quota of " + quota + " (its workspace and /tmp together) is full; ask for up to 16m with resources.disk"} {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %q:\n%s", w, log)
				}
			}
			if b.Jobs[0].Error == "" || !strings.Contains(b.Jobs[0].Error, "disk quota of "+quota) {
				t.Errorf("job error %q does not name the disk quota", b.Jobs[0].Error)
			}
		}
		// The agent's quota: /tmp and the workspace count together.
		b, log := run("default", "", "dd if=/dev/zero of=/tmp/a bs=1M count=6 2>/dev/null", "dd if=/dev/zero of=big bs=1M count=64")
		wantFull(b, log, "16m")
		// Less, as the pipeline asks.
		b, log = run("less", "resources: {disk: 8m}\n", "dd if=/dev/zero of=/tmp/a bs=1M count=6 2>/dev/null", "dd if=/dev/zero of=big bs=1M count=64")
		wantFull(b, log, "8m")
		// Within the quota all is well, and df inside shows it.
		b, log = run("fits", "resources: {disk: 8m}\n", "dd if=/dev/zero of=/tmp/a bs=1M count=2 2>/dev/null", "df -k /workspace | tail -1")
		if b.Status != store.StatusSuccess || !strings.Contains(log, "disk 8m") {
			t.Fatalf("within the quota: %s\n%s", b.Status, log)
		}
		// Outside the quota disk (the container's own layer, which the
		// engines cannot bound here) the agent watches, and stops the job.
		b, log = run("layer", "resources: {disk: 8m}\n", "dd if=/dev/zero of=/root/big bs=1M count=24 2>/dev/null; echo written; sleep 600")
		if b.Status != store.StatusFailure || len(b.Jobs) != 1 || b.Jobs[0].Attempt != 1 || b.Jobs[0].Steps[0].Status != store.StatusFailure ||
			!strings.Contains(log, "to its sandbox's own filesystem (outside /workspace and /tmp), past its disk quota of 8m: stopped") ||
			!strings.Contains(b.Jobs[0].Error, "disk quota") {
			t.Fatalf("writing past the quota outside the disk: %s\n%s\n%s", b.Status, dump(b.Jobs), log)
		}
		// More than the agent allows: the file's error.
		b, log = run("more", "resources: {disk: 1g}\n", "echo ran")
		if b.Status != store.StatusFailure || !strings.Contains(log, ".kiln.yml:2:19: resources.disk: asks for 1g, more than any agent allows (at most 16m)") {
			t.Fatalf("more than the agent's quota: %s\n%s", b.Status, log)
		}
		// Nothing left mounted on the agent's host.
		waitUntil(t, "job disks unmounted", func() bool {
			ms, err := diskquota.MountsUnder(workDir)
			return err == nil && len(ms) == 0
		})
	})
}
