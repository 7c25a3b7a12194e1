// Tests of Kiln's HTTP edge. Each test starts a real control plane
// (server.New: SQLite in a temporary directory, the scheduler's planner and
// reaper running) on a loopback listener, creates projects through the REST
// API over real git repositories made with the git CLI, and plays the agent
// itself over HTTP with the messages of internal/protocol. No container
// engine is needed: nothing is ever run.
package api_test

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

	"github.com/kilnci/kiln/internal/store/storetest"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// waitLimit bounds every wait so that a broken server fails the test
// instead of hanging it. It is a safety net, never an assertion about speed.
const waitLimit = 30 * time.Second

// hookSecret is the webhook secret of every project the tests create.
const hookSecret = "kiln-api-test-webhook-secret"

// pipelineOK is a valid .kiln.yml of one job, "test", with two steps.
const pipelineOK = "image: localhost/kiln/busybox:latest\njobs:\n  test:\n    steps:\n      - echo hello\n      - name: bye\n        run: echo bye\n"

// env is one running control plane and the tokens to talk to it.
type env struct {
	t     *testing.T
	srv   *server.Server
	http  *http.Client // this server's own connections, closed before it shuts down
	url   string
	admin string // admin token
	agent string // agent token
}

// newEnv starts a control plane. The lease is long (30s) so that no test
// that plays a slow agent loses its lease by accident; the lease test
// shortens it with opts. Retries and polls are quick so that a retried job
// is claimable again at once.
func newEnv(t *testing.T, opts ...func(*server.Config)) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("KILN_TEST_VERBOSE") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return startEnv(t, log, opts...)
}

// startEnv is newEnv with the server's logger.
func startEnv(t *testing.T, log *slog.Logger, opts ...func(*server.Config)) *env {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database = storetest.Database(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.MaxWebhookBody = 64 << 10
	cfg.Scheduler.Lease = 30 * time.Second
	cfg.Scheduler.RetryDelay = 50 * time.Millisecond
	cfg.Scheduler.PollInterval = 100 * time.Millisecond
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(func() {
		// Closed first: a connection the client dialed but never used
		// would hold the server's graceful shutdown for 5 seconds.
		client.CloseIdleConnections()
		cancel()
		<-done
		srv.Close()
	})
	admin, _, err := srv.EnsureAdminToken(ctx)
	if err != nil || admin == "" {
		t.Fatalf("admin token: %q, %v", admin, err)
	}
	agent, err := srv.LocalAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, http: client, url: "http://" + ln.Addr().String(), admin: admin, agent: agent}
}

// sub is e for the subtest t: its helpers fail t, not the parent test.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// --- HTTP ---

