package store

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// copyStores opens a new SQLite store and a new PostgreSQL one with the
// same sealer; it skips the test when no PostgreSQL server is configured.
func copyStores(t *testing.T) (src, dst *Store, dstURL string, box Sealer) {
	t.Helper()
	if !storetest.HavePostgres() {
		t.Skipf("no PostgreSQL server (%s)", storetest.Env)
	}
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	src, err = Open(ctx, filepath.Join(t.TempDir(), "kiln.db"), box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	dstURL = storetest.PostgresDatabase(t)
	dst, err = Open(ctx, dstURL, box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	return src, dst, dstURL, box
}

// filled is what fillForCopy wrote, to be read back from the copy.
type filled struct {
	projects     []*Project
	builds       []int64
	job          *Job
	logText      string
	adminPlain   string
	adminToken   *Token
	agentPlain   string
	deletedID    int64 // the highest project id SQLite gave, since deleted
	workflowJob  int64
	cacheEntries int
}

// fillForCopy writes a little of everything through the store's API: the
// kinds of rows an installation holds.
func fillForCopy(t *testing.T, s *Store) filled {
	t.Helper()
	var f filled
	c := withClock(s)
	web := mkProject(t, s, "web", true)
	api := mkProject(t, s, "api", false)
	gone := mkProject(t, s, "gone", false)
	if err := s.DeleteProject(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	f.deletedID = gone.ID
	f.projects = []*Project{web, api}
	if err := s.SetSecret(ctx, web.ID, "DEPLOY_KEY", "-----BEGIN KEY-----\nsecret\n-----END KEY-----"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSecret(ctx, api.ID, "TOKEN", "t0ken"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProjectForge(ctx, web.ID, &ForgeConnection{Forge: ForgeGitHub, Repo: "acme/web", APIURL: "https://api.github.com", Token: "ghp_forge"}); err != nil {
		t.Fatal(err)
	}
	days, maxBytes := 30, int64(1<<30)
	if err := s.SetLogRetention(ctx, web.ID, LogRetention{Days: &days, MaxBytes: &maxBytes}); err != nil {
		t.Fatal(err)
	}
	maxRunning := 2
	if err := s.SetScheduling(ctx, api.ID, Scheduling{MaxRunning: &maxRunning, Weight: 3}); err != nil {
		t.Fatal(err)
	}

	// A pushed build with a delivery (and the outbox's statuses, as web
	// has a forge connection), its job claimed, run and logged.
	b := &Build{ProjectID: web.ID, Trigger: "push", Forge: "github", DeliveryID: "d-1", Ref: "refs/heads/main", Branch: "main",
		Message: "fix \xff the thing", Author: "ann", Event: EventPush}
	if dup, err := s.RecordDelivery(ctx, &Delivery{ID: "d-1", Forge: "github", ProjectID: web.ID, Event: "push", Result: "build"}, b); dup || err != nil {
		t.Fatalf("delivery: %v, %v", dup, err)
	}
	if err := s.PlanBuild(ctx, b.ID, "abc123", []*Job{{Name: "test", Spec: []byte(`{"steps":["go test"]}`), Labels: []string{"linux"}, TimeoutSeconds: 600, MaxAttempts: 2}}); err != nil {
		t.Fatal(err)
	}
	agentTok, agentPlain, err := s.CreateToken(ctx, "agent-1", TokenAgent)
	if err != nil {
		t.Fatal(err)
	}
	f.agentPlain = agentPlain
	if err := s.RegisterAgent(ctx, &Agent{ID: "agent-1", Name: "box", Labels: []string{"linux"}, Capacity: 2, Version: "1.0", Max: `{"cpus":4}`}, agentTok.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWarm(ctx, "agent-1", []string{"web"}); err != nil {
		t.Fatal(err)
	}
	j, err := s.ClaimJob(ctx, Claim{AgentID: "agent-1", Labels: []string{"linux"}, Lease: time.Minute, StepNames: steps2, AffinityWait: time.Minute, AliveWithin: time.Minute})
	if err != nil || j == nil {
		t.Fatalf("claim: %+v, %v", j, err)
	}
	f.logText = "nul\x00 and \xff\xfe invalid"
	c.advance(time.Second)
	if err := s.UpdateStep(ctx, j.ID, j.Attempt, 0, StatusRunning, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLogs(ctx, j.ID, j.Attempt, []LogLine{
		{Seq: 1, Step: 0, Time: c.now(), Text: "ok 1"},
		{Seq: 2, Step: 0, Time: c.now(), Text: f.logText},
		{Seq: 3, Step: 0, Time: c.now(), Text: "ünïcode ✓"},
	}); err != nil {
		t.Fatal(err)
	}
	// More lines than one INSERT carries (copyBatch).
	var more []LogLine
	for i := int64(4); i < 4+2*copyBatch+500; i++ {
		more = append(more, LogLine{Seq: i, Step: 1, Time: c.now(), Text: strings.Repeat("x", int(i%80))})
	}
	if err := s.AppendLogs(ctx, j.ID, j.Attempt, more); err != nil {
		t.Fatal(err)
	}
	zero := 0
	if err := s.UpdateStep(ctx, j.ID, j.Attempt, 0, StatusSuccess, &zero); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, j.ID, j.Attempt, StatusSuccess, &zero, "", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCheckRun(ctx, web.ID, "abc123", "kiln", CheckRun{BuildID: b.ID, CheckRunID: 4242}); err != nil {
		t.Fatal(err)
	}
	f.builds = append(f.builds, b.ID, mkBuild(t, s, api, "dev").ID)

	// Tokens: an admin's, a revoked one.
	if f.adminToken, f.adminPlain, err = s.CreateToken(ctx, "admin", TokenAdmin); err != nil {
		t.Fatal(err)
	}
	old, _, err := s.CreateToken(ctx, "old", TokenAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, old.ID); err != nil {
		t.Fatal(err)
	}

	// GitHub Actions: a pool and a workflow job with its runner job.
	p := mkPool(t, s, "linux", 4)
	res := record(t, s, WorkflowJobUpdate{Job: ghJob(77, GHQueued), DeliveryID: "wj-1", Action: "queued", Launch: launchOf(p)})
	if res.Created == nil {
		t.Fatalf("no runner job: %+v", res)
	}
	f.workflowJob = 77
	f.builds = append(f.builds, res.Created.BuildID)

	// Single sign-on: a user, their session and CLI code, bindings on a
	// project and on every project (project_id NULL).
	u := &User{Subject: "sub-ann", Email: "ann@example.com", Groups: []string{"ops"}}
	if err := s.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateSession(ctx, u.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateLoginCode(ctx, u.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*RoleBinding{{Project: "web", Kind: BindUser, Subject: "ann@example.com", Role: "maintainer"}, {Project: AllProjects, Kind: BindGroup, Subject: "ops", Role: "viewer"}} {
		if err := s.SetRoleBinding(ctx, b); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"go-mod", "node\x00modules"} {
		if _, err := s.DB().ExecContext(ctx, `INSERT INTO cache_entries (project, scope, cache_key, version, state, size, declared_size, created_at, finalized_at, last_used)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, "web", "refs/heads/main", key, "v1", "ready", 100+i, 100+i, 1, 2, 3); err != nil {
			t.Fatal(err)
		}
		f.cacheEntries++
	}
	job, err := s.Job(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	f.job = job
	return f
}

func countRows(t *testing.T, s *Store, table string) int64 {
	t.Helper()
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(table)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// An installation's SQLite database, copied to PostgreSQL, reads back the
// same through the store: secrets decrypt with the same key, tokens
// authenticate, builds, jobs and logs are equal (text PostgreSQL cannot
// hold aside), and new rows get ids above the copied ones.
func TestCopySQLiteToPostgres(t *testing.T) {
	src, dst, dstURL, box := copyStores(t)
	f := fillForCopy(t, src)

	var progress []string
	rep, err := Copy(ctx, src, dst, CopyOptions{Progress: func(tc TableCopy) { progress = append(progress, tc.Table) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FromVersion != len(migrations) || rep.ToVersion != len(pgMigrations) {
		t.Errorf("versions %d, %d; want %d, %d", rep.FromVersion, rep.ToVersion, len(migrations), len(pgMigrations))
	}
	seen := map[string]int{}
	var total int64
	for i, tc := range rep.Tables {
		seen[tc.Table] = i
		if want := countRows(t, src, tc.Table); tc.Rows != want {
			t.Errorf("%s: %d rows copied, SQLite has %d", tc.Table, tc.Rows, want)
		}
		total += tc.Rows
	}
	if total != rep.Rows || len(progress) != len(rep.Tables) {
		t.Errorf("total %d of %d; progress %v", rep.Rows, total, progress)
	}
	for _, table := range []string{"projects", "secrets", "builds", "jobs", "job_attempts", "steps", "log_lines", "agents", "agent_warm",
		"tokens", "deliveries", "pools", "actions_jobs", "actions_runners", "actions_repos", "actions_deliveries", "health",
		"project_log_retention", "project_forges", "forge_statuses", "project_scheduling", "check_runs", "cache_entries",
		"users", "sessions", "login_codes", "role_bindings"} {
		i, ok := seen[table]
		if !ok {
			t.Errorf("table %s not copied", table)
			continue
		}
		if rep.Tables[i].Rows == 0 {
			t.Errorf("table %s: no rows to copy: the test fills too little", table)
		}
	}
	if seen["projects"] > seen["builds"] || seen["builds"] > seen["jobs"] || seen["jobs"] > seen["log_lines"] {
		t.Errorf("copied in an order against the foreign keys: %v", progress)
	}
	// The log line, the commit message and the cache key with NUL or
	// invalid UTF-8.
	if rep.Replaced != 3 {
		t.Errorf("%d text values replaced, want 3 (%+v)", rep.Replaced, rep.Tables)
	}

	// Read back through a store opened afresh, with the same key.
	dst.Close()
	dst, err = Open(ctx, dstURL, box)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for _, p := range f.projects {
		wantP, _ := src.ProjectByName(ctx, p.Name)
		got, err := dst.ProjectByName(ctx, p.Name)
		if err != nil || !reflect.DeepEqual(got, wantP) || got.WebhookSecret != "s3cret-hook" {
			t.Errorf("project %s: %+v, %v; want %+v", p.Name, got, err, wantP)
		}
		want, _ := src.Secrets(ctx, p.ID)
		secrets, err := dst.Secrets(ctx, p.ID)
		if err != nil || !reflect.DeepEqual(secrets, want) {
			t.Errorf("secrets of %s: %+v, %v; want %+v", p.Name, secrets, err, want)
		}
	}
	fc, err := dst.ProjectForge(ctx, f.projects[0].ID)
	if err != nil || fc == nil || fc.Token != "ghp_forge" {
		t.Errorf("forge connection: %+v, %v", fc, err)
	}
	if tok, err := dst.Authenticate(ctx, f.adminPlain); err != nil || tok.ID != f.adminToken.ID || tok.Kind != TokenAdmin {
		t.Errorf("admin token: %+v, %v", tok, err)
	}
	if tok, err := dst.Authenticate(ctx, f.agentPlain); err != nil || tok.Kind != TokenAgent {
		t.Errorf("agent token: %+v, %v", tok, err)
	}
	if want, _ := src.ListRoleBindings(ctx); len(want) != 2 {
		t.Errorf("source bindings %+v", want)
	} else if got, err := dst.ListRoleBindings(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("copied bindings %+v, %v; want %+v", got, err, want)
	}
	wantTokens, _ := src.ListTokens(ctx)
	if got, err := dst.ListTokens(ctx); err != nil || len(got) != len(wantTokens) {
		t.Errorf("tokens: %d, %v; want %d (the revoked one stays revoked)", len(got), err, len(wantTokens))
	}
	for _, id := range f.builds {
		want, err := src.Build(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want.Message = pgText(want.Message)
		got, err := dst.Build(ctx, id)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("build %d:\n got %+v, %v\nwant %+v", id, got, err, want)
		}
	}
	if got, err := dst.Job(ctx, f.job.ID); err != nil || !reflect.DeepEqual(got, f.job) {
		t.Errorf("job:\n got %+v, %v\nwant %+v", got, err, f.job)
	}
	wantLogs, _ := src.Logs(ctx, f.job.ID, f.job.Attempt, 0, 10*copyBatch)
	for i := range wantLogs {
		wantLogs[i].Text = pgText(wantLogs[i].Text)
	}
	if got, err := dst.Logs(ctx, f.job.ID, f.job.Attempt, 0, 10*copyBatch); err != nil || len(got) != 3+2*copyBatch+500 || !reflect.DeepEqual(got, wantLogs) {
		t.Errorf("logs: %d lines, %v; want %d equal", len(got), err, len(wantLogs))
	} else if got[1].Text != "nul\uFFFD and \uFFFD invalid" {
		t.Errorf("log line %q", got[1].Text)
	}
	wantAgents, _ := src.ListAgents(ctx)
	if got, err := dst.ListAgents(ctx); err != nil || !reflect.DeepEqual(got, wantAgents) {
		t.Errorf("agents: %+v, %v; want %+v", got, err, wantAgents)
	}
	wantPools, _ := src.ListPools(ctx)
	if got, err := dst.ListPools(ctx); err != nil || !reflect.DeepEqual(got, wantPools) {
		t.Errorf("pools: %+v, %v; want %+v", got, err, wantPools)
	}
	wantWJ, _ := src.WorkflowJob(ctx, f.workflowJob)
	if got, err := dst.WorkflowJob(ctx, f.workflowJob); err != nil || !reflect.DeepEqual(got, wantWJ) {
		t.Errorf("workflow job: %+v, %v; want %+v", got, err, wantWJ)
	}
	if cr, err := dst.CheckRun(ctx, f.projects[0].ID, "abc123", "kiln"); err != nil || cr == nil || cr.CheckRunID != 4242 {
		t.Errorf("check run: %+v, %v", cr, err)
	}
	wantStatuses, _ := src.ForgeStatuses(ctx, f.builds[0])
	if got, err := dst.ForgeStatuses(ctx, f.builds[0]); err != nil || len(got) == 0 || !reflect.DeepEqual(got, wantStatuses) {
		t.Errorf("forge statuses: %+v, %v; want %+v", got, err, wantStatuses)
	}
	var keys []string
	rows, err := dst.DB().QueryContext(ctx, `SELECT cache_key FROM cache_entries ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	if !reflect.DeepEqual(keys, []string{"go-mod", "node\uFFFDmodules"}) {
		t.Errorf("cache keys %q", keys)
	}

	// New rows get ids above the copied ones: above the deleted project's
	// too (SQLite's AUTOINCREMENT never gave it again).
	p := &Project{Name: "new", CloneURL: "/tmp/new", DefaultBranch: "main"}
	if err := dst.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.ID <= f.deletedID {
		t.Errorf("new project id %d, not above %d", p.ID, f.deletedID)
	}
	b := &Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := dst.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := dst.PlanBuild(ctx, b.ID, "def", []*Job{{Name: "x", Spec: []byte(`{}`), TimeoutSeconds: 60}}); err != nil {
		t.Fatal(err)
	}
	nb, err := dst.Build(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range f.builds {
		if b.ID <= id {
			t.Errorf("new build id %d, not above %d", b.ID, id)
		}
	}
	if len(nb.Jobs) != 1 || nb.Jobs[0].ID <= f.job.ID {
		t.Errorf("new job %+v, not above %d", nb.Jobs, f.job.ID)
	}
	tok, _, err := dst.CreateToken(ctx, "later", TokenAdmin)
	if err != nil || tok.ID <= f.adminToken.ID {
		t.Errorf("new token %+v, %v", tok, err)
	}
}

// A target with rows is refused, naming them; force empties it first.
func TestCopyRefusesNonEmptyTarget(t *testing.T) {
	src, dst, _, _ := copyStores(t)
	fillForCopy(t, src)
	mkProject(t, dst, "already-here", false)
	_, err := Copy(ctx, src, dst, CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "projects") {
		t.Fatalf("copy into a database with a project: %v", err)
	}
	if _, err := dst.ProjectByName(ctx, "already-here"); err != nil {
		t.Fatalf("the refused copy changed the target: %v", err)
	}
	if _, err := Copy(ctx, src, dst, CopyOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	rep, err := Copy(ctx, src, dst, CopyOptions{Force: true}) // again: the copy's own rows emptied
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(rep.Truncated, " "), "builds") {
		t.Errorf("truncated %v", rep.Truncated)
	}
	if _, err := dst.ProjectByName(ctx, "already-here"); err == nil {
		t.Error("force kept the target's own project")
	}
	for _, tc := range rep.Tables {
		if got := countRows(t, dst, tc.Table); got != tc.Rows {
			t.Errorf("%s: %d rows after a forced copy, want %d", tc.Table, got, tc.Rows)
		}
	}
}

// Schemas that differ — a table or a column in one database only — are
// an error naming it, not a table left behind.
func TestCopySchemasMustMatch(t *testing.T) {
	src, dst, _, _ := copyStores(t)
	mkProject(t, src, "web", false)
	if _, err := dst.db.ExecContext(ctx, `CREATE TABLE later_table (id BIGINT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, src, dst, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "only PostgreSQL has later_table") {
		t.Fatalf("extra table: %v", err)
	}
	if _, err := dst.db.ExecContext(ctx, `DROP TABLE later_table`); err != nil {
		t.Fatal(err)
	}
	if _, err := src.db.ExecContext(ctx, `ALTER TABLE pools ADD COLUMN later_column TEXT`); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, src, dst, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "columns of pools") || !strings.Contains(err.Error(), "only SQLite has later_column") {
		t.Fatalf("extra column: %v", err)
	}
	if n := countRows(t, dst, "projects"); n != 0 {
		t.Fatalf("a refused copy wrote %d projects", n)
	}
}

// A value PostgreSQL's column cannot take fails the copy, naming the
// column, and leaves the target as it was (one transaction).
func TestCopyFailureLeavesTargetEmpty(t *testing.T) {
	src, dst, _, _ := copyStores(t)
	fillForCopy(t, src)
	// SQLite keeps a string in an INTEGER column as it was given.
	if _, err := src.db.ExecContext(ctx, `UPDATE pools SET pids = 'many'`); err != nil {
		t.Fatal(err)
	}
	_, err := Copy(ctx, src, dst, CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "pools.pids") {
		t.Fatalf("copy of a string in an integer column: %v", err)
	}
	for _, table := range []string{"projects", "builds", "jobs", "log_lines", "tokens"} {
		if n := countRows(t, dst, table); n != 0 {
			t.Errorf("the failed copy left %d rows in %s", n, table)
		}
	}
}

// Copy goes from SQLite to PostgreSQL only.
func TestCopyDirection(t *testing.T) {
	src, dst, _, _ := copyStores(t)
	if _, err := Copy(ctx, dst, src, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "from a SQLite store to a PostgreSQL one") {
		t.Fatalf("PostgreSQL to SQLite: %v", err)
	}
}

// SQLiteInUse sees another connection holding the file: a server's.
func TestSQLiteInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	s, err := OpenSQLite(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if inUse, err := SQLiteInUse(path); err != nil || !inUse {
		t.Fatalf("while a store has it open: %v, %v", inUse, err)
	}
	s.Close()
	if inUse, err := SQLiteInUse(path); err != nil || inUse {
		t.Fatalf("once closed: %v, %v", inUse, err)
	}
	// The check leaves the database usable.
	s, err = OpenSQLite(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}
