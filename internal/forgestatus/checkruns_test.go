package forgestatus_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/forgestatus"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
)

const (
	appID        = 77
	installation = 7700
)

var appKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func withApp(c *forgestatus.Config) {
	c.App = github.NewInstallations(github.Config{AppID: appID, Now: c.Now,
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey())})})
}

// appEnv is a project connected through the App's installation on a
// fake GitHub, and a sender that has the App.
func appEnv(t *testing.T) (*env, *fakegithub.Server) {
	t.Helper()
	gh := fakegithub.New()
	t.Cleanup(gh.Close)
	gh.RegisterApp(appID, &appKey().PublicKey, installation)
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), InstallationID: installation})
	e.newSender(t, withApp)
	return e, gh
}

// runs sums up the fake's check run events per name: "POST queued, PATCH
// in_progress, PATCH completed/failure".
func runs(gh *fakegithub.Server) map[string]string {
	out := map[string]string{}
	for _, ev := range gh.CheckRunEvents() {
		st := ev.Run.Status
		if ev.Run.Conclusion != "" {
			st += "/" + ev.Run.Conclusion
		}
		if out[ev.Run.Name] != "" {
			out[ev.Run.Name] += ", "
		}
		out[ev.Run.Name] += ev.Method + " " + st
	}
	return out
}

func runNamed(t *testing.T, gh *fakegithub.Server, name string) fakegithub.CheckRun {
	t.Helper()
	var found []fakegithub.CheckRun
	for _, r := range gh.CheckRuns() {
		if r.Name == name {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("check runs named %s: %+v, want one", name, found)
	}
	return found[0]
}

// A project connected through the App gets check runs, one per job and
// one for the build, each created queued and then updated: in_progress,
// completed with the conclusion; linked to the build's page.
func TestCheckRunsSequence(t *testing.T) {
	e, gh := appEnv(t)
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
	want := map[string]string{
		"kiln":      "POST queued, PATCH in_progress, PATCH completed/failure",
		"kiln/test": "POST queued, PATCH in_progress, PATCH completed/success",
		"kiln/lint": "POST queued, PATCH in_progress, PATCH completed/failure",
	}
	if got := runs(gh); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("check runs:\n got %v\nwant %v", got, want)
	}
	if n := len(gh.Statuses()); n != 0 {
		t.Errorf("%d commit statuses too", n)
	}
	target := fmt.Sprintf("https://kiln.example.com/builds/%d", b.ID)
	for _, r := range gh.CheckRuns() {
		if r.HeadSHA != sha || r.Repo != "acme/web" || r.DetailsURL != target || r.StartedAt.IsZero() || r.CompletedAt.IsZero() || r.Title == "" {
			t.Errorf("check run %+v: want sha, repo, details link %s, times and a title", r, target)
		}
	}
	if r := runNamed(t, gh, "kiln/test"); r.Title != "Succeeded" || r.ExternalID != fmt.Sprintf("%d/%d", b.ID, test.ID) {
		t.Errorf("kiln/test: %+v", r)
	}
	for _, r := range e.rows(t, b.ID) {
		if r.Outcome != store.OutcomeDelivered && r.Outcome != store.OutcomeSuperseded {
			t.Errorf("row %+v", r)
		}
	}
	if n := counter(e.m, "github", "delivered"); int(n) != len(gh.CheckRunEvents()) {
		t.Errorf("delivered = %v, want %d", n, len(gh.CheckRunEvents()))
	}

	// Another build of the commit (a retry) gets check runs of its own.
	e.build(t, "test")
	e.flush(t)
	if n := len(gh.CheckRuns()); n != 5 {
		t.Errorf("%d check runs after a second build, want 5", n)
	}
}

// failedJob runs a job "unit" whose step "setup" succeeds and whose step
// "test" fails, printing 30 coloured lines.
func failedJob(t *testing.T, e *env) {
	t.Helper()
	e.build(t, "unit")
	j, err := e.st.ClaimJob(ctx, store.Claim{AgentID: "a", Lease: time.Minute, StepNames: func([]byte) []string { return []string{"setup", "test"} }})
	if err != nil || j == nil {
		t.Fatal(j, err)
	}
	zero, one := 0, 1
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.st.UpdateStep(ctx, j.ID, j.Attempt, 0, store.StatusRunning, nil))
	must(e.st.AppendLogs(ctx, j.ID, j.Attempt, []store.LogLine{{Seq: 1, Step: 0, Text: "setting up"}}))
	must(e.st.UpdateStep(ctx, j.ID, j.Attempt, 0, store.StatusSuccess, &zero))
	must(e.st.UpdateStep(ctx, j.ID, j.Attempt, 1, store.StatusRunning, nil))
	var lines []store.LogLine
	for i := 1; i <= 30; i++ {
		lines = append(lines, store.LogLine{Seq: int64(i + 1), Step: 1, Text: fmt.Sprintf("\x1b[31mline %02d\x1b[0m ```", i)})
	}
	must(e.st.AppendLogs(ctx, j.ID, j.Attempt, lines))
	must(e.st.UpdateStep(ctx, j.ID, j.Attempt, 1, store.StatusFailure, &one))
	_, err = e.st.FinishJob(ctx, j.ID, j.Attempt, store.StatusFailure, &one, "", 0)
	must(err)
}

