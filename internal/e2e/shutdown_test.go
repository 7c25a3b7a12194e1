package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/sandbox/diskquota"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// sleeper's first attempt outlives any shutdown grace; its retry succeeds.
var sleeper = pipelineFile("", `if [ "$KILN_ATTEMPT" = 1 ]; then echo first-attempt; sleep 600; fi; echo "ran attempt $KILN_ATTEMPT"`)

// terminate sends SIGTERM and waits for the process to exit (bounded by
// waitLimit, a safety net: how long it took is not asserted).
func (p *proc) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.output())
		}
	case <-time.After(waitLimit):
		t.Fatalf("still running %s after SIGTERM:\n%s", waitLimit, p.output())
	}
}

// shutdownAttempt checks, in the store of a stopped server, that the job's
// first attempt was ended by the shutdown as an error, was requeued, and
// that its log says so and holds no failed report.
func shutdownAttempt(t *testing.T, dbPath string, jobID int64, output string) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), dbPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	j, err := st.Job(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != store.StatusQueued || j.Attempt != 1 || !strings.Contains(j.Error, "shutdown") || !strings.Contains(j.Error, "retrying") {
		t.Fatalf("want attempt 1 ended by the shutdown and the job requeued, got %s\noutput:\n%s", dump(j), output)
	}
	lines, err := st.Logs(context.Background(), jobID, 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for _, l := range lines {
		fmt.Fprintln(&log, l.Text)
	}
	if !strings.Contains(log.String(), "first-attempt") || !strings.Contains(log.String(), "shutdown grace") {
		t.Fatalf("attempt 1's log does not say it was stopped by the shutdown:\n%s", log.String())
	}
	for _, text := range []string{log.String(), output} {
		if strings.Contains(text, "connection refused") {
			t.Fatalf("a report failed during the shutdown:\n%s", text)
		}
	}
}

// SIGTERM to `kiln up` with a job running: the agent stops first (its job
// gets the grace, then ends as an error reported to a server still
// listening), then the server and the store; the process exits. Started
// again, it retries the job.
func TestUpShutdownStopsAgentFirst(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		dataDir := t.TempDir()
		addr := freeAddr(t)
		env := []string{"KILN_HOME=" + dataDir}
		args := []string{"up", "-listen", addr, "-engine", e.Host, "-lease", "10s", "-retry-delay", "200ms", "-memory", "256m", "-shutdown-grace", "2s"}
		up := startProc(t, env, args...)
		h := &harness{t: t, url: "http://" + addr, dataDir: dataDir}
		h.admin = waitToken(t, up, dataDir)
		rt, _ := docker.New(e.Host)
		h.rt = rt

		repo, _ := newRepo(t, map[string]string{".kiln.yml": sleeper})
		h.addProject("app", repo, projectOpts{})
		id := h.trigger("app", "main")
		b := h.waitFor(id, "a running step", stepRunning)
		jobID := b.Jobs[0].ID
		up.terminate(t)
		out := up.output()
		for _, phase := range []string{"shutdown: signal received", "shutdown: grace over", "shutdown: agent stopped", "shutdown: store closed"} {
			if !strings.Contains(out, phase) {
				t.Errorf("no %q in the output:\n%s", phase, out)
			}
		}
		if left := h.sandboxesOf(jobID); len(left) != 0 {
			t.Fatalf("sandbox left after the shutdown: %+v", left)
		}
		if ms, err := diskquota.MountsUnder(dataDir); err != nil || len(ms) != 0 {
			t.Fatalf("job disks left mounted after the shutdown: %v %v", ms, err)
		}
		shutdownAttempt(t, filepath.Join(dataDir, "kiln.db"), jobID, out)

		up2 := startProc(t, env, args...)
		waitToken(t, up2, dataDir)
		b = h.waitDone(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 2 {
			t.Fatalf("build %s\nlog:\n%s\nserver:\n%s", dump(b), h.logText(id), up2.output())
		}
	})
}

// SIGTERM to `kiln agent` alone: it claims nothing more, ends its running
// job as an error (retried by another agent) and destroys its sandbox.
func TestAgentShutdownEndsJobsAsErrors(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": sleeper})
		h.addProject("app", repo, projectOpts{})
		tok, _ := h.srv.LocalAgentToken(context.Background())
		agentDir := filepath.Join(t.TempDir(), "leaving")
		ag := startProc(t, nil, "agent", "-server", h.url, "-token", tok, "-data-dir", agentDir, "-engine", e.Host, "-name", "leaving", "-memory", "256m", "-shutdown-grace", "1s")

		id := h.trigger("app", "main")
		b := h.waitFor(id, "a running step", stepRunning)
		jobID := b.Jobs[0].ID
		ag.terminate(t)
		if left := h.sandboxesOf(jobID); len(left) != 0 {
			t.Fatalf("sandbox left after the shutdown: %+v", left)
		}
		j := h.build(id).Jobs[0]
		if j.Status != store.StatusQueued || !strings.Contains(j.Error, "shutdown") {
			t.Fatalf("want the job requeued after a shutdown error, got %s\nagent:\n%s", dump(j), ag.output())
		}
		if strings.Contains(ag.output(), "connection refused") {
			t.Fatalf("agent output:\n%s", ag.output())
		}

		h.startAgent("next", nil)
		b = h.waitDone(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 2 {
			t.Fatalf("build %s\n%s", dump(b), h.logText(id))
		}
	})
}
