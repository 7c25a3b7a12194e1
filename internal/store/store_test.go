package store

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// testingPostgres: this run's stores are PostgreSQL (storetest).
func testingPostgres() bool { return storetest.Postgres() }

func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	path := storetest.Database(t)
	box, err := secretbox.New(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path, box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// clock lets tests move time without sleeping.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func withClock(s *Store) *clock {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.now = c.now
	return c
}

var ctx = context.Background()

func steps2([]byte) []string { return []string{"one", "two"} }

func claim(agent string, labels []string, lease time.Duration) Claim {
	return Claim{AgentID: agent, Labels: labels, Lease: lease, StepNames: steps2, AffinityWait: time.Minute, AliveWithin: time.Minute}
}

func mkProject(t *testing.T, s *Store, name string, cancelSuperseded bool) *Project {
	t.Helper()
	p := &Project{Name: name, CloneURL: "/tmp/x", DefaultBranch: "main", WebhookSecret: "s3cret-hook", CancelSuperseded: cancelSuperseded}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func mkBuild(t *testing.T, s *Store, p *Project, branch string, jobs ...*Job) *Build {
	t.Helper()
	b := &Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/" + branch, Branch: branch}
	if err := s.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if len(jobs) == 0 {
		jobs = []*Job{{Name: "test", Spec: []byte(`{}`), TimeoutSeconds: 60}}
	}
	if err := s.PlanBuild(ctx, b.ID, "abc123", jobs); err != nil {
		t.Fatal(err)
	}
	return b
}

func buildStatus(t *testing.T, s *Store, id int64) Status {
	t.Helper()
	b, err := s.Build(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return b.Status
}

func TestProjectsAndSecretsEncryptedAtRest(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	if err := s.CreateProject(ctx, &Project{Name: "web", CloneURL: "x", DefaultBranch: "main"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate project: got %v, want ErrConflict", err)
	}
	if err := s.SetSecret(ctx, p.ID, "TOKEN", "very-secret-value"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Secrets(ctx, p.ID)
	if err != nil || len(got) != 1 || got[0].Value != "very-secret-value" {
		t.Fatalf("Secrets = %+v, %v", got, err)
	}
	var raw []byte
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM secrets`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("very-secret-value")) {
		t.Fatal("secret stored in plaintext")
	}
	if err := s.db.QueryRowContext(ctx, `SELECT webhook_secret FROM projects`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("s3cret-hook")) {
		t.Fatal("webhook secret stored in plaintext")
	}
	p2, err := s.ProjectByName(ctx, "web")
	if err != nil || p2.WebhookSecret != "s3cret-hook" {
		t.Fatalf("ProjectByName = %+v, %v", p2, err)
	}
	if _, err := s.ProjectByName(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown project: %v", err)
	}
}

func TestTokens(t *testing.T) {
	s, _ := newStore(t)
	tok, plain, err := s.CreateToken(ctx, "ci", TokenAdmin)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Authenticate(ctx, plain)
	if err != nil || got.ID != tok.ID || got.Kind != TokenAdmin {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	if _, err := s.Authenticate(ctx, plain+"x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong token accepted: %v", err)
	}
	if err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoked token accepted: %v", err)
	}
}

func TestDeliveryDeduplicated(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	d := &Delivery{ID: "d-1", Forge: "github", ProjectID: p.ID, Event: "push", Result: "build"}
	dup, err := s.RecordDelivery(ctx, d, &Build{ProjectID: p.ID, Trigger: "push", Branch: "main"})
	if err != nil || dup {
		t.Fatalf("first delivery: dup=%v err=%v", dup, err)
	}
	first := *d.BuildID
	d2 := &Delivery{ID: "d-1", Forge: "github", ProjectID: p.ID, Event: "push", Result: "build"}
	dup, err = s.RecordDelivery(ctx, d2, &Build{ProjectID: p.ID, Trigger: "push", Branch: "main"})
	if err != nil || !dup || *d2.BuildID != first {
		t.Fatalf("second delivery: dup=%v err=%v build=%v", dup, err, d2.BuildID)
	}
	builds, _ := s.ListBuilds(ctx, BuildFilter{ProjectID: p.ID})
	if len(builds) != 1 {
		t.Fatalf("got %d builds, want 1", len(builds))
	}
}

func TestClaimIsExclusiveUnderConcurrency(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	const n = 20
	for i := 0; i < n; i++ {
		mkBuild(t, s, p, "main")
	}
	var mu sync.Mutex
	claimed := map[int64]int{}
	var wg sync.WaitGroup
	for a := 0; a < 8; a++ {
		wg.Add(1)
		go func(a int) {
			defer wg.Done()
			for {
				j, err := s.ClaimJob(ctx, claim("agent", nil, time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				if j == nil {
					return
				}
				mu.Lock()
				claimed[j.ID]++
				mu.Unlock()
			}
		}(a)
	}
	wg.Wait()
	if len(claimed) != n {
		t.Fatalf("claimed %d distinct jobs, want %d", len(claimed), n)
	}
	for id, c := range claimed {
		if c != 1 {
			t.Fatalf("job %d claimed %d times", id, c)
		}
	}
}

// A claimer whose candidates were taken by others after it read them
// claims the first still queued in its one transaction, rather than one
// transaction (and one wait for the write lock) per lost candidate.
func TestClaimTakesTheFirstCandidateStillQueuedInOneTransaction(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	var ids []int64
	for range 3 {
		b := mkBuild(t, s, p, "main")
		jobs, err := s.jobsOfBuild(ctx, s.db, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, jobs[0].ID)
	}
	for _, agent := range []string{"a", "b"} { // the first two, taken meanwhile
		if j, err := s.ClaimJob(ctx, claim(agent, nil, time.Minute)); err != nil || j == nil {
			t.Fatalf("claim: %+v, %v", j, err)
		}
	}
	before := s.TxStats()
	j, err := s.claimFirst(ctx, ids, claim("late", nil, time.Minute), s.nowMS())
	if err != nil || j == nil || j.ID != ids[2] || j.AgentID != "late" || j.Attempt != 1 {
		t.Fatalf("claim of %v: %+v, %v; want job %d", ids, j, err, ids[2])
	}
	if d := s.TxStats().Sub(before); d.Begun != 1 || d.RolledBack != 0 {
		t.Errorf("%d transactions, %d rolled back; want 1, none", d.Begun, d.RolledBack)
	}
	if j, err := s.claimFirst(ctx, ids, claim("later", nil, time.Minute), s.nowMS()); err != nil || j != nil {
		t.Fatalf("every candidate taken: claimed %+v, %v", j, err)
	}
}

func TestClaimMatchesLabels(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	mkBuild(t, s, p, "main", &Job{Name: "gpu", Spec: []byte(`{}`), Labels: []string{"gpu"}, TimeoutSeconds: 60})
	if j, _ := s.ClaimJob(ctx, claim("a", []string{"linux"}, time.Minute)); j != nil {
		t.Fatal("agent without the label claimed the job")
	}
	if j, _ := s.ClaimJob(ctx, claim("a", []string{"linux", "gpu"}, time.Minute)); j == nil {
		t.Fatal("agent with the label did not claim the job")
	}
}

func TestLifecycleSuccessAndStaleAttemptRefused(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")
	if st := buildStatus(t, s, b.ID); st != StatusQueued {
		t.Fatalf("build status %s, want queued", st)
	}
	j, err := s.ClaimJob(ctx, claim("a", nil, time.Minute))
	if err != nil || j == nil || j.Attempt != 1 {
		t.Fatalf("claim: %+v %v", j, err)
	}
	if st := buildStatus(t, s, b.ID); st != StatusRunning {
		t.Fatalf("build status %s, want running", st)
	}
	if err := s.UpdateStep(ctx, j.ID, 1, 0, StatusRunning, nil); err != nil {
		t.Fatal(err)
	}
	lines := []LogLine{{Seq: 1, Text: "a"}, {Seq: 2, Text: "b"}}
	for i := 0; i < 2; i++ { // the same batch twice is stored once
		if err := s.AppendLogs(ctx, j.ID, 1, lines); err != nil {
			t.Fatal(err)
		}
	}
	zero := 0
	if err := s.UpdateStep(ctx, j.ID, 1, 0, StatusSuccess, &zero); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, j.ID, 1, StatusSuccess, &zero, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, j.ID, 1, StatusFailure, &zero, "", 0); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("second finish: %v, want ErrStaleAttempt", err)
	}
	if err := s.AppendLogs(ctx, j.ID, 1, lines); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("log after finish: %v, want ErrStaleAttempt", err)
	}
	got, _ := s.Logs(ctx, j.ID, 0, 0, 0)
	if len(got) != 2 {
		t.Fatalf("got %d log lines, want 2", len(got))
	}
	full, _ := s.Build(ctx, b.ID)
	if full.Status != StatusSuccess || full.FinishedAt == nil {
		t.Fatalf("build %+v, want success and finished", full)
	}
	st := full.Jobs[0].Steps
	if len(st) != 2 || st[0].Status != StatusSuccess || st[1].Status != StatusSkipped {
		t.Fatalf("steps: %+v %+v", st[0], st[1])
	}
}

func TestErrorIsRetriedThenGivesUp(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")
	for attempt := 1; attempt <= 3; attempt++ {
		j, err := s.ClaimJob(ctx, claim("a", nil, time.Minute))
		if err != nil || j == nil {
			t.Fatalf("attempt %d: claim %v %v", attempt, j, err)
		}
		if j.Attempt != attempt {
			t.Fatalf("attempt = %d, want %d", j.Attempt, attempt)
		}
		final, err := s.FinishJob(ctx, j.ID, attempt, StatusError, nil, "engine down", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if attempt < 3 {
			if final != StatusQueued {
				t.Fatalf("after attempt %d: %s, want queued", attempt, final)
			}
			if j2, _ := s.ClaimJob(ctx, claim("a", nil, time.Minute)); j2 != nil {
				t.Fatal("claimed before the retry backoff passed")
			}
			c.advance(6 * time.Second)
		} else if final != StatusError {
			t.Fatalf("after last attempt: %s, want error", final)
		}
	}
	if st := buildStatus(t, s, b.ID); st != StatusError {
		t.Fatalf("build %s, want error", st)
	}
}

func TestFailureIsNotRetried(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")
	j, _ := s.ClaimJob(ctx, claim("a", nil, time.Minute))
	one := 1
	final, err := s.FinishJob(ctx, j.ID, j.Attempt, StatusFailure, &one, "", time.Second)
	if err != nil || final != StatusFailure {
		t.Fatalf("final %s %v", final, err)
	}
	if st := buildStatus(t, s, b.ID); st != StatusFailure {
		t.Fatalf("build %s", st)
	}
}

func TestLeaseExpiryRetriesAndFencesTheOldAttempt(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	mkBuild(t, s, p, "main")
	j, _ := s.ClaimJob(ctx, claim("dead-agent", nil, 10*time.Second))
	c.advance(5 * time.Second)
	if _, err := s.Heartbeat(ctx, j.ID, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.advance(11 * time.Second)
	expired, err := s.ExpireLeases(ctx, 0, func(ExpiredLease) string { return "agent lost" })
	if err != nil || len(expired) != 1 {
		t.Fatalf("expired %v %v", expired, err)
	}
	j2, _ := s.ClaimJob(ctx, claim("live-agent", nil, 10*time.Second))
	if j2 == nil || j2.ID != j.ID || j2.Attempt != 2 {
		t.Fatalf("retry claim: %+v", j2)
	}
	if _, err := s.Heartbeat(ctx, j.ID, 1, time.Minute); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("old attempt heartbeat: %v, want ErrStaleAttempt", err)
	}
	zero := 0
	if _, err := s.FinishJob(ctx, j.ID, 1, StatusSuccess, &zero, "", 0); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("old attempt finish: %v, want ErrStaleAttempt", err)
	}
}

func TestReleaseAgent(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	mkBuild(t, s, p, "main")
	j, _ := s.ClaimJob(ctx, claim("a1", nil, time.Hour))
	rel, err := s.ReleaseAgent(ctx, "a1", 0)
	if err != nil || len(rel) != 1 || rel[0].JobID != j.ID {
		t.Fatalf("release %v %v", rel, err)
	}
	got, _ := s.Job(ctx, j.ID)
	if got.Status != StatusQueued {
		t.Fatalf("job %s, want queued for retry", got.Status)
	}
}

func TestCancelBuild(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main",
		&Job{Name: "a", Spec: []byte(`{}`), TimeoutSeconds: 60},
		&Job{Name: "b", Spec: []byte(`{}`), TimeoutSeconds: 60})
	j, _ := s.ClaimJob(ctx, claim("agent", nil, time.Minute))
	if err := s.CancelBuild(ctx, b.ID, "canceled by test"); err != nil {
		t.Fatal(err)
	}
	if st := buildStatus(t, s, b.ID); st != StatusRunning {
		t.Fatalf("build %s, want running until the agent stops", st)
	}
	cancel, err := s.Heartbeat(ctx, j.ID, j.Attempt, time.Minute)
	if err != nil || !cancel {
		t.Fatalf("heartbeat cancel=%v err=%v", cancel, err)
	}
	if _, err := s.FinishJob(ctx, j.ID, j.Attempt, StatusCanceled, nil, "canceled", 0); err != nil {
		t.Fatal(err)
	}
	if st := buildStatus(t, s, b.ID); st != StatusCanceled {
		t.Fatalf("build %s, want canceled", st)
	}
	// An unplanned build is canceled at once.
	b2 := &Build{ProjectID: p.ID, Trigger: "api"}
	_ = s.CreateBuild(ctx, b2)
	if err := s.CancelBuild(ctx, b2.ID, "x"); err != nil {
		t.Fatal(err)
	}
	if st := buildStatus(t, s, b2.ID); st != StatusCanceled {
		t.Fatalf("unplanned build %s, want canceled", st)
	}
	if got, _ := s.ClaimPlan(ctx, time.Minute); got != nil {
		t.Fatal("canceled build offered for planning")
	}
}

func TestSupersededBuildsCanceled(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "web", true)
	old := mkBuild(t, s, p, "feature")
	other := mkBuild(t, s, p, "main")
	mkBuild(t, s, p, "feature")
	if st := buildStatus(t, s, old.ID); st != StatusCanceled {
		t.Fatalf("old build on same branch: %s, want canceled", st)
	}
	if st := buildStatus(t, s, other.ID); st != StatusQueued {
		t.Fatalf("build on another branch: %s, want queued", st)
	}
}

func TestPlanningLeaseAndFailure(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	b := &Build{ProjectID: p.ID, Trigger: "api", Branch: "main"}
	_ = s.CreateBuild(ctx, b)
	got, err := s.ClaimPlan(ctx, time.Minute)
	if err != nil || got == nil || got.ID != b.ID {
		t.Fatalf("ClaimPlan %+v %v", got, err)
	}
	if again, _ := s.ClaimPlan(ctx, time.Minute); again != nil {
		t.Fatal("a leased plan was claimed twice")
	}
	c.advance(2 * time.Minute)
	if again, _ := s.ClaimPlan(ctx, time.Minute); again == nil || again.PlanAttempts != 2 {
		t.Fatalf("expired plan lease not reclaimed: %+v", again)
	}
	if err := s.FailPlan(ctx, b.ID, StatusFailure, "abc", []string{".kiln.yml:3:5: jobs.x.steps: required"}); err != nil {
		t.Fatal(err)
	}
	full, _ := s.Build(ctx, b.ID)
	if full.Status != StatusFailure || len(full.Jobs) != 1 || full.Jobs[0].Name != "pipeline" {
		t.Fatalf("failed plan: %+v", full)
	}
	lines, _ := s.Logs(ctx, full.Jobs[0].ID, 0, 0, 0)
	if len(lines) != 1 || lines[0].Text != ".kiln.yml:3:5: jobs.x.steps: required" {
		t.Fatalf("plan failure log: %+v", lines)
	}
}

func TestClaimPlanSkipsBusyProjects(t *testing.T) {
	s, _ := newStore(t)
	stuck := mkProject(t, s, "stuck", false)
	other := mkProject(t, s, "other", false)
	unplanned := func(p *Project) *Build {
		b := &Build{ProjectID: p.ID, Trigger: "api", Branch: "main"}
		if err := s.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	stuck2 := unplanned(stuck)
	unplanned(stuck)
	ob := unplanned(other)
	// The planner holds stuck's first build; the next it may take is the
	// other project's, although stuck's second build is older.
	if got, err := s.ClaimPlan(ctx, time.Minute); err != nil || got.ID != stuck2.ID {
		t.Fatalf("ClaimPlan = %+v, %v", got, err)
	}
	got, err := s.ClaimPlan(ctx, time.Minute, stuck.ID)
	if err != nil || got == nil || got.ID != ob.ID {
		t.Fatalf("ClaimPlan skipping %d = %+v, %v; want build %d", stuck.ID, got, err, ob.ID)
	}
	if got, err := s.ClaimPlan(ctx, time.Minute, stuck.ID, other.ID); err != nil || got != nil {
		t.Fatalf("ClaimPlan skipping both = %+v, %v", got, err)
	}

	// PlanWanted: until canceled, or gone with its project.
	if ok, err := s.PlanWanted(ctx, ob.ID); !ok || err != nil {
		t.Fatalf("PlanWanted(queued) = %v, %v", ok, err)
	}
	if ok, err := s.RenewPlan(ctx, ob.ID, time.Minute); !ok || err != nil {
		t.Fatalf("RenewPlan(queued) = %v, %v", ok, err)
	}
	if err := s.CancelBuild(ctx, ob.ID, "x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.PlanWanted(ctx, ob.ID); ok || err != nil {
		t.Fatalf("PlanWanted(canceled) = %v, %v", ok, err)
	}
	if ok, err := s.RenewPlan(ctx, ob.ID, time.Minute); ok || err != nil {
		t.Fatalf("RenewPlan(canceled) = %v, %v", ok, err)
	}
	if err := s.DeleteProject(ctx, stuck.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.PlanWanted(ctx, stuck2.ID); ok || err != nil {
		t.Fatalf("PlanWanted(project removed) = %v, %v", ok, err)
	}
}

func TestRenewPlanKeepsTheLease(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	b := &Build{ProjectID: p.ID, Trigger: "api", Branch: "main"}
	_ = s.CreateBuild(ctx, b)
	if got, _ := s.ClaimPlan(ctx, time.Minute); got == nil {
		t.Fatal("nothing to plan")
	}
	for range 3 { // a planner that works for 3 minutes, renewing
		c.advance(40 * time.Second)
		if ok, err := s.RenewPlan(ctx, b.ID, time.Minute); !ok || err != nil {
			t.Fatalf("RenewPlan = %v, %v", ok, err)
		}
		if again, _ := s.ClaimPlan(ctx, time.Minute); again != nil {
			t.Fatal("a renewed plan lease was claimed again")
		}
	}
	c.advance(61 * time.Second) // the planner died
	if again, _ := s.ClaimPlan(ctx, time.Minute); again == nil {
		t.Fatal("an expired plan lease was not reclaimed")
	}
}

func TestSurvivesReopen(t *testing.T) {
	s, path := newStore(t)
	p := mkProject(t, s, "web", false)
	b := mkBuild(t, s, p, "main")
	s.Close()
	box, _ := secretbox.New(bytes.Repeat([]byte{1}, 32))
	s2, err := Open(ctx, path, box)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	j, err := s2.ClaimJob(ctx, claim("a", nil, time.Minute))
	if err != nil || j == nil || j.BuildID != b.ID {
		t.Fatalf("after reopen: %+v %v", j, err)
	}
}

func TestStickyAffinityIsBounded(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	p := mkProject(t, s, "web", false)
	for _, id := range []string{"holder", "other"} {
		if err := s.UpsertAgent(ctx, &Agent{ID: id, Name: id, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetWarm(ctx, "holder", []string{"web", "unknown-project"}); err != nil {
		t.Fatal(err)
	}
	mkBuild(t, s, p, "main", &Job{Name: "sticky", Spec: []byte(`{}`), Sticky: true, TimeoutSeconds: 60})
	if j, _ := s.ClaimJob(ctx, claim("other", nil, time.Minute)); j != nil {
		t.Fatal("a non-holder took a sticky job while a live holder exists")
	}
	c.advance(61 * time.Second) // past the affinity wait (and the holder is no longer seen as alive)
	if j, _ := s.ClaimJob(ctx, claim("other", nil, time.Minute)); j == nil {
		t.Fatal("the affinity wait is not bounded")
	}
	// A holder takes a sticky job at once.
	mkBuild(t, s, p, "main", &Job{Name: "sticky2", Spec: []byte(`{}`), Sticky: true, TimeoutSeconds: 60})
	_ = s.TouchAgent(ctx, "holder")
	if j, _ := s.ClaimJob(ctx, claim("holder", nil, time.Minute)); j == nil {
		t.Fatal("the holder could not take its project's sticky job")
	}
	// A job without sticky caches goes to anyone.
	mkBuild(t, s, p, "main", &Job{Name: "plain", Spec: []byte(`{}`), TimeoutSeconds: 60})
	if j, _ := s.ClaimJob(ctx, claim("other", nil, time.Minute)); j == nil {
		t.Fatal("a plain job was held back")
	}
}

// A log line may hold any bytes a job printed; PostgreSQL's text holds
// neither NUL nor invalid UTF-8, so there they come back as U+FFFD, and
// on SQLite as they went in. Either way the line is kept, not refused.
func TestLogLineWithAnyBytes(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "bytes", false)
	b := mkJobs(t, s, p, 1)
	j := mustClaim(t, s, "a")
	if j == nil || j.BuildID != b.ID {
		t.Fatalf("claimed %+v", j)
	}
	text := "nul\x00 and \xff\xfe invalid"
	if err := s.AppendLogs(ctx, j.ID, j.Attempt, []LogLine{{Seq: 1, Step: 0, Time: time.Now(), Text: text}}); err != nil {
		t.Fatal(err)
	}
	lines, err := s.Logs(ctx, j.ID, j.Attempt, 0, 10)
	if err != nil || len(lines) != 1 {
		t.Fatalf("lines %+v, %v", lines, err)
	}
	want := text
	if testingPostgres() {
		want = "nul\uFFFD and \uFFFD invalid"
	}
	if lines[0].Text != want {
		t.Fatalf("text %q, want %q", lines[0].Text, want)
	}
}

// OnForgeStatus's hint comes after a transaction that wrote the outbox
// commits, and not for one that wrote nothing there.
func TestForgeStatusHint(t *testing.T) {
	s, _ := newStore(t)
	var hints atomic.Int32
	s.OnForgeStatus(func() { hints.Add(1) })
	p := mkProject(t, s, "hinted", false)
	mkJobs(t, s, p, 1) // no forge connection: no outbox rows
	if n := hints.Load(); n != 0 {
		t.Fatalf("%d hints without a forge connection", n)
	}
	if err := s.SetProjectForge(ctx, p.ID, &ForgeConnection{Forge: ForgeGitHub, Repo: "acme/web", APIURL: "https://api.github.com", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	mkJobs(t, s, p, 1)
	if n := hints.Load(); n == 0 {
		t.Fatal("no hint after a build's statuses were written")
	}
}
