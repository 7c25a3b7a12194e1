package agent

// Tests of the agent's side of the protocol against a real control plane
// (server.New: SQLite in a temporary directory, on a loopback listener):
// version refusals, and failover between several server URLs. No
// container engine is needed: the tests stop before any job would run.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// waitLimit bounds every wait: a safety net, never an assertion about speed.
const waitLimit = 30 * time.Second

// controlPlane is a real kiln server and its tokens.
type controlPlane struct {
	t            *testing.T
	url          string
	admin, agent string
	http         *http.Client
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database = storetest.Database(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.Scheduler.PollInterval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(func() { hc.CloseIdleConnections(); cancel(); <-done; srv.Close() })
	admin, _, err := srv.EnsureAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := srv.LocalAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &controlPlane{t: t, url: "http://" + ln.Addr().String(), admin: admin, agent: agent, http: hc}
}

// api calls the REST API with the admin token, wants code and decodes into out.
func (c *controlPlane) api(method, path string, body any, code int, out any) {
	c.t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, c.url+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+c.admin)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		c.t.Fatalf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, code, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

// queueBuild creates a project over a new git repository and starts a
// build of it: one job, queued once the build is planned.
func (c *controlPlane) queueBuild() *store.Build {
	c.t.Helper()
	dir := c.t.TempDir()
	git := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Kiln Test", "GIT_AUTHOR_EMAIL=test@kiln.invalid",
			"GIT_COMMITTER_NAME=Kiln Test", "GIT_COMMITTER_EMAIL=test@kiln.invalid", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			c.t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte("image: localhost/kiln/busybox:latest\njobs:\n  test:\n    steps:\n      - echo hello\n"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	git("add", ".kiln.yml")
	git("commit", "-q", "-m", "pipeline")
	c.api("POST", "/api/v1/projects", map[string]any{"name": "app", "clone_url": dir, "webhook_secret": "agent-test-webhook-secret"}, http.StatusCreated, nil)
	var b store.Build
	c.api("POST", "/api/v1/projects/app/builds", map[string]string{"branch": "main"}, http.StatusCreated, &b)
	return &b
}

func (c *controlPlane) build(id int64) *store.Build {
	c.t.Helper()
	var b store.Build
	c.api("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil, http.StatusOK, &b)
	return &b
}

// logBuffer collects an agent's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newAgent(t *testing.T, servers, token string, log io.Writer) *Agent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Server, cfg.Token, cfg.ID, cfg.WorkDir = servers, token, "a1", t.TempDir()
	cfg.DefaultDisk = 0
	cfg.ClaimWait = 2 * time.Second
	a, err := New(cfg, nil, nil, nil, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// An agent whose protocol version the server does not speak stops at its
// registration, with the server's word on what to upgrade: the agent if
// it is too old, the server if it is the older one. Nothing registers.
func TestAgentRefusedVersionStops(t *testing.T) {
	cp := startControlPlane(t)
	for _, tc := range []struct {
		proto, code, msg string
	}{
		{fmt.Sprintf("%d.9", protocol.Current.Major-1), protocol.CodeAgentTooOld, fmt.Sprintf("this server needs %s or newer: upgrade the agent to", protocol.Current.Oldest())},
		{fmt.Sprintf("%d.%d", protocol.Current.Major, protocol.Current.Minor+1), protocol.CodeServerTooOld, "upgrade the servers first, then the agents"},
		{fmt.Sprintf("%d.0", protocol.Current.Major+1), protocol.CodeServerTooOld, "upgrade the servers first, then the agents"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			var log logBuffer
			a := newAgent(t, cp.url, cp.agent, &log)
			a.api.proto = tc.proto
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			err := a.Run(ctx)
			ve, ok := errors.AsType[*VersionError](err)
			if !ok || ve.Code != tc.code || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "agent speaks protocol "+tc.proto) || ve.Server != cp.url {
				t.Fatalf("Run: %v, want a %s refusal by %s saying %q", err, tc.code, cp.url, tc.msg)
			}
			if ctx.Err() != nil {
				t.Fatal("Run retried a refusal until its context ended")
			}
			if l := log.String(); !strings.Contains(l, "refused this agent's protocol version; stopping") || !strings.Contains(l, tc.code) {
				t.Errorf("agent log:\n%s", l)
			}
		})
	}
	var agents []store.Agent
	cp.api("GET", "/api/v1/agents", nil, http.StatusOK, &agents)
	if len(agents) != 0 {
		t.Errorf("refused agents registered: %+v", agents)
	}
}

// deadURL is a loopback address nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// badGateway is a reverse proxy to a replica that is down: it answers
// every request 502, as a load balancer in front of one does.
func badGateway(t *testing.T) string {
	t.Helper()
	target, _ := url.Parse(deadURL(t))
	p := httputil.NewSingleHostReverseProxy(target)
	p.ErrorLog = nil
	p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) }
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	return s.URL
}

