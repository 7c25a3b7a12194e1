package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/sandbox/diskquota"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

var kilnBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kiln-e2e-bin")
	if err != nil {
		panic(err)
	}
	kilnBin = filepath.Join(dir, "kiln")
	out, err := exec.Command("go", "build", "-o", kilnBin, "../../cmd/kiln").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building kiln: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a kiln subprocess.
type proc struct {
	cmd *exec.Cmd
	out *strings.Builder
	mu  *sync.Mutex
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startProcOf(t, kilnBin, env, args...)
}

// startProcOf is startProc with another kiln binary (an older release).
func startProcOf(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &proc{cmd: cmd, out: &strings.Builder{}, mu: &sync.Mutex{}}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		pw.Close()
		unmountLeftovers(t, args)
		for _, kv := range env {
			if _, v, ok := strings.Cut(kv, "="); ok {
				unmountLeftovers(t, []string{v})
			}
		}
	})
	return p
}

// unmountLeftovers unmounts what a SIGKILLed kiln left mounted under the
// directories named in its arguments or environment (jobs' quota disks:
// a restarted agent sweeps them, a test's cleanup must too, before its
// TempDir goes).
func unmountLeftovers(t *testing.T, args []string) {
	for _, a := range args {
		if !filepath.IsAbs(a) {
			continue
		}
		if st, err := os.Stat(a); err != nil || !st.IsDir() {
			continue
		}
		ms, err := diskquota.MountsUnder(a)
		if err != nil {
			continue
		}
		for i := len(ms) - 1; i >= 0; i-- {
			if err := diskquota.Unmount(context.Background(), ms[i]); err != nil {
				t.Logf("unmount %s: %v", ms[i], err)
			}
		}
	}
}

// stop ends the process at the end of a test: SIGTERM, so that its agent
// cleans up after itself (its network pool, its jobs' disks) as on a real
// shutdown, then SIGKILL if it is still there after a while.
func (p *proc) stop() {
	if p.cmd.ProcessState != nil || p.cmd.Process.Signal(syscall.SIGTERM) != nil {
		return
	}
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// An agent killed with SIGKILL mid-job loses its lease; the job is retried
// on another agent and succeeds. When the killed agent comes back it sweeps
// the sandbox it left behind.
func TestAgentKilledMidJobIsRetriedElsewhere(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("",
			`if [ "$KILN_ATTEMPT" = 1 ]; then echo first-attempt; sleep 600; fi; echo "ran attempt $KILN_ATTEMPT"`)})
		h.addProject("app", repo, projectOpts{})
		tok, _ := h.srv.LocalAgentToken(context.Background())
		agentDir := filepath.Join(t.TempDir(), "doomed")
		args := []string{"agent", "-server", h.url, "-token", tok, "-data-dir", agentDir, "-engine", e.Host, "-name", "doomed", "-memory", "256m"}
		doomed := startProc(t, nil, args...)

		id := h.trigger("app", "main")
		b := h.waitFor(id, "a running step", stepRunning)
		jobID := b.Jobs[0].ID
		doomed.kill()
		if left := h.sandboxesOf(jobID); len(left) != 1 {
			t.Fatalf("want the killed agent's sandbox still there, got %+v", left)
		}

		h.startAgent("rescuer", nil)
		b = h.waitDone(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 2 || b.Jobs[0].AgentID == "" {
			t.Fatalf("build %s\n%s", dump(b), h.logText(id))
		}
		if log := h.logText(id); !strings.Contains(log, "ran attempt 2") {
			t.Fatalf("log:\n%s", log)
		}
		// The killed agent restarts with the same id and sweeps its leftovers.
		back := startProc(t, nil, args...)
		deadline := time.Now().Add(waitLimit)
		for len(h.sandboxesOf(jobID)) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("leftover sandbox not swept; agent output:\n%s", back.output())
			}
			time.Sleep(100 * time.Millisecond)
		}
		// And the job's disk, still mounted on the host after the kill.
		waitUntil(t, "the killed job's disk unmounted", func() bool {
			ms, err := diskquota.MountsUnder(agentDir)
			return err == nil && len(ms) == 0
		}, back.output)
	})
}

