package store

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// mkJobs makes n queued jobs in one build of p (one transaction).
func mkJobs(t testing.TB, s *Store, p *Project, n int) *Build {
	t.Helper()
	b := &Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := s.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = &Job{Name: fmt.Sprintf("j%d", i), Spec: []byte(`{}`), TimeoutSeconds: 60}
	}
	if err := s.PlanBuild(ctx, b.ID, "abc123", jobs); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustClaim(t testing.TB, s *Store, agent string) *Job {
	t.Helper()
	j, err := s.ClaimJob(ctx, claim(agent, nil, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// fewestRunning is the first rule of the scheduler's fair share
// (scheduler.FairShare, which this package cannot import): fewest running
// jobs for the weight first, then the oldest queued job.
func fewestRunning(loads []ProjectLoad) {
	slices.SortFunc(loads, func(a, b ProjectLoad) int {
		if c := cmp.Compare(a.Running*b.Weight, b.Running*a.Weight); c != 0 {
			return c
		}
		return cmp.Compare(a.Oldest, b.Oldest)
	})
}

func claimOrdered(t testing.TB, s *Store, agent string, order func([]ProjectLoad)) *Job {
	t.Helper()
	c := claim(agent, nil, time.Minute)
	c.Order = order
	j, err := s.ClaimJob(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// The claim hands the policy (Claim.Order) each project with claimable
// jobs, its running jobs, weight and oldest job, and tries the projects in
// the order the policy leaves them. Without a policy, it is first in,
// first out: the small project's one job waits behind the big one's.
func TestClaimOrderAcrossProjects(t *testing.T) {
	s, _ := newStore(t)
	a, b := mkProject(t, s, "big", false), mkProject(t, s, "small", false)
	if err := s.SetScheduling(ctx, b.ID, Scheduling{Weight: 3}); err != nil {
		t.Fatal(err)
	}
	big := mkJobs(t, s, a, 3000)
	small := mkJobs(t, s, b, 1)
	if j := mustClaim(t, s, "fifo"); j == nil || j.BuildID != big.ID {
		t.Fatalf("no policy: claimed %+v; want the big project's oldest job", j)
	}
	var seen []ProjectLoad
	j := claimOrdered(t, s, "fair", func(loads []ProjectLoad) {
		seen = slices.Clone(loads)
		fewestRunning(loads)
	})
	if j == nil || j.BuildID != small.ID {
		t.Fatalf("fewest running first: claimed %+v; want the small project's job", j)
	}
	slices.SortFunc(seen, func(x, y ProjectLoad) int { return cmp.Compare(x.ProjectID, y.ProjectID) })
	if len(seen) != 2 || seen[0].ProjectID != a.ID || seen[0].Running != 1 || seen[0].Weight != 1 || !seen[0].Claimed ||
		seen[1].ProjectID != b.ID || seen[1].Running != 0 || seen[1].Weight != 3 || seen[1].Claimed || seen[1].Idle != 0 || seen[1].Oldest <= seen[0].Oldest {
		t.Fatalf("loads given to the policy: %+v", seen)
	}
	// The trigger gave every job its project, whatever inserted it.
	var missing int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE project_id = 0`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("jobs without a project: %d, %v", missing, err)
	}
	// The small project has nothing queued now: the next claims go to the big one.
	if j := claimOrdered(t, s, "fair2", fewestRunning); j == nil || j.BuildID != big.ID {
		t.Fatalf("claimed %+v; want the big project's next job", j)
	}
}

// A project's cap on running jobs holds under concurrent claims: with a
// cap of 2, only 2 of its 5 queued jobs run at once, however many agents
// claim at the same moment; when one ends, the next runs. The server's
// default cap applies to a project without one of its own; a project's
// own 0 lifts it.
func TestProjectCapLimitsRunning(t *testing.T) {
	s, _ := newStore(t)
	p := mkProject(t, s, "capped", false)
	two := 2
	if err := s.SetScheduling(ctx, p.ID, Scheduling{MaxRunning: &two}); err != nil {
		t.Fatal(err)
	}
	if sc, err := s.Schedulings(ctx); err != nil || sc[p.ID].MaxRunning == nil || *sc[p.ID].MaxRunning != 2 || sc[p.ID].Weight != 1 {
		t.Fatalf("Schedulings = %+v, %v", sc, err)
	}
	mkJobs(t, s, p, 5)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []*Job
	for i := range 8 {
		wg.Go(func() {
			j, err := s.ClaimJob(ctx, claim(fmt.Sprintf("agent-%d", i), nil, time.Minute))
			if err != nil {
				t.Error(err)
			}
			if j != nil {
				mu.Lock()
				won = append(won, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 2 {
		t.Fatalf("8 concurrent claims won %d jobs; the cap is 2", len(won))
	}
	if j := mustClaim(t, s, "late"); j != nil {
		t.Fatalf("a third job (%d) ran past the cap", j.ID)
	}
	// A claimer that read the queue before the cap filled (the race the
	// concurrent claims above may or may not hit) is refused by the
	// claim's UPDATE itself.
	var queued int64
	if err := s.db.QueryRowContext(ctx, `SELECT id FROM jobs WHERE project_id = ? AND status = 'queued' ORDER BY id LIMIT 1`, p.ID).Scan(&queued); err != nil {
		t.Fatal(err)
	}
	if j, err := s.claimFirst(ctx, []int64{queued}, claim("racer", nil, time.Minute), s.nowMS()); err != nil || j != nil {
		t.Fatalf("claim of job %d past the cap: %+v, %v", queued, j, err)
	}
	if _, err := s.FinishJob(ctx, won[0].ID, won[0].Attempt, StatusSuccess, nil, "", 0); err != nil {
		t.Fatal(err)
	}
	if j := mustClaim(t, s, "late"); j == nil {
		t.Fatal("a job ended, but the next is not claimed")
	}
	// Back to the default, here a server cap of 2: still full.
	if err := s.SetScheduling(ctx, p.ID, Scheduling{}); err != nil {
		t.Fatal(err)
	}
	if sc, _ := s.Schedulings(ctx); len(sc) != 0 {
		t.Fatalf("defaults kept a row: %+v", sc)
	}
	c := claim("late2", nil, time.Minute)
	c.DefaultMaxRunning = 2
	if j, err := s.ClaimJob(ctx, c); err != nil || j != nil {
		t.Fatalf("server cap 2 with 2 running: claimed %+v, %v", j, err)
	}
	// The project's own 0: no cap, whatever the server's default.
	zero := 0
	if err := s.SetScheduling(ctx, p.ID, Scheduling{MaxRunning: &zero}); err != nil {
		t.Fatal(err)
	}
	if j, err := s.ClaimJob(ctx, c); err != nil || j == nil {
		t.Fatalf("own cap 0 over a server cap of 2: claimed %+v, %v", j, err)
	}
}

// claimFIFO is the claim as it was before fair scheduling: the oldest 200
// queued jobs of all projects, oldest first. The benchmark's baseline.
func (s *Store) claimFIFO(c Claim) (*Job, error) {
	now := s.nowMS()
	rows, err := s.db.QueryContext(ctx, `SELECT j.id, j.labels FROM jobs j JOIN builds b ON b.id = j.build_id
		WHERE j.status = 'queued' AND j.cancel_requested = 0 AND (j.not_before IS NULL OR j.not_before <= ?)
		AND (j.pool = '' OR `+poolHasRoom("j")+`) ORDER BY j.id LIMIT 200`, now)
	if err != nil {
		return nil, err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		var labels string
		if err := rows.Scan(&id, &labels); err != nil {
			rows.Close()
			return nil, err
		}
		var need []string
		_ = json.Unmarshal([]byte(labels), &need)
		if hasAll(c.Labels, need) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	return s.claimFirst(ctx, ids, c, now)
}

// BenchmarkClaim10000: claims with 10,000 jobs queued across 11 projects
// (9,000 in one, 100 in each of ten others), fair share against the FIFO
// claim as it was (claimFIFO), in the same run. Each claimed job is put
// back in the queue (untimed), so every claim sees the same queue.
//
//	go test -run '^$' -bench BenchmarkClaim10000 -benchtime 2000x ./internal/store/
func BenchmarkClaim10000(b *testing.B) {
	s, _ := newStore(b)
	for i := range 11 {
		p := &Project{Name: fmt.Sprintf("p%d", i), CloneURL: "/tmp/x", DefaultBranch: "main"}
		if err := s.CreateProject(ctx, p); err != nil {
			b.Fatal(err)
		}
		n := 100
		if i == 0 {
			n = 9000
		}
		mkJobs(b, s, p, n)
	}
	perOp := map[string]time.Duration{}
	run := func(name string, claimFn func(Claim) (*Job, error)) {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				j, err := claimFn(claim("agent", nil, time.Minute))
				if err != nil || j == nil {
					b.Fatalf("claim: %v, %v", j, err)
				}
				b.StopTimer()
				if _, err := s.db.ExecContext(ctx, `UPDATE jobs SET status = 'queued', agent_id = '', lease_expires = NULL WHERE id = ?`, j.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			perOp[name] = b.Elapsed() / time.Duration(b.N)
		})
	}
	run("fifo", s.claimFIFO)
	run("fair", func(c Claim) (*Job, error) {
		c.Order = fewestRunning
		return s.ClaimJob(ctx, c)
	})
	if perOp["fifo"] > 0 && perOp["fair"] > 0 {
		fmt.Printf("claim with 10,000 jobs queued across 11 projects: fair %v/op, fifo %v/op, ratio fair/fifo %.2f\n",
			perOp["fair"], perOp["fifo"], float64(perOp["fair"])/float64(perOp["fifo"]))
	}
}

// A database made before fair scheduling gets its jobs' projects filled in
// by the migration, so its queued jobs are claimable by project at once.
func TestFairMigrationBackfillsProjects(t *testing.T) {
	all := migrations
	defer func() { migrations = all }()
	mine := slices.IndexFunc(all, func(m string) bool { return strings.Contains(m, "CREATE TABLE project_scheduling") })
	if mine < 0 {
		t.Fatal("no fair scheduling migration")
	}
	migrations = all[:mine]
	if testingPostgres() {
		t.Skip("PostgreSQL's schema starts after this migration")
	}
	s, path := newStore(t)
	// The project and jobs as the code of that schema wrote them (jobs
	// without a project).
	p := &Project{Name: "old"}
	if err := s.db.QueryRowContext(ctx, `INSERT INTO projects (name, clone_url, default_branch, created_at) VALUES ('old', '/tmp/x', 'main', 0) RETURNING id`).Scan(&p.ID); err != nil {
		t.Fatal(err)
	}
	b := &Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := s.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO jobs (build_id, name, status, spec, labels, timeout_seconds, max_attempts, queued_at) VALUES (?, ?, 'queued', '{}', '[]', 60, 3, ?)`,
			b.ID, fmt.Sprintf("j%d", i), s.nowMS()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE builds SET planned = 1, commit_sha = 'abc123' WHERE id = ?`, b.ID); err != nil {
		t.Fatal(err)
	}
	s.Close()

	migrations = all
	box, err := secretbox.New(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path, box)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE project_id = ? AND build_id = ?`, p.ID, b.ID).Scan(&n); err != nil || n != 3 {
		t.Fatalf("jobs of the project after the migration: %d, %v", n, err)
	}
	if j := claimOrdered(t, s, "a", fewestRunning); j == nil || j.BuildID != b.ID {
		t.Fatalf("claimed %+v after the migration", j)
	}
}

// BenchmarkClaimDialects: the same fair claim with 10,000 jobs queued
// across 11 projects, on SQLite and on PostgreSQL in the same run (each a
// fresh database), and the ratio. It needs a PostgreSQL server
// (KILN_TEST_POSTGRES; scripts/postgres.sh).
//
//	go test -run '^$' -bench BenchmarkClaimDialects -benchtime 2000x ./internal/store/
func BenchmarkClaimDialects(b *testing.B) {
	if !storetest.HavePostgres() {
		b.Skipf("%s is not set: no PostgreSQL server to compare with", storetest.Env)
	}
	box, err := secretbox.New(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		b.Fatal(err)
	}
	perOp := map[string]time.Duration{}
	for _, d := range []struct{ name, database string }{
		{"sqlite", filepath.Join(b.TempDir(), "kiln.db")},
		{"postgres", storetest.PostgresDatabase(b)},
	} {
		s, err := Open(ctx, d.database, box)
		if err != nil {
			b.Fatal(err)
		}
		for i := range 11 {
			p := &Project{Name: fmt.Sprintf("p%d", i), CloneURL: "/tmp/x", DefaultBranch: "main"}
			if err := s.CreateProject(ctx, p); err != nil {
				b.Fatal(err)
			}
			n := 100
			if i == 0 {
				n = 9000
			}
			mkJobs(b, s, p, n)
		}
		b.Run(d.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c := claim("agent", nil, time.Minute)
				c.Order = fewestRunning
				j, err := s.ClaimJob(ctx, c)
				if err != nil || j == nil {
					b.Fatalf("claim: %v, %v", j, err)
				}
				b.StopTimer()
				if _, err := s.db.ExecContext(ctx, `UPDATE jobs SET status = 'queued', agent_id = '', lease_expires = NULL WHERE id = ?`, j.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			perOp[d.name] = b.Elapsed() / time.Duration(b.N)
		})
		s.Close()
	}
	if perOp["sqlite"] > 0 && perOp["postgres"] > 0 {
		fmt.Printf("fair claim with 10,000 jobs queued across 11 projects: postgres %v/op, sqlite %v/op, ratio postgres/sqlite %.2f\n",
			perOp["postgres"], perOp["sqlite"], float64(perOp["postgres"])/float64(perOp["sqlite"]))
	}
}