// Given several server URLs, the agent's requests move on from one that
// cannot be reached (connection refused) or answers 5xx to the next, in
// one go: the registration, the claim, the heartbeat, the log, the step
// and the finish all reach the live server, and each switch is logged. A
// 4xx is an answer, not a failure: the agent stays where it is.
func TestClientFailsOver(t *testing.T) {
	cp := startControlPlane(t)
	bad, dead := badGateway(t), deadURL(t)
	notKiln := httptest.NewServer(http.NotFoundHandler())
	defer notKiln.Close()
	var log logBuffer
	a := newAgent(t, strings.Join([]string{bad, dead, cp.url}, ","), cp.agent, &log)
	c := a.api
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	// first sends the next request to the first URL again.
	first := func() { c.cur.Store(0) }

	first()
	if err := a.register(ctx); err != nil {
		t.Fatal(err)
	}
	b := cp.queueBuild()
	first()
	asg, err := c.claim(ctx, protocol.ClaimRequest{AgentID: a.cfg.ID, Labels: a.cfg.Labels, Free: 1, WaitSeconds: int(waitLimit / time.Second)})
	if err != nil || asg == nil || asg.BuildID != b.ID {
		t.Fatalf("claim: %+v, %v", asg, err)
	}
	first()
	if cancelled, err := c.heartbeat(ctx, asg.JobID, asg.Attempt, 0); err != nil || cancelled {
		t.Fatalf("heartbeat: %v, %v", cancelled, err)
	}
	first()
	if err := c.step(ctx, asg.JobID, protocol.StepUpdate{Attempt: asg.Attempt, Index: 0, Status: "running"}); err != nil {
		t.Fatal(err)
	}
	first()
	if err := c.sendLogs(ctx, asg.JobID, asg.Attempt, []logs.Line{{Seq: 1, Time: time.Now(), Text: "through the live one"}}); err != nil {
		t.Fatal(err)
	}
	var jl []struct {
		Lines []struct{ Text string }
	}
	cp.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs", b.ID), nil, http.StatusOK, &jl)
	if len(jl) != 1 || len(jl[0].Lines) != 1 || jl[0].Lines[0].Text != "through the live one" {
		t.Fatalf("stored log %+v", jl)
	}
	if got := cp.build(b.ID); got.Status != store.StatusRunning || got.Jobs[0].AgentID != "a1" || got.Jobs[0].Steps[0].Status != store.StatusRunning {
		t.Fatalf("build after the claim and step: %+v", got)
	}
	first()
	code := 0
	if err := c.finish(ctx, asg.JobID, protocol.FinishRequest{Attempt: asg.Attempt, Status: "success", ExitCode: &code}); err != nil {
		t.Fatal(err)
	}
	if got := cp.build(b.ID); got.Status != store.StatusSuccess {
		t.Fatalf("build after finish: %s", got.Status)
	}
	// Six requests, each switching twice: bad -> dead -> live.
	l := log.String()
	for _, sw := range [][2]string{{bad, dead}, {dead, cp.url}} {
		want := fmt.Sprintf("from=%s to=%s", sw[0], sw[1])
		if n := strings.Count(l, want); n != 6 {
			t.Errorf("%d switches %s, want 6; log:\n%s", n, want, l)
		}
	}
	if !strings.Contains(l, "502") || !strings.Contains(l, "connection refused") {
		t.Errorf("the switches do not say why:\n%s", l)
	}

	// Past the last URL, the first again.
	cp2 := newClient([]string{cp.url, dead}, cp.agent, nil, slog.New(slog.DiscardHandler))
	cp2.cur.Store(1)
	if _, err := cp2.heartbeat(ctx, asg.JobID, asg.Attempt, 0); !errors.Is(err, ErrStale) || cp2.cur.Load() != 0 {
		t.Errorf("heartbeat of a finished attempt through a dead URL and then the live one: %v (at URL %d), want it stale, at the live URL", err, cp2.cur.Load())
	}

	// A 4xx stays: the server is there and has answered.
	c4 := newClient([]string{notKiln.URL, cp.url}, cp.agent, nil, slog.New(slog.DiscardHandler))
	if _, err := c4.heartbeat(ctx, asg.JobID, asg.Attempt, 0); !permanent(err) || c4.cur.Load() != 0 {
		t.Errorf("heartbeat answered 404: %v (at URL %d), want a permanent error, at the same URL", err, c4.cur.Load())
	}
	// Every URL failing: the request's error is the last one's.
	cd := newClient([]string{bad, dead}, cp.agent, nil, slog.New(slog.DiscardHandler))
	if _, err := cd.heartbeat(ctx, asg.JobID, asg.Attempt, 0); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("heartbeat with every server down: %v", err)
	}
}