// A failed job's check run names the failing step and shows its last 20
// log lines as plain text (escapes gone); the build's names the job too.
func TestCheckRunSummary(t *testing.T) {
	e, gh := appEnv(t)
	failedJob(t, e)
	e.flush(t)

	r := runNamed(t, gh, "kiln/unit")
	if r.Conclusion != "failure" || r.Title != "Failed at step 'test'" {
		t.Errorf("title %q, conclusion %q", r.Title, r.Conclusion)
	}
	for _, want := range []string{"` test `", "exit code 1", "line 11", "line 30", "````text\n"} {
		if !strings.Contains(r.Summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.Summary)
		}
	}
	for _, not := range []string{"line 10", "\x1b", "setting up"} {
		if strings.Contains(r.Summary, not) {
			t.Errorf("summary has %q:\n%s", not, r.Summary)
		}
	}
	b := runNamed(t, gh, "kiln")
	if b.Conclusion != "failure" || b.Title != "Job 'unit': failed at step 'test'" || !strings.Contains(b.Summary, "line 30") {
		t.Errorf("the build's check run: %q\n%s", b.Title, b.Summary)
	}
}

// The check run's id is kept in the store: a restarted sender updates
// the check run it created before rather than making another.
func TestCheckRunIDSurvivesRestart(t *testing.T) {
	e, gh := appEnv(t)
	e.build(t, "test")
	e.flush(t)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = openStore(t, e.dir)
	e.newSender(t, withApp)
	e.finish(t, e.claim(t, "test"), store.StatusSuccess)
	e.flush(t)
	want := map[string]string{"kiln": "POST queued, PATCH completed/success", "kiln/test": "POST queued, PATCH completed/success"}
	if got := runs(gh); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("check runs:\n got %v\nwant %v", got, want)
	}
	if n := gh.Calls(fakegithub.EndpointCreateCheckRun); n != 2 {
		t.Errorf("%d creates, want 2", n)
	}
}

// A 5xx is retried after the backoff, as a status is; a 4xx is given up
// after one attempt, recorded.
func TestCheckRunRetriesAndRefusals(t *testing.T) {
	t.Run("5xx retried", func(t *testing.T) {
		e, gh := appEnv(t)
		gh.FailNext(fakegithub.EndpointCreateCheckRun, http.StatusBadGateway, 1)
		b := e.build(t)
		e.flush(t)
		if r := e.rows(t, b.ID); r[0].Outcome != "" || r[0].Attempts != 1 || !strings.Contains(r[0].LastError, "502") {
			t.Fatalf("after a 502: %+v", r[0])
		}
		e.clock.advance(2 * time.Minute)
		e.flush(t)
		if r := e.rows(t, b.ID); r[0].Outcome != store.OutcomeDelivered || r[0].Attempts != 2 || len(gh.CheckRuns()) != 1 {
			t.Fatalf("after the backoff: %+v, %d check runs", r[0], len(gh.CheckRuns()))
		}
		if n := counter(e.m, "github", "retried"); n != 1 {
			t.Errorf("retried = %v", n)
		}
	})
	t.Run("rate limit waits", func(t *testing.T) {
		e, gh := appEnv(t)
		gh.SecondaryRateLimit(1, http.StatusTooManyRequests, 5*time.Minute)
		e.build(t)
		e.flush(t)
		e.clock.advance(4 * time.Minute)
		e.flush(t)
		if n := len(gh.CheckRuns()); n != 0 {
			t.Fatalf("%d sent before Retry-After", n)
		}
		e.clock.advance(2 * time.Minute)
		e.flush(t)
		if n := len(gh.CheckRuns()); n != 1 {
			t.Fatalf("%d sent after Retry-After, want 1", n)
		}
	})
	for _, code := range []int{http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity} {
		t.Run(fmt.Sprint(code, " given up"), func(t *testing.T) {
			e, gh := appEnv(t)
			gh.FailNext(fakegithub.EndpointCreateCheckRun, code, 100)
			b := e.build(t)
			e.flush(t)
			e.clock.advance(time.Hour)
			e.flush(t)
			if r := e.rows(t, b.ID); r[0].Outcome != store.OutcomeFailed || r[0].Attempts != 1 || !strings.Contains(r[0].LastError, fmt.Sprint(code)) {
				t.Fatalf("row %+v: want given up after 1 attempt", r[0])
			}
		})
	}
	t.Run("no App on this server", func(t *testing.T) {
		e, gh := appEnv(t)
		e.newSender(t) // without the App
		b := e.build(t)
		e.flush(t)
		if r := e.rows(t, b.ID); r[0].Outcome != store.OutcomeFailed || !strings.Contains(r[0].LastError, "no GitHub App") {
			t.Fatalf("row %+v", r[0])
		}
		if n := gh.Calls(fakegithub.EndpointCreateCheckRun); n != 0 {
			t.Errorf("%d requests", n)
		}
	})
}