// response is an answer read in full.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends a request with token (none when empty). body is sent as is when
// it is a []byte, as JSON otherwise, and not at all when nil.
func (e *env) do(token, method, path string, body any, header http.Header) *response {
	e.t.Helper()
	r, err := e.send(token, method, path, body, header)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// noVersion is the header of an agent request that says no protocol
// version (an agent from before versions); without it, send says
// protocol.Version.
var noVersion = http.Header{protocol.Header: nil}

// send is do for any goroutine: it returns its error instead of failing the test.
func (e *env) send(token, method, path string, body any, header http.Header) (*response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if _, said := header[protocol.Header]; !said && strings.HasPrefix(path, protocol.Prefix) {
		// An agent of this server's protocol, unless the test says
		// otherwise (noVersion: none at all).
		req.Header.Set(protocol.Header, protocol.Version)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return &response{code: resp.StatusCode, header: resp.Header, body: data}, nil
}

// sendAll sends n requests at once, each made by req(i), and returns the answers.
func (e *env) sendAll(n int, req func(i int) (token, method, path string, body any, header http.Header)) []*response {
	e.t.Helper()
	out := make([]*response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i], errs[i] = e.send(req(i)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

// api calls the REST API with the admin token.
func (e *env) api(method, path string, body any) *response {
	e.t.Helper()
	return e.do(e.admin, method, path, body, nil)
}

// agentAPI calls the agent protocol with the agent token, as an agent of
// this protocol version does.
func (e *env) agentAPI(path string, body any) *response {
	e.t.Helper()
	return e.do(e.agent, "POST", protocol.Prefix+path, body, http.Header{protocol.Header: {protocol.Version}})
}

// want checks the status code and decodes the JSON body into out (when not nil).
func (r *response) want(t *testing.T, code int, out any) {
	t.Helper()
	if r.code != code {
		t.Fatalf("HTTP %d, want %d; body: %s", r.code, code, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
	}
}

// wantError checks an error answer: the status, a JSON body
// {"error": "...", "code": "..."} with that code and an error message
// containing every one of msg.
func (r *response) wantError(t *testing.T, code int, errCode string, msg ...string) protocol.Error {
	t.Helper()
	if r.code != code {
		t.Fatalf("HTTP %d, want %d; body: %s", r.code, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var pe protocol.Error
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pe); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if pe.Code != errCode || pe.Error == "" {
		t.Errorf("error body %s: want code %q and a message", r.body, errCode)
	}
	for _, m := range msg {
		if !strings.Contains(pe.Error, m) {
			t.Errorf("error %q does not say %q", pe.Error, m)
		}
	}
	return pe
}

// refusal is a request that must be refused: the status of the answer, its
// error code and a part of its error message.
type refusal struct {
	name         string
	method, path string
	body         any
	code         int
	errCode, msg string
}

// refuse sends each request, as a subtest, with token and checks that it is
// refused; then unchanged, when not nil, checks that it changed nothing.
func (e *env) refuse(token string, cases []refusal, unchanged func(e *env)) {
	for _, tc := range cases {
		e.t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			e.do(token, tc.method, tc.path, tc.body, nil).wantError(t, tc.code, tc.errCode, tc.msg)
			if unchanged != nil {
				unchanged(e)
			}
		})
	}
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

// newRepo creates a repository whose branch main holds a valid .kiln.yml
// and returns its path and head commit.
func newRepo(t *testing.T) (dir, head string) {
	t.Helper()
	dir = t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	return dir, commitFile(t, dir, ".kiln.yml", pipelineOK)
}

// commitFile writes one file, commits it on the current branch and returns the new head.
func commitFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", name)
	git(t, dir, "commit", "-q", "-m", "change "+name)
	return git(t, dir, "rev-parse", "HEAD")
}

// --- projects and builds ---

// project creates a project over cloneURL with hookSecret, default branch
// main and the given extra fields of the request.
func (e *env) project(name, cloneURL string, extra map[string]any) api.ProjectView {
	e.t.Helper()
	body := map[string]any{"name": name, "clone_url": cloneURL, "webhook_secret": hookSecret}
	for k, v := range extra {
		body[k] = v
	}
	var p api.ProjectView
	e.api("POST", "/api/v1/projects", body).want(e.t, http.StatusCreated, &p)
	if p.Project == nil || p.Name != name || p.CloneURL != cloneURL || p.HasWebhookSecret != (body["webhook_secret"] != "") {
		e.t.Fatalf("created project %s", e.api("GET", "/api/v1/projects/"+name, nil).body)
	}
	return p
}

// trigger starts a build of branch through the API.
func (e *env) trigger(project, branch string) *store.Build {
	e.t.Helper()
	var b store.Build
	e.api("POST", "/api/v1/projects/"+project+"/builds", map[string]string{"branch": branch}).want(e.t, http.StatusCreated, &b)
	return &b
}

func (e *env) build(id int64) *store.Build {
	e.t.Helper()
	var b store.Build
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d", id), nil).want(e.t, http.StatusOK, &b)
	return &b
}

// builds lists every build, newest first.
func (e *env) builds() []*store.Build {
	e.t.Helper()
	var bs []*store.Build
	e.api("GET", "/api/v1/builds", nil).want(e.t, http.StatusOK, &bs)
	return bs
}

// wantBuilds checks how many builds exist.
func (e *env) wantBuilds(n int) []*store.Build {
	e.t.Helper()
	bs := e.builds()
	if len(bs) != n {
		e.t.Fatalf("%d builds, want %d: %s", len(bs), n, dump(bs))
	}
	return bs
}

// deliveries counts the stored webhook deliveries. No endpoint lists them;
// the tests read the table to prove that a refused delivery left nothing.
func (e *env) deliveries() int {
	e.t.Helper()
	var n int
	if err := e.srv.Store.DB().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM deliveries`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitBuild polls the build until cond holds.
func (e *env) waitBuild(id int64, what string, cond func(*store.Build) bool) *store.Build {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		b := e.build(id)
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("build %d never got %s; last state: %s", id, what, dump(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPlanned waits until the planner has turned the build into jobs (or failed it).
func (e *env) waitPlanned(id int64) *store.Build {
	e.t.Helper()
	return e.waitBuild(id, "planned", func(b *store.Build) bool { return b.Planned && len(b.Jobs) > 0 })
}

// wantQueued checks a build that was planned into the one job of
// pipelineOK, queued, for commit.
func wantQueued(t *testing.T, b *store.Build, commit string) {
	t.Helper()
	if b.Status != store.StatusQueued || b.Commit != commit || len(b.Jobs) != 1 || b.Jobs[0].Name != "test" || b.Jobs[0].Status != store.StatusQueued {
		t.Fatalf("want a queued build of commit %s with job test queued; got %s", commit, dump(b))
	}
}

// logs returns the stored logs of a build.
func (e *env) logs(id int64) []api.JobLog {
	e.t.Helper()
	var out []api.JobLog
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs", id), nil).want(e.t, http.StatusOK, &out)
	return out
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// --- webhooks ---

// fixture reads a webhook payload of internal/forge/testdata.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "forge", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit decodes a JSON payload, lets f change it and encodes it again.
func edit(t *testing.T, body []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// githubPush is the real branch push example (push.4.json) moved to
// refs/heads/<branch> at commit: "after" and the head commit's id, which
// is what GitHub builds, are rewritten.
func githubPush(t *testing.T, branch, commit string) []byte {
	t.Helper()
	return edit(t, fixture(t, "github/push.4.json"), func(m map[string]any) {
		m["ref"], m["after"] = "refs/heads/"+branch, commit
		m["head_commit"].(map[string]any)["id"] = commit
	})
}

func hmacHex(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// githubHeader is what GitHub sends with body, signed with secret (unsigned when empty).
func githubHeader(event, delivery, secret string, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/044aadd")
	h.Set("X-GitHub-Event", event)
	h.Set("X-GitHub-Delivery", delivery)
	h.Set("X-GitHub-Hook-ID", "292430182")
	if secret != "" {
		h.Set("X-Hub-Signature-256", "sha256="+hmacHex(secret, body))
	}
	return h
}

// hook delivers a webhook to /hooks/{forge}/{project}.
func (e *env) hook(forge, project string, header http.Header, body []byte) *response {
	e.t.Helper()
	return e.do("", "POST", "/hooks/"+forge+"/"+project, body, header)
}

// pushGitHub delivers a signed GitHub push of branch at commit and returns the new build's id.
func (e *env) pushGitHub(project, delivery, branch, commit string) int64 {
	e.t.Helper()
	body := githubPush(e.t, branch, commit)
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	e.hook("github", project, githubHeader("push", delivery, hookSecret, body), body).want(e.t, http.StatusCreated, &out)
	if out.BuildID == 0 {
		e.t.Fatal("no build_id")
	}
	return out.BuildID
}

// --- playing the agent ---

// helloBuild creates project "hello" over a new repository (pipelineOK on
// main) and triggers a build of main.
func (e *env) helloBuild() *store.Build {
	e.t.Helper()
	dir, _ := newRepo(e.t)
	e.project("hello", dir, nil)
	return e.trigger("hello", "main")
}

// runningJob is helloBuild with its job claimed by agent "a1".
func (e *env) runningJob() (*store.Build, *protocol.Assignment) {
	e.t.Helper()
	b := e.helloBuild()
	e.register("a1")
	return b, e.mustClaim("a1")
}

// register registers an agent with the agent token.
func (e *env) register(id string) protocol.RegisterResponse {
	e.t.Helper()
	var rr protocol.RegisterResponse
	e.agentAPI("/register", protocol.RegisterRequest{ID: id, Capacity: 1, Labels: []string{"linux"}, Version: "test", Protocol: protocol.Version}).want(e.t, http.StatusOK, &rr)
	return rr
}

// claim asks for a job, waiting up to wait seconds; it returns nil on 204.
func (e *env) claim(agentID string, wait int) *protocol.Assignment {
	e.t.Helper()
	r := e.agentAPI("/claim", protocol.ClaimRequest{AgentID: agentID, Labels: []string{"linux"}, Free: 1, WaitSeconds: wait})
	if r.code == http.StatusNoContent {
		if len(r.body) != 0 {
			e.t.Errorf("204 with a body: %s", r.body)
		}
		return nil
	}
	var a protocol.Assignment
	r.want(e.t, http.StatusOK, &a)
	return &a
}

// mustClaim claims a job that is queued or about to be: the wait is a
// safety net, the claim returns as soon as the job is claimable.
func (e *env) mustClaim(agentID string) *protocol.Assignment {
	e.t.Helper()
	a := e.claim(agentID, int(waitLimit/time.Second))
	if a == nil {
		e.t.Fatal("claim: nothing to do")
	}
	return a
}

func (e *env) heartbeat(jobID int64, attempt int) *response {
	e.t.Helper()
	return e.agentAPI(fmt.Sprintf("/jobs/%d/heartbeat", jobID), protocol.Fence{Attempt: attempt})
}

// sendLogs posts a batch with one line per seq, its text "line <seq>".
func (e *env) sendLogs(jobID int64, attempt int, seqs ...int64) *response {
	e.t.Helper()
	batch := protocol.LogBatch{Attempt: attempt}
	for _, s := range seqs {
		batch.Lines = append(batch.Lines, logs.Line{Seq: s, Step: 0, Time: time.Now(), Text: fmt.Sprintf("line %d", s)})
	}
	return e.agentAPI(fmt.Sprintf("/jobs/%d/logs", jobID), batch)
}

func (e *env) finish(jobID int64, attempt int, status store.Status) *response {
	e.t.Helper()
	code := 0
	return e.agentAPI(fmt.Sprintf("/jobs/%d/finish", jobID), protocol.FinishRequest{Attempt: attempt, Status: string(status), ExitCode: &code})
}

// seqs returns the seq numbers of a job's stored log lines.
func seqs(l api.JobLog) []int64 {
	out := []int64{}
	for _, line := range l.Lines {
		out = append(out, line.Seq)
	}
	return out
}