// `kiln up` killed with SIGKILL mid-build and started again: nothing stays
// running; the interrupted job is retried and the build finishes.
func TestServerKilledMidBuildRecovers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		dataDir := t.TempDir()
		addr := freeAddr(t)
		env := []string{"KILN_HOME=" + dataDir}
		args := []string{"up", "-listen", addr, "-engine", e.Host, "-lease", "10s", "-retry-delay", "200ms", "-memory", "256m"}
		up := startProc(t, env, args...)
		h := &harness{t: t, url: "http://" + addr, dataDir: dataDir}
		h.admin = waitToken(t, up, dataDir)
		rt, _ := docker.New(e.Host)
		h.rt = rt

		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("",
			`if [ "$KILN_ATTEMPT" = 1 ]; then echo first-attempt; sleep 600; fi; echo "ran attempt $KILN_ATTEMPT"`)})
		h.addProject("app", repo, projectOpts{})
		id := h.trigger("app", "main")
		b := h.waitFor(id, "attempt 1 running its step", func(b *store.Build) bool {
			if len(b.Jobs) > 0 && b.Jobs[0].Attempt > 1 {
				t.Fatalf("attempt 1 ended early: %s\nlog:\n%s\nserver:\n%s", dump(b), h.logText(id), up.output())
			}
			return stepRunning(b)
		})
		up.kill()

		up2 := startProc(t, env, args...)
		waitToken(t, up2, dataDir)
		b = h.waitDone(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 2 {
			t.Fatalf("build %s\nlog:\n%s\nserver:\n%s", dump(b), h.logText(id), up2.output())
		}
		h.waitSandboxGone(b.Jobs[0].ID)
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitToken waits until `kiln up` serves and returns its admin token.
func waitToken(t *testing.T, p *proc, dataDir string) string {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if strings.Contains(p.output(), "listening on") {
			if b, err := os.ReadFile(filepath.Join(dataDir, "admin-token")); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		if time.Now().After(deadline) || p.cmd.ProcessState != nil {
			t.Fatalf("kiln up did not start:\n%s", p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// socketProxy forwards a unix socket to the engine's. While it is "down"
// it accepts and drops every connection (the engine is unreachable) and
// counts them, so a test knows the agent has tried.
type socketProxy struct {
	path, target string
	mu           sync.Mutex
	isUp         bool
	refused      int
}

func newSocketProxy(t *testing.T, target string) *socketProxy {
	p := &socketProxy{path: filepath.Join(t.TempDir(), "engine.sock"), target: strings.TrimPrefix(target, "unix://")}
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			up := p.isUp
			if !up {
				p.refused++
			}
			p.mu.Unlock()
			if !up {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", p.target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return p
}

func (p *socketProxy) setUp(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isUp = up
}

func (p *socketProxy) refusedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// With the container engine down, the agent claims nothing (no job is lost
// or failed); when the engine is back, the queued build runs.
func TestEngineDownLosesNoJob(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		proxy := newSocketProxy(t, e.Host)
		rt, err := docker.New("unix://" + proxy.path)
		if err != nil {
			t.Fatal(err)
		}
		h.startAgent("a1", rt)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", "echo engine back")})
		h.addProject("app", repo, projectOpts{})
		id := h.trigger("app", "main")
		h.waitFor(id, "planned", func(b *store.Build) bool { return len(b.Jobs) == 1 })
		// Wait until the agent has found the engine down at least twice
		// after the job was queued: the job must still be queued, unclaimed.
		seen := proxy.refusedCount()
		deadline := time.Now().Add(waitLimit)
		for proxy.refusedCount() < seen+2 {
			if time.Now().After(deadline) {
				t.Fatal("the agent never tried the engine")
			}
			time.Sleep(50 * time.Millisecond)
		}
		b := h.build(id)
		if b.Jobs[0].Status != store.StatusQueued || b.Jobs[0].Attempt != 0 {
			t.Fatalf("job with the engine down: %s", dump(b.Jobs[0]))
		}
		proxy.setUp(true)
		if b := h.waitDone(id); b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 1 {
			t.Fatalf("build %s", dump(b))
		}
	})
}

// A sandbox removed by someone else while its step runs (an operator's
// `docker rm -f`, an engine restart) is the infrastructure's failure, not
// the step's: the job is retried and the build succeeds.
func TestSandboxRemovedMidStepIsRetried(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("",
			`if [ "$KILN_ATTEMPT" = 1 ]; then echo first-attempt; sleep 600; fi; echo "ran attempt $KILN_ATTEMPT"`)})
		h.addProject("app", repo, projectOpts{})
		id := h.trigger("app", "main")
		b := h.waitFor(id, "a running step", stepRunning)
		left := h.sandboxesOf(b.Jobs[0].ID)
		if len(left) != 1 {
			t.Fatalf("want the job's sandbox, got %+v", left)
		}
		if err := h.rt.Destroy(context.Background(), left[0].ID); err != nil {
			t.Fatal(err)
		}
		b = h.waitDone(id)
		log := h.logText(id)
		if b.Status != store.StatusSuccess || b.Jobs[0].Attempt != 2 || !strings.Contains(log, "ran attempt 2") {
			t.Fatalf("build %s\n%s", dump(b), log)
		}
		var first []struct{ Lines []store.LogLine }
		h.do("GET", fmt.Sprintf("/api/v1/builds/%d/logs?attempt=1", id), nil, &first)
		var text strings.Builder
		for _, j := range first {
			for _, l := range j.Lines {
				text.WriteString(l.Text + "\n")
			}
		}
		if !strings.Contains(text.String(), "sandbox went away") {
			t.Errorf("attempt 1's log does not say the sandbox went away:\n%s", text.String())
		}
	})
}
