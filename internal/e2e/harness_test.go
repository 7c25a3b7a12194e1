// Package e2e drives Kiln end to end: a real control plane and real agents
// (talking over HTTP on loopback), real git repositories, and real
// containers on every configured engine (Docker and Podman).
package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/sticky"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// waitLimit bounds every wait so a broken build fails the test instead of
// hanging it. It is a safety net, not an assertion about speed.
const waitLimit = 3 * time.Minute

type harness struct {
	t       *testing.T
	engine  testenv.Engine
	srv     *server.Server
	url     string
	admin   string
	dataDir string
	rt      sandbox.Runtime
	// agentConfig, when set, adjusts the configuration of every agent
	// startAgent starts after the harness's defaults.
	agentConfig func(*agent.Config)
	// stop shuts the control plane down before the test ends (a replica
	// lost); the test's cleanup calls it too.
	stop func()
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KILN_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a control plane with a short lease, so that lost
// agents are noticed within seconds.
func startServer(t *testing.T, engine testenv.Engine) *harness {
	t.Helper()
	return startServerWith(t, engine, nil)
}

// startServerWith is startServer with tune applied to the server's
// configuration (nil: none).
func startServerWith(t *testing.T, engine testenv.Engine, tune func(*server.Config)) *harness {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.MaxWebhookBody = 1 << 20
	// Long enough that a heartbeat delayed by a loaded CI machine (packages
	// test in parallel on 2 cores) never expires a healthy lease; the
	// lease-expiry tests wait this long once.
	cfg.Scheduler.Lease = 10 * time.Second
	cfg.Scheduler.RetryDelay = 200 * time.Millisecond
	cfg.Scheduler.PollInterval = 200 * time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	h, rt := serve(t, engine, cfg)
	// As kiln agent does: pooled networks on Docker (Podman needs none).
	rt.EnableNetworkPool(fmt.Sprintf("e2e-%d", time.Now().UnixNano()), 2, nil)
	t.Cleanup(func() { rt.DrainNetworkPool(context.Background()) })
	return h
}

// serve runs a control plane configured by cfg until the test ends, and
// returns a harness for it with a runtime for engine.
func serve(t *testing.T, engine testenv.Engine, cfg server.Config) (*harness, *docker.Runtime) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	stop := sync.OnceFunc(func() { cancel(); <-done; srv.Close() })
	t.Cleanup(stop)
	tok, _, err := srv.EnsureAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := docker.New(engine.Host)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, engine: engine, srv: srv, url: "http://" + ln.Addr().String(), admin: tok, dataDir: cfg.DataDir, rt: rt, stop: stop}, rt
}

