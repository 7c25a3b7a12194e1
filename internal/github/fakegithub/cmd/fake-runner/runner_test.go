package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

// waitLimit is a safety net for a runner that hangs, not a timing claim.
const waitLimit = time.Minute

type syncBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

type env struct {
	t      *testing.T
	fake   *fakegithub.Server
	client *github.Client
	routes string // a route table whose default gateway is 127.0.0.1
	n      int
}

var labels = []string{"self-hosted", "kiln", "linux"}

// newEnv starts a fake GitHub whose JIT configurations send runners to
// http://host.kiln.test:PORT, and a route table that makes the runner's
// dialer resolve that name to 127.0.0.1, as a container's default route
// resolves it to the host.
func newEnv(t *testing.T) *env {
	littleEndian(t)
	fake := fakegithub.New()
	t.Cleanup(fake.Close)
	fake.AddToken("pat")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(strings.TrimSuffix(fake.URL(), "/"), "http://"))
	fake.SetBrokerURL("http://" + HostAlias + ":" + port)
	client, err := github.New(github.Config{BaseURL: fake.URL(), Token: "pat"})
	if err != nil {
		t.Fatal(err)
	}
	routes := filepath.Join(t.TempDir(), "route")
	if err := os.WriteFile(routes, []byte(routeHeader+"eth0\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, fake: fake, client: client, routes: routes}
}

func (e *env) jit() github.JITConfig {
	e.t.Helper()
	e.n++
	cfg, err := e.client.GenerateJITConfig(context.Background(), github.Scope{Owner: "octo", Repo: "app"}, fmt.Sprintf("kiln-%d", e.n), labels, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// runner returns a runner reading vars as its environment, and its output.
func (e *env) runner(vars map[string]string) (*runner, *syncBuffer) {
	out := &syncBuffer{}
	r := newRunner(out, func(k string) string { return vars[k] })
	r.client.Transport.(*http.Transport).DialContext = gatewayDialer(&net.Dialer{}, e.routes, e.routes+".hosts-absent")
	r.pollInterval = 20 * time.Millisecond
	return r, out
}

// start runs the runner in the background; wait returns its exit code.
func start(r *runner, ctx context.Context, encoded string) (wait func(t *testing.T) int) {
	done := make(chan int, 1)
	go func() { done <- r.main(ctx, encoded) }()
	return func(t *testing.T) int {
		t.Helper()
		select {
		case code := <-done:
			return code
		case <-time.After(waitLimit):
			t.Fatal("the runner never exited")
			return -1
		}
	}
}

// startOnline starts a runner with a fresh configuration and waits until
// it has registered.
func (e *env) startOnline(vars map[string]string) (github.JITConfig, *syncBuffer, func(*testing.T) int) {
	e.t.Helper()
	cfg := e.jit()
	r, out := e.runner(vars)
	wait := start(r, context.Background(), cfg.EncodedJITConfig)
	waitUntil(e.t, "runner online", func() bool { run, _ := e.fake.Runner(cfg.RunnerID); return run.Registered })
	return cfg, out, wait
}

// wantExit waits for the runner's exit code and checks it said msg.
func wantExit(t *testing.T, wait func(*testing.T) int, out *syncBuffer, code int, msg string) {
	t.Helper()
	if got := wait(t); got != code || !strings.Contains(out.String(), msg) {
		t.Fatalf("exit %d, want %d with %q; output:\n%s", got, code, msg, out)
	}
}

// waitUntil polls cond (the safety net of waitLimit).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkNoSecret(t *testing.T, out string, cfg github.JITConfig) {
	t.Helper()
	if strings.Contains(out, cfg.EncodedJITConfig) || strings.Contains(out, cfg.EncodedJITConfig[:24]) {
		t.Errorf("the output shows the JIT configuration:\n%s", out)
	}
}

func TestRunnerTakesItsJobAndExits(t *testing.T) {
	e := newEnv(t)
	job := e.fake.QueueJob("octo", "app", labels)
	cfg := e.jit()
	r, out := e.runner(nil)
	if code := r.main(context.Background(), cfg.EncodedJITConfig); code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	got, _ := e.fake.Job(job.ID)
	if got.Status != "completed" || got.Conclusion != "success" || got.RunnerID != cfg.RunnerID {
		t.Fatalf("job %+v", got)
	}
	if _, ok := e.fake.Runner(cfg.RunnerID); ok {
		t.Error("the ephemeral runner is still registered")
	}
	want := []string{
		"√ Connected to GitHub",
		"Current runner version: '" + Version + "'",
		": Listening for Jobs",
		": Running job: job-1",
		": Job job-1 completed with result: Succeeded",
	}
	text := out.String()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("output lacks %q:\n%s", w, text)
		}
	}
	checkNoSecret(t, text, cfg)
}