// A token connection still gets commit statuses, the App configured or
// not.
func TestTokenConnectionGetsStatuses(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("ghp_status")
	gh.RegisterApp(appID, &appKey().PublicKey, installation)
	e := newEnv(t, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "ghp_status"})
	e.newSender(t, withApp)
	e.finish(t, func() *store.Job { e.build(t, "test"); return e.claim(t, "test") }(), store.StatusSuccess)
	e.flush(t)
	if n, c := len(gh.Statuses()), len(gh.CheckRunEvents()); n != 2 || c != 0 {
		t.Fatalf("%d statuses and %d check run changes, want 2 and 0", n, c)
	}
}

// A fork's build waiting for approval is a queued check run that says so;
// approved, the same check run goes on.
func TestCheckRunWaitingForApproval(t *testing.T) {
	e, gh := appEnv(t)
	b := &store.Build{ProjectID: e.project.ID, Trigger: "push", Event: store.EventPullRequest, Commit: sha, Approval: store.ApprovalWaiting,
		PullRequest: &store.PullRequest{Number: 3, HeadBranch: "f", BaseBranch: "main", Fork: true}}
	if err := e.st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	r := runNamed(t, gh, "kiln")
	if r.Status != "queued" || r.Title != "Waiting for approval" || !strings.Contains(r.Summary, fmt.Sprintf("kiln approve %d", b.ID)) {
		t.Fatalf("waiting: %+v", r)
	}
	if err := e.st.ApproveBuild(ctx, b.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	if r := runNamed(t, gh, "kiln"); r.Status != "queued" || r.Title != "Queued" {
		t.Fatalf("approved: %+v", r)
	}
	if got := runs(gh)["kiln"]; got != "POST queued, PATCH queued" {
		t.Errorf("kiln: %s", got)
	}
}

// A build of many jobs still fits GitHub's 65535 characters of summary.
func TestCheckRunSummaryClipped(t *testing.T) {
	e, gh := appEnv(t)
	var names []string
	for i := range 600 {
		names = append(names, fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 120)))
	}
	b := e.build(t, names...)
	if err := e.st.CancelBuild(ctx, b.ID, "test"); err != nil {
		t.Fatal(err)
	}
	e.newSender(t, withApp, func(c *forgestatus.Config) { c.Batch = 1000 })
	e.flush(t)
	r := runNamed(t, gh, "kiln")
	if n := len([]rune(r.Summary)); r.Conclusion != "cancelled" || n > 65535 || n < 60000 {
		t.Fatalf("the build's check run: %s, summary of %d characters", r.Conclusion, n)
	}
}

// -check-run-log-lines 0: the failing step is named, no log line shown.
func TestCheckRunWithoutLogLines(t *testing.T) {
	e, gh := appEnv(t)
	e.newSender(t, withApp, func(c *forgestatus.Config) { c.LogLines = -1 })
	failedJob(t, e)
	e.flush(t)
	r := runNamed(t, gh, "kiln/unit")
	if r.Title != "Failed at step 'test'" || strings.Contains(r.Summary, "line") || !strings.Contains(r.Summary, "exit code 1") {
		t.Fatalf("%q\n%s", r.Title, r.Summary)
	}
}

// An infrastructure error is a failure titled so, without Kiln's message
// (it may name agents and hosts); a pipeline file's errors are shown.
func TestCheckRunErrorAndPlanFailure(t *testing.T) {
	e, gh := appEnv(t)
	b := &store.Build{ProjectID: e.project.ID, Trigger: "push", Event: store.EventPush, Ref: "refs/heads/main", Branch: "main", Commit: sha}
	if err := e.st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := e.st.PlanBuild(ctx, b.ID, sha, []*store.Job{{Name: "test", Spec: []byte(`{}`), TimeoutSeconds: 60, MaxAttempts: 1}}); err != nil {
		t.Fatal(err)
	}
	j := e.claim(t, "test")
	if _, err := e.st.FinishJob(ctx, j.ID, j.Attempt, store.StatusError, nil, "agent a1 on host-secret: engine down", 0); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	r := runNamed(t, gh, "kiln/test")
	if r.Conclusion != "failure" || !strings.HasPrefix(r.Title, "Infrastructure error") || strings.Contains(r.Summary, "host-secret") || !strings.Contains(r.Summary, "infrastructure") {
		t.Errorf("error: %s %q\n%s", r.Conclusion, r.Title, r.Summary)
	}

	p := &store.Build{ProjectID: e.project.ID, Trigger: "push", Event: store.EventPush, Ref: "refs/heads/main", Branch: "main", Commit: sha}
	if err := e.st.CreateBuild(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := e.st.FailPlan(ctx, p.ID, store.StatusFailure, sha, []string{".kiln.yml:3:5: jobs.test.steps: required"}); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	var pipeline fakegithub.CheckRun
	for _, c := range gh.CheckRuns() {
		if c.Name == "kiln/pipeline" {
			pipeline = c
		}
	}
	if pipeline.Conclusion != "failure" || !strings.Contains(pipeline.Summary, ".kiln.yml:3:5: jobs.test.steps: required") {
		t.Errorf("plan failure: %+v", pipeline)
	}
}