// startAgent runs an in-process agent with its own data dir; the returned
// func stops it (gracefully) and waits for it.
func (h *harness) startAgent(id string, rt sandbox.Runtime, labels ...string) (workDir string, stop func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tok, err := h.srv.LocalAgentToken(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	dir := filepath.Join(h.dataDir, "agents", id)
	mirrors, err := gitmirror.New(filepath.Join(dir, "git"))
	if err != nil {
		h.t.Fatal(err)
	}
	volumes, err := sticky.New(sticky.Config{Dir: filepath.Join(dir, "volumes")})
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.Server, cfg.Token, cfg.ID, cfg.Name = h.url, tok, id, id
	cfg.Labels = append([]string{"linux"}, labels...)
	cfg.WorkDir = filepath.Join(dir, "work")
	cfg.DefaultMemory = 256 << 20
	cfg.DefaultCPUs = 1
	cfg.ClaimWait = 2 * time.Second
	// Stopping a test's agent stops its jobs at once (shutdown_test.go
	// covers the grace).
	cfg.ShutdownGrace = 0
	if h.agentConfig != nil {
		h.agentConfig(&cfg)
	}
	if rt == nil {
		rt = h.rt
	}
	a, err := agent.New(cfg, rt, mirrors, volumes, testLogger(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	h.t.Cleanup(stop)
	return cfg.WorkDir, stop
}

// do calls the REST API with the admin token and decodes a JSON answer.
func (h *harness) do(method, path string, body, out any) int {
	h.t.Helper()
	return h.doAs(h.admin, method, path, body, out)
}

func (h *harness) doAs(token, method, path string, body, out any) int {
	h.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.url+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

type projectOpts struct {
	cancelSuperseded bool
	secrets          map[string]string
}

func (h *harness) addProject(name, cloneURL string, o projectOpts) {
	h.t.Helper()
	secret := "webhook-secret-" + name
	body := map[string]any{"name": name, "clone_url": cloneURL, "default_branch": "main", "webhook_secret": secret, "cancel_superseded": o.cancelSuperseded}
	if code := h.do("POST", "/api/v1/projects", body, nil); code != http.StatusCreated {
		h.t.Fatalf("create project: HTTP %d", code)
	}
	for k, v := range o.secrets {
		if code := h.do("PUT", "/api/v1/projects/"+name+"/secrets/"+k, map[string]string{"value": v}, nil); code != http.StatusNoContent {
			h.t.Fatalf("set secret: HTTP %d", code)
		}
	}
}

func (h *harness) trigger(project, branch string) int64 {
	h.t.Helper()
	var b store.Build
	if code := h.do("POST", "/api/v1/projects/"+project+"/builds", map[string]string{"branch": branch}, &b); code != http.StatusCreated {
		h.t.Fatalf("trigger: HTTP %d", code)
	}
	return b.ID
}

func (h *harness) build(id int64) *store.Build {
	h.t.Helper()
	var b store.Build
	if code := h.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, &b); code != http.StatusOK {
		h.t.Fatalf("get build %d: HTTP %d", id, code)
	}
	return &b
}

// waitFor polls until cond holds for the build.
func (h *harness) waitFor(id int64, what string, cond func(*store.Build) bool) *store.Build {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		b := h.build(id)
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("build %d never got %s; last state: %s", id, what, dump(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) waitDone(id int64) *store.Build {
	h.t.Helper()
	return h.waitFor(id, "finished", func(b *store.Build) bool { return b.Status.Terminal() })
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// logText returns a build's stored log, all jobs, one string.
func (h *harness) logText(id int64) string {
	h.t.Helper()
	var jobs []struct {
		Name  string
		Lines []store.LogLine
	}
	h.do("GET", fmt.Sprintf("/api/v1/builds/%d/logs", id), nil, &jobs)
	var sb strings.Builder
	for _, j := range jobs {
		for _, l := range j.Lines {
			fmt.Fprintf(&sb, "[%s] %s\n", j.Name, l.Text)
		}
	}
	return sb.String()
}

// sandboxesOf lists sandboxes of a job left on the engine.
func (h *harness) sandboxesOf(jobID int64) []sandbox.Info {
	h.t.Helper()
	list, err := h.rt.List(context.Background(), map[string]string{sandbox.LabelManaged: "true", sandbox.LabelJob: fmt.Sprint(jobID)})
	if err != nil {
		h.t.Fatal(err)
	}
	return list
}

// waitSandboxGone waits until the job's sandbox is gone: the agent removes
// it right after it reports the job's result.
func (h *harness) waitSandboxGone(jobID int64) {
	h.t.Helper()
	waitUntil(h.t, fmt.Sprintf("job %d's sandbox removed", jobID), func() bool { return len(h.sandboxesOf(jobID)) == 0 },
		func() string { return fmt.Sprintf("sandboxes left behind: %+v", h.sandboxesOf(jobID)) })
}

// --- git repositories ---

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Kiln Test", "GIT_AUTHOR_EMAIL=test@kiln.invalid",
		"GIT_COMMITTER_NAME=Kiln Test", "GIT_COMMITTER_EMAIL=test@kiln.invalid", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// newRepo creates a git repository with files on branch main and returns
// its path and head commit.
func newRepo(t *testing.T, files map[string]string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	return dir, commit(t, dir, files)
}

// commit writes files and commits them, returning the new head.
func commit(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "test commit")
	return git(t, dir, "rev-parse", "HEAD")
}

// pipelineFile returns a .kiln.yml with one job running the given steps in the base image.
func pipelineFile(extra string, steps ...string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "image: %s\n%sjobs:\n  test:\n    steps:\n", testenv.BaseImage, extra)
	for _, s := range steps {
		fmt.Fprintf(&sb, "      - run: %q\n", s)
	}
	return sb.String()
}

// --- webhooks ---

// githubPush loads a real push payload from @octokit/webhooks-examples and
// points it at ref and commit.
func githubPush(t *testing.T, ref, after string) []byte {
	t.Helper()
	data, err := os.ReadFile("../forge/testdata/github/push.0.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["ref"], m["after"], m["deleted"] = ref, after, false
	if hc, ok := m["head_commit"].(map[string]any); ok {
		hc["id"] = after // as in every real push of a branch
	}
	out, _ := json.Marshal(m)
	return out
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// postGitHub delivers a GitHub webhook to project, signed with secret.
func (h *harness) postGitHub(project, event, delivery, secret string, body []byte) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest("POST", h.url+"/hooks/github/"+project, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	if secret != "" {
		req.Header.Set("X-Hub-Signature-256", sign(secret, body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// forEachEngine runs f once per configured engine as a subtest.
func forEachEngine(t *testing.T, f func(t *testing.T, e testenv.Engine)) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) { f(t, e) })
	}
}