// A runner online before its job waits for it (acquire), as a real one
// listens for jobs, and reports the conclusion it was told to.
func TestRunnerWaitsForAJob(t *testing.T) {
	e := newEnv(t)
	_, out, wait := e.startOnline(map[string]string{"FAKE_RUNNER_CONCLUSION": "failure"})
	calls := e.fake.Calls(fakegithub.EndpointRunnerAcquire)
	waitUntil(t, "runner asks again", func() bool { return e.fake.Calls(fakegithub.EndpointRunnerAcquire) > calls })
	job := e.fake.QueueJob("octo", "app", labels)
	wantExit(t, wait, out, exitOK, "completed with result: Failed")
	if got, _ := e.fake.Job(job.ID); got.Conclusion != "failure" {
		t.Fatalf("job %+v", got)
	}
}

// A cancelled run removes the busy runner; the runner notices, says the
// job was canceled, and exits.
func TestRunnerJobCancelled(t *testing.T) {
	e := newEnv(t)
	job := e.fake.QueueJob("octo", "app", labels)
	cfg := e.jit()
	r, out := e.runner(map[string]string{"FAKE_RUNNER_JOB_DURATION": "10m"})
	wait := start(r, context.Background(), cfg.EncodedJITConfig)
	waitUntil(t, "job running", func() bool { j, _ := e.fake.Job(job.ID); return j.Status == "in_progress" })
	e.fake.CancelRun("octo", "app", job.RunID)
	wantExit(t, wait, out, exitOK, "Job job-1 completed with result: Canceled")
}

// An idle runner removed from GitHub (a reaper, say) exits with 3.
func TestRunnerRemovedWhileIdle(t *testing.T) {
	e := newEnv(t)
	cfg, out, wait := e.startOnline(nil)
	if err := e.client.RemoveRunner(context.Background(), github.Scope{Owner: "octo", Repo: "app"}, cfg.RunnerID); err != nil {
		t.Fatal(err)
	}
	wantExit(t, wait, out, exitRemoved, "removed from GitHub while it waited for a job")
}

func TestRunnerRefused(t *testing.T) {
	e := newEnv(t)
	used := e.jit()
	r, _ := e.runner(nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // it waits for a job that never comes
	start(r, ctx, used.EncodedJITConfig)
	waitUntil(t, "first runner online", func() bool { run, _ := e.fake.Runner(used.RunnerID); return run.Registered })
	removed := e.jit()
	if err := e.client.RemoveRunner(context.Background(), github.Scope{Owner: "octo", Repo: "app"}, removed.RunnerID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cfg string
		code      int
		msg       string
	}{
		{"missing", "", exitConfig, EnvJITConfig + " is not set"},
		{"not base64", "!!!", exitConfig, "invalid JIT configuration: not base64"},
		{"no runner file", "e30=", exitConfig, "no .credentials entry"}, // {}
		{"used twice", used.EncodedJITConfig, exitError, "HTTP 409: JIT configuration already used"},
		{"removed before it came online", removed.EncodedJITConfig, exitRemoved, "removed from GitHub before it came online"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, out := e.runner(nil)
			if code := r.main(context.Background(), tc.cfg); code != tc.code || !strings.Contains(out.String(), tc.msg) {
				t.Fatalf("exit %d, want %d; output (want %q):\n%s", code, tc.code, tc.msg, out)
			}
			if tc.cfg != "" && len(tc.cfg) > 8 && strings.Contains(out.String(), tc.cfg) {
				t.Errorf("the output shows the configuration:\n%s", out)
			}
		})
	}
}

// A broker that does not answer is retried, then given up on with exit 1.
func TestRunnerBrokerUnreachable(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	e.fake.SetBrokerURL("http://" + HostAlias + ":" + port)
	cfg := e.jit()
	r, out := e.runner(nil)
	r.connectTimeout = 300 * time.Millisecond
	if code := r.main(context.Background(), cfg.EncodedJITConfig); code != exitError || !strings.Contains(out.String(), "could not connect to GitHub") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	checkNoSecret(t, out.String(), cfg)
}

// FAKE_RUNNER_STALL=1: the runner never registers, until it is stopped.
func TestRunnerStall(t *testing.T) {
	e := newEnv(t)
	e.fake.QueueJob("octo", "app", labels)
	cfg := e.jit()
	r, out := e.runner(map[string]string{"FAKE_RUNNER_STALL": "1"})
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(r, ctx, cfg.EncodedJITConfig)
	waitUntil(t, "the stall line", func() bool { return strings.Contains(out.String(), "stalls before registering") })
	cancel()
	wantExit(t, wait, out, exitError, "shutdown signal")
	if n := e.fake.Calls(fakegithub.EndpointRunnerRegister); n != 0 {
		t.Fatalf("%d register calls", n)
	}
}
