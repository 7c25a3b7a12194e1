package forgestatus_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store/storetest"

	dto "github.com/prometheus/client_model/go"

	"github.com/kilnci/kiln/internal/forgestatus"
	"github.com/kilnci/kiln/internal/forgestatus/fakeforge"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

var ctx = context.Background()

const sha = "0123456789abcdef0123456789abcdef01234567"

// clock is the sender's clock: tests move it instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// databases are the PostgreSQL databases of a PostgreSQL run (storetest),
// by the directory a test keeps its store in: opened again on a restart.
var databases sync.Map

// openStore opens the store kept in dir (SQLite), or the database that
// stands for dir in a PostgreSQL run.
func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	database := filepath.Join(dir, "kiln.db")
	if storetest.Postgres() {
		db, ok := databases.Load(dir)
		if !ok {
			db, _ = databases.LoadOrStore(dir, storetest.PostgresDatabase(t))
		}
		database = db.(string)
	}
	st, err := store.Open(ctx, database, box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type env struct {
	st      *store.Store
	m       *metrics.Metrics
	clock   *clock
	sender  *forgestatus.Sender
	project *store.Project
	dir     string
}

func newEnv(t *testing.T, conn *store.ForgeConnection) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{st: openStore(t, dir), dir: dir, clock: &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	e.project = &store.Project{Name: "web", CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := e.st.CreateProject(ctx, e.project); err != nil {
		t.Fatal(err)
	}
	if conn != nil {
		if err := e.st.SetProjectForge(ctx, e.project.ID, conn); err != nil {
			t.Fatal(err)
		}
	}
	e.newSender(t)
	return e
}

func (e *env) newSender(t *testing.T, opts ...func(*forgestatus.Config)) {
	e.m = metrics.New(nil)
	cfg := forgestatus.Config{PublicURL: "https://kiln.example.com", Now: e.clock.now, Backoff: func(int) time.Duration { return time.Minute }}
	for _, o := range opts {
		o(&cfg)
	}
	e.sender = forgestatus.New(cfg, e.st, e.m, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func workers(n int) func(*forgestatus.Config) { return func(c *forgestatus.Config) { c.Workers = n } }

// build creates a push build of sha with the named jobs, planned.
func (e *env) build(t *testing.T, jobs ...string) *store.Build {
	t.Helper()
	b := &store.Build{ProjectID: e.project.ID, Trigger: "push", Event: store.EventPush, Ref: "refs/heads/main", Branch: "main", Commit: sha}
	if err := e.st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	var js []*store.Job
	for _, n := range jobs {
		js = append(js, &store.Job{Name: n, Spec: []byte(`{}`), TimeoutSeconds: 60})
	}
	if err := e.st.PlanBuild(ctx, b.ID, sha, js); err != nil {
		t.Fatal(err)
	}
	return b
}

// claim claims the next job, which must be name.
func (e *env) claim(t *testing.T, name string) *store.Job {
	t.Helper()
	j, err := e.st.ClaimJob(ctx, store.Claim{AgentID: "a", Lease: time.Minute, StepNames: func([]byte) []string { return []string{"s"} }})
	if err != nil || j == nil || j.Name != name {
		t.Fatalf("claim: want job %s, got %+v, %v", name, j, err)
	}
	return j
}

func (e *env) finish(t *testing.T, j *store.Job, st store.Status) {
	t.Helper()
	if _, err := e.st.FinishJob(ctx, j.ID, j.Attempt, st, nil, "", 0); err != nil {
		t.Fatal(err)
	}
}

// flush runs rounds of the sender until one sends nothing.
func (e *env) flush(t *testing.T) {
	t.Helper()
	for range 20 {
		n, err := e.sender.Round(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("the outbox never emptied")
}

func (e *env) rows(t *testing.T, buildID int64) []*store.ForgeStatus {
	t.Helper()
	rows, err := e.st.ForgeStatuses(ctx, buildID)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

type sent struct{ repo, sha, state, context, target, desc string }

// byContext groups what a fake got: context → states in order.
func byContext(ss []sent) map[string]string {
	out := map[string]string{}
	for _, s := range ss {
		out[s.context] = strings.TrimPrefix(out[s.context]+" "+s.state, " ")
	}
	return out
}

type forge struct {
	name  string
	conn  func() *store.ForgeConnection
	sent  func() []sent
	close func()
	// states per Kiln status: queued, running, success, failure
	want map[string]string
}

func forges(t *testing.T) []forge {
	gh := fakegithub.New()
	gh.AddToken("ghp_status")
	gl := fakeforge.New(fakeforge.GitLab, "group/sub/web", "glpat-status")
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "gitea-status")
	t.Cleanup(func() { gh.Close(); gl.Close(); gt.Close() })
	fromFake := func(f *fakeforge.Server) func() []sent {
		return func() []sent {
			var out []sent
			for _, s := range f.Statuses() {
				out = append(out, sent{s.Repo, s.SHA, s.State, s.Context, s.TargetURL, s.Description})
			}
			return out
		}
	}
	return []forge{
		{name: "github",
			conn: func() *store.ForgeConnection {
				return &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "ghp_status"}
			},
			sent: func() []sent {
				var out []sent
				for _, s := range gh.Statuses() {
					out = append(out, sent{s.Repo, s.SHA, s.State, s.Context, s.TargetURL, s.Description})
				}
				return out
			},
			want: map[string]string{"kiln": "pending pending failure", "kiln/test": "pending pending success", "kiln/lint": "pending pending failure"}},
		{name: "gitlab",
			conn: func() *store.ForgeConnection {
				return &store.ForgeConnection{Forge: "gitlab", Repo: "group/sub/web", APIURL: gl.URL(), Token: "glpat-status"}
			},
			sent: fromFake(gl),
			want: map[string]string{"kiln": "pending running failed", "kiln/test": "pending running success", "kiln/lint": "pending running failed"}},
		{name: "gitea",
			conn: func() *store.ForgeConnection {
				return &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "gitea-status"}
			},
			sent: fromFake(gt),
			want: map[string]string{"kiln": "pending pending failure", "kiln/test": "pending pending success", "kiln/lint": "pending pending failure"}},
	}
}

// A build's statuses reach each forge in order: pending, running, then
// each job's verdict and the build's.
func TestStatusesReachEachForge(t *testing.T) {
	for _, f := range forges(t) {
		t.Run(f.name, func(t *testing.T) {
			e := newEnv(t, f.conn())
			b := e.build(t, "test", "lint")
			e.flush(t)
			test := e.claim(t, "test")
			e.flush(t)
			lint := e.claim(t, "lint")
			e.flush(t)
			e.finish(t, test, store.StatusSuccess)
			e.flush(t)
			e.finish(t, lint, store.StatusFailure)
			e.flush(t)
			got := f.sent()
			if g := byContext(got); fmt.Sprint(g) != fmt.Sprint(f.want) {
				t.Errorf("statuses by context:\n got %v\nwant %v", g, f.want)
			}
			wantTarget := fmt.Sprintf("https://kiln.example.com/builds/%d", b.ID)
			for _, s := range got {
				if s.sha != sha || s.repo != f.conn().Repo || s.target != wantTarget || s.desc == "" {
					t.Errorf("status %+v: want sha %s, repo %s, target %s and a description", s, sha, f.conn().Repo, wantTarget)
				}
			}
			for _, r := range e.rows(t, b.ID) {
				if r.Outcome != store.OutcomeDelivered {
					t.Errorf("row %+v: want delivered", r)
				}
			}
			if n := counter(e.m, f.name, "delivered"); int(n) != len(got) {
				t.Errorf("kiln_forge_statuses_total{result=delivered} = %v, want %d", n, len(got))
			}
		})
	}
}

// No forge connection: no outbox rows, and the build runs as ever; nor
// for a GitHub Actions runner build (GitHub shows those itself).
func TestNoConnectionNoRows(t *testing.T) {
	e := newEnv(t, nil)
	b := e.build(t, "test")
	e.finish(t, e.claim(t, "test"), store.StatusSuccess)
	if rows := e.rows(t, b.ID); len(rows) != 0 {
		t.Fatalf("rows without a connection: %+v", rows)
	}
	if err := e.st.SetProjectForge(ctx, e.project.ID, &store.ForgeConnection{Forge: "github", Repo: "a/b", APIURL: "http://127.0.0.1:1", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	r := &store.Build{ProjectID: e.project.ID, Trigger: store.TriggerGitHubActions, Ref: "refs/heads/main", Commit: sha}
	if err := e.st.CreateBuild(ctx, r); err != nil {
		t.Fatal(err)
	}
	if rows := e.rows(t, r.ID); len(rows) != 0 {
		t.Fatalf("rows of a runner build: %+v", rows)
	}
}

// A connection removed after its rows were written: they are given up.
func TestConnectionRemoved(t *testing.T) {
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"})
	b := e.build(t, "test")
	if err := e.st.SetProjectForge(ctx, e.project.ID, nil); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	for _, r := range e.rows(t, b.ID) {
		if r.Outcome != store.OutcomeFailed || !strings.Contains(r.LastError, "no forge connection") {
			t.Errorf("row %+v: want given up", r)
		}
	}
	if gt.Calls() != 0 {
		t.Errorf("%d calls to the forge", gt.Calls())
	}
}

// A forge answering 503 then recovering gets only the newest states; none
// is lost (every row ends delivered or superseded).
func TestForgeDownThenRecovers(t *testing.T) {
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"})
	gt.FailNext(http.StatusServiceUnavailable, 2, nil) // the build's and the job's pending
	b := e.build(t, "test")
	e.flush(t)
	if n := len(gt.Statuses()); n != 0 {
		t.Fatalf("%d statuses accepted while the forge was down", n)
	}
	if n, _ := e.sender.Round(ctx); n != 0 {
		t.Fatalf("a round before the backoff passed sent %d", n)
	}
	// While it is down the job runs and succeeds.
	j := e.claim(t, "test")
	gt.FailNext(http.StatusServiceUnavailable, 2, nil)
	e.flush(t) // running: refused too
	e.finish(t, j, store.StatusSuccess)
	e.clock.advance(2 * time.Minute)
	e.flush(t)
	got := byContext(func() []sent {
		var out []sent
		for _, s := range gt.Statuses() {
			out = append(out, sent{state: s.State, context: s.Context})
		}
		return out
	}())
	if want := map[string]string{"kiln": "success", "kiln/test": "success"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after recovery: got %v, want %v (only the newest states)", got, want)
	}
	for _, r := range e.rows(t, b.ID) {
		if r.Outcome != store.OutcomeDelivered && r.Outcome != store.OutcomeSuperseded {
			t.Errorf("row %+v: want delivered or superseded", r)
		}
	}
	if n := counter(e.m, "gitea", "retried"); n != 4 {
		t.Errorf("retried = %v, want 4", n)
	}
	if n, _, err := e.st.OldestPendingForgeStatus(ctx); err != nil || n != 0 {
		t.Errorf("pending after recovery: %d, %v", n, err)
	}
}

// Rows written while no sender ran (a crash, a restart) are delivered by
// the next one, on the same data directory.
func TestRestartDeliversUndelivered(t *testing.T) {
	gl := fakeforge.New(fakeforge.GitLab, "acme/web", "tok")
	defer gl.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitlab", Repo: "acme/web", APIURL: gl.URL(), Token: "tok"})
	b := e.build(t, "test")
	e.finish(t, e.claim(t, "test"), store.StatusSuccess)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = openStore(t, e.dir)
	e.newSender(t)
	e.flush(t)
	if got := byContext(func() []sent {
		var out []sent
		for _, s := range gl.Statuses() {
			out = append(out, sent{state: s.State, context: s.Context})
		}
		return out
	}()); fmt.Sprint(got) != fmt.Sprint(map[string]string{"kiln": "success", "kiln/test": "success"}) {
		t.Fatalf("after the restart: %v", got)
	}
	for _, r := range e.rows(t, b.ID) {
		if r.Outcome == "" {
			t.Errorf("row %+v still to send", r)
		}
	}
}

// 401, 403, 404 and 422 are given up: recorded on the row, counted,
// logged; the build is not affected.
func TestRefusalsGivenUp(t *testing.T) {
	for _, code := range []int{401, 403, 404, 422} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			gh := fakegithub.New()
			defer gh.Close()
			gh.AddToken("good")
			conn := &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "good"}
			switch code {
			case 401:
				conn.Token = "bad" // the fake's own answer
			default:
				gh.FailNext(fakegithub.EndpointCreateStatus, code, 100)
			}
			e := newEnv(t, conn)
			b := e.build(t, "test")
			e.flush(t)
			e.finish(t, e.claim(t, "test"), store.StatusSuccess)
			e.flush(t)
			e.clock.advance(time.Hour)
			e.flush(t)
			if got, _ := e.st.Build(ctx, b.ID); got.Status != store.StatusSuccess {
				t.Errorf("build %s, want success", got.Status)
			}
			failed := 0
			for _, r := range e.rows(t, b.ID) {
				if r.Outcome == store.OutcomeSuperseded {
					continue // running, never sent: success came first
				}
				failed++
				if r.Outcome != store.OutcomeFailed || r.Attempts != 1 || !strings.Contains(r.LastError, fmt.Sprint(code)) {
					t.Errorf("row %+v: want failed after 1 attempt with %d recorded", r, code)
				}
			}
			if failed != 4 {
				t.Errorf("%d rows given up, want 4 (pending and success of the build and its job)", failed)
			}
			if n := counter(e.m, "github", "failed"); int(n) != failed {
				t.Errorf("failed = %v, want %d", n, failed)
			}
		})
	}
}

// 429 with Retry-After (and GitHub's secondary limit answered 403 with
// it): tried again when the forge said, not before.
func TestRetryAfter(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusForbidden} {
		t.Run(fmt.Sprint(code), func(t *testing.T) { testRetryAfter(t, code) })
	}
}

func testRetryAfter(t *testing.T, code int) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"})
	gh.SecondaryRateLimit(1, code, 5*time.Minute)
	b := e.build(t) // no jobs planned: the build's pending only
	e.flush(t)
	if n := len(gh.Statuses()); n != 0 {
		t.Fatalf("%d accepted while rate limited", n)
	}
	e.clock.advance(4 * time.Minute) // past the backoff (1m), before Retry-After
	e.flush(t)
	if n := len(gh.Statuses()); n != 0 {
		t.Fatalf("%d sent before Retry-After passed", n)
	}
	e.clock.advance(2 * time.Minute)
	e.flush(t)
	if got := gh.Statuses(); len(got) != 1 || got[0].State != "pending" || got[0].Context != "kiln" {
		t.Fatalf("after Retry-After: %+v", got)
	}
	if r := e.rows(t, b.ID); r[0].Outcome != store.OutcomeDelivered || r[0].Attempts != 2 {
		t.Fatalf("row %+v", r[0])
	}
}