// A server that hangs is given up on after the heartbeat's bound, in time
// for the next one to renew the lease.
func TestHeartbeatPassesOverAHungServer(t *testing.T) {
	cp := startControlPlane(t)
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	var log logBuffer
	a := newAgent(t, cp.url+","+hung.URL, cp.agent, &log)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := a.register(ctx); err != nil {
		t.Fatal(err)
	}
	b := cp.queueBuild()
	asg, err := a.api.claim(ctx, protocol.ClaimRequest{AgentID: a.cfg.ID, Labels: a.cfg.Labels, Free: 1, WaitSeconds: int(waitLimit / time.Second)})
	if err != nil || asg == nil || asg.BuildID != b.ID {
		t.Fatalf("claim: %+v, %v", asg, err)
	}
	a.api.cur.Store(1)
	if _, err := a.api.heartbeat(ctx, asg.JobID, asg.Attempt, 200*time.Millisecond); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if a.api.server() != cp.url || !strings.Contains(log.String(), "from="+hung.URL+" to="+cp.url) {
		t.Errorf("heartbeat went to %s; log:\n%s", a.api.server(), log.String())
	}
}

// Bad -server values are refused, each with what is wrong.
func TestServerURLs(t *testing.T) {
	got, err := ServerURLs(" http://a:8080/ , https://b ,")
	if err != nil || strings.Join(got, " ") != "http://a:8080 https://b" {
		t.Errorf("ServerURLs: %q, %v", got, err)
	}
	for in, want := range map[string]string{
		"":                        "no server URL",
		" , ":                     "no server URL",
		"a:8080":                  `server URL "a:8080": want http(s)://host[:port]`,
		"http://a,ftp://b":        `server URL "ftp://b": want http(s)://host[:port]`,
		"http://a,http://a/":      `server URL "http://a" given twice`,
		"http://a,http:///nohost": `server URL "http:///nohost"`,
	} {
		if _, err := ServerURLs(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ServerURLs(%q): %v, want %q", in, err, want)
		}
	}
}