// GitHub's primary rate limit (403, X-RateLimit-Remaining: 0) waits for
// X-RateLimit-Reset.
func TestRateLimitReset(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"})
	gh.RateLimit(1, e.clock.now().Add(time.Hour))
	e.build(t)
	e.flush(t)
	e.clock.advance(30 * time.Minute)
	e.flush(t)
	if n := len(gh.Statuses()); n != 0 {
		t.Fatalf("%d sent before the reset", n)
	}
	e.clock.advance(31 * time.Minute)
	e.flush(t)
	if n := len(gh.Statuses()); n != 1 {
		t.Fatalf("%d sent after the reset, want 1", n)
	}
}

// A build waiting for approval says so; approval makes it pending.
func TestWaitingForApproval(t *testing.T) {
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"})
	b := &store.Build{ProjectID: e.project.ID, Trigger: "push", Event: store.EventPullRequest, Commit: sha, Approval: store.ApprovalWaiting,
		PullRequest: &store.PullRequest{Number: 3, HeadBranch: "f", BaseBranch: "main", Fork: true}}
	if err := e.st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	if err := e.st.ApproveBuild(ctx, b.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	got := gt.Statuses()
	if len(got) != 2 || !strings.Contains(got[0].Description, "approval") || got[1].State != "pending" || strings.Contains(got[1].Description, "approval") {
		t.Fatalf("statuses %+v: want waiting for approval, then queued", got)
	}
}

func TestDescriptionTruncated(t *testing.T) {
	s := forgestatus.New(forgestatus.Config{PublicURL: "http://k"}, nil, nil, slog.Default())
	req, err := s.Request(ctx, &store.ForgeConnection{Forge: "github", Repo: "a/b", APIURL: "http://x", Token: "t"},
		&store.ForgeStatus{BuildID: 1, Commit: sha, Context: "kiln", State: store.StatusRunning, Description: strings.Repeat("é", 300)})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if !bytes.Contains(body, []byte(strings.Repeat("é", 139)+"…")) || bytes.Contains(body, []byte(strings.Repeat("é", 140))) {
		t.Fatalf("description not cut to 140 characters: %s", body)
	}
}

func counter(m *metrics.Metrics, forge, result string) float64 {
	var d dto.Metric
	if err := m.ForgeStatuses.WithLabelValues(forge, result).Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}

// Rows done with are pruned after Keep; rows still to send are not.
func TestPrune(t *testing.T) {
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"})
	b := e.build(t, "test")
	e.flush(t)
	gt.FailNext(http.StatusServiceUnavailable, 1, nil)
	e.claim(t, "test")
	e.flush(t) // one of the two running rows waits for a retry
	n, err := e.st.PruneForgeStatuses(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 3 {
		t.Fatalf("pruned %d, %v; want 3 (2 pending delivered, 1 running delivered)", n, err)
	}
	if rows := e.rows(t, b.ID); len(rows) != 1 || rows[0].Outcome != "" {
		t.Fatalf("left %+v, want the row still to send", rows)
	}
}

// A forge answering with a redirect does not get the token carried to
// the redirect's target: the status is given up with the 3xx recorded.
func TestNoRedirect(t *testing.T) {
	var mu sync.Mutex
	var elsewhere []http.Header
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhere = append(elsewhere, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer other.Close()
	forge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer forge.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitlab", Repo: "acme/web", APIURL: forge.URL, Token: "glpat-secret"})
	b := e.build(t)
	e.flush(t)
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) != 0 {
		t.Fatalf("the redirect was followed: %v", elsewhere)
	}
	if r := e.rows(t, b.ID); len(r) != 1 || r[0].Outcome != store.OutcomeFailed || !strings.Contains(r[0].LastError, "307") {
		t.Fatalf("rows %+v: want given up with the 307", r[0])
	}
}

// A rate limit holds the project's other statuses too: no request until
// the reset.
func TestRateLimitHoldsTheProject(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"})
	e.newSender(t, workers(1)) // one at a time: the second waits behind the first
	gh.RateLimit(1, e.clock.now().Add(time.Hour))
	e.build(t, "test", "lint")
	e.flush(t)
	if n := gh.Calls(fakegithub.EndpointCreateStatus); n != 1 {
		t.Fatalf("%d requests while rate limited, want 1", n)
	}
	e.clock.advance(61 * time.Minute)
	e.flush(t)
	if n := len(gh.Statuses()); n != 3 {
		t.Fatalf("%d delivered after the reset, want 3", n)
	}
}

// A rate-limited project's backlog does not hold up another project's
// statuses, even past one round's batch.
func TestRateLimitedProjectDoesNotBlockOthers(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	gt := fakeforge.New(fakeforge.Gitea, "acme/lib", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"})
	e.newSender(t, workers(1), func(c *forgestatus.Config) { c.Batch = 2 })
	gh.RateLimit(1, e.clock.now().Add(time.Hour))
	for i := range 3 {
		if err := e.st.CreateBuild(ctx, &store.Build{ProjectID: e.project.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: fmt.Sprintf("%040x", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	lib := &store.Project{Name: "lib", CloneURL: "/tmp/y", DefaultBranch: "main"}
	if err := e.st.CreateProject(ctx, lib); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetProjectForge(ctx, lib.ID, &store.ForgeConnection{Forge: "gitea", Repo: "acme/lib", APIURL: gt.URL(), Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateBuild(ctx, &store.Build{ProjectID: lib.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: sha}); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	if n := gh.Calls(fakegithub.EndpointCreateStatus); n != 1 {
		t.Errorf("%d requests to the rate-limited forge, want 1", n)
	}
	if got := gt.Statuses(); len(got) != 1 {
		t.Fatalf("the other project's forge got %+v, want its pending status", got)
	}
	e.clock.advance(61 * time.Minute)
	e.flush(t)
	if n := len(gh.Statuses()); n != 3 {
		t.Fatalf("%d delivered after the reset, want 3", n)
	}
}

// A forge down for an hour, answering 503 to every attempt, gets the
// newest states when it returns: transient failures are retried until a
// status is a day old, not for a number of attempts.
func TestForgeDownForAnHour(t *testing.T) {
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"})
	e.st.SetClock(e.clock.now) // rows are as old as the sender's clock says
	gt.FailNext(http.StatusServiceUnavailable, 1<<20, nil)
	e.build(t, "test")
	j := e.claim(t, "test")
	e.finish(t, j, store.StatusSuccess)
	for range 60 {
		e.flush(t)
		e.clock.advance(time.Minute)
	}
	if n := len(gt.Statuses()); n != 0 {
		t.Fatalf("%d statuses accepted while the forge was down", n)
	}
	gt.Recover()
	e.clock.advance(10 * time.Minute)
	e.flush(t)
	got := map[string]string{}
	for _, s := range gt.Statuses() {
		got[s.Context] = s.State
	}
	if want := map[string]string{"kiln": "success", "kiln/test": "success"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after an hour down: got %v, want %v", got, want)
	}
}

// A status still failing after a day is given up, recorded.
func TestGivenUpAfterADay(t *testing.T) {
	gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
	defer gt.Close()
	e := newEnv(t, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"})
	e.st.SetClock(e.clock.now)
	gt.FailNext(http.StatusServiceUnavailable, 1<<20, nil)
	b := e.build(t, "test")
	for range 25 {
		e.flush(t)
		e.clock.advance(time.Hour)
	}
	e.flush(t)
	for _, r := range e.rows(t, b.ID) {
		if r.Outcome != store.OutcomeFailed && r.Outcome != store.OutcomeSuperseded {
			t.Errorf("row %+v after a day of 503s: want given up", r)
		}
	}
	if n := counter(e.m, "gitea", "failed"); n == 0 {
		t.Error("no status counted as given up")
	}
}

// A status written wakes the running sender: it is delivered without
// waiting for the next poll (an hour here), so a pull request shows
// pending while its build is still queued.
func TestWakeDeliversBeforeThePoll(t *testing.T) {
	gh := fakegithub.New()
	t.Cleanup(gh.Close)
	gh.AddToken("ghp_wake")
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "ghp_wake"})
	e.newSender(t, func(c *forgestatus.Config) { c.Poll = time.Hour })
	e.st.OnForgeStatus(e.sender.Wake)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.sender.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	delivered := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for len(gh.Statuses()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d statuses delivered, want %d (the poll is an hour: only a wake-up sends them)", what, len(gh.Statuses()), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	e.build(t, "test")
	delivered("queued build", 2) // kiln, kiln/test
	j := e.claim(t, "test")
	delivered("running job", 4) // both running
	e.finish(t, j, store.StatusSuccess)
	delivered("finished job", 6)
}
