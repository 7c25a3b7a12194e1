// Package seed fills a store with many finished builds for the
// benchmarks that measure what reads them (insightsbench, dashbench):
// a mix of results (about 85% success, 8% failure, 3% error, 2%
// canceled, 2% timed out), three jobs each (build, test, lint) with queue
// and run times and cache restores, and a retry of the same commit for a
// fifth of the failures (flaky jobs). The rows go in by multi-row
// INSERTs through the store's handle, then ANALYZE.
package seed

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// Plan is what a store is seeded with: Builds builds of Projects
// projects (p00, p01, …), finished over the Spread days before Now.
type Plan struct {
	Builds, Projects, Spread int
	Now                      time.Time
}

// Into seeds s (an empty store, or one whose rows' ids stay below the
// seeded ones: the builds and jobs are numbered from 1) and returns the
// projects' ids.
func (p Plan) Into(ctx context.Context, s *store.Store) ([]int64, error) {
	var ids []int64
	for i := range p.Projects {
		pr := &store.Project{Name: fmt.Sprintf("p%02d", i), CloneURL: "/dev/null", DefaultBranch: "main"}
		if err := s.CreateProject(ctx, pr); err != nil {
			return nil, err
		}
		ids = append(ids, pr.ID)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	db := s.DB()
	builds := newBatch(db, `INSERT INTO builds (id, project_id, number, status, trigger, ref, branch, commit_sha, planned, created_at, started_at, finished_at) VALUES `, 12)
	jobs := newBatch(db, `INSERT INTO jobs (id, build_id, project_id, name, status, spec, timeout_seconds, attempt, max_attempts, queued_at, first_started_at,
		started_at, finished_at, cache_restores, cache_hits, cache_bytes_restored) VALUES `, 16)
	jobs.parent = builds
	numbers := make([]int64, p.Projects)
	spreadMS := int64(p.Spread) * 24 * int64(time.Hour/time.Millisecond)
	end := p.Now.UnixMilli()
	var buildID, jobID int64
	// A compiled job's spec as a small pipeline's are (about 2 KiB: its
	// image, steps, environment, caches), stored in each job's row.
	spec := []byte(`{"image":"localhost/kiln/golang:1.24","steps":[` + strings.Repeat(`{"name":"step","run":"go test ./... -run TestSomething -count=1 -timeout 10m"},`, 24) + `{"name":"last","run":"true"}]}`)
	addBuild := func(project int, commit string, created int64, status store.Status) error {
		buildID++
		numbers[project]++
		queue := int64(200 + rng.IntN(30_000))
		var finish int64
		jobStatus := func(name string) store.Status {
			switch {
			case status == store.StatusSuccess, status == store.StatusCanceled:
				return status
			case name == "test":
				return status // the build's result is its test job's
			}
			return store.StatusSuccess
		}
		var rows [][]any
		for _, name := range []string{"build", "test", "lint"} {
			jobID++
			started := created + queue + int64(rng.IntN(2000))
			ran := int64(5_000 + rng.IntN(600_000))
			if name == "lint" {
				ran /= 10
			}
			finished := started + ran
			finish = max(finish, finished)
			restores := 1 + rng.IntN(2)
			hits := rng.IntN(restores + 1)
			rows = append(rows, []any{jobID, buildID, ids[project], name, string(jobStatus(name)), spec, 3600, 1, 3, created, started,
				started, finished, restores, hits, int64(hits) * int64(1+rng.IntN(200<<20))})
		}
		// The build first: a batch of jobs flushes the builds' first.
		if err := builds.add(ctx, buildID, ids[project], numbers[project], string(status), "push", "refs/heads/main", "main", commit, 1, created, created+queue, finish); err != nil {
			return err
		}
		for _, r := range rows {
			if err := jobs.add(ctx, r...); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range p.Builds {
		project := rng.IntN(p.Projects)
		created := end - spreadMS + int64(i)*spreadMS/int64(p.Builds) - 700_000
		commit := fmt.Sprintf("%040x", i)
		var status store.Status
		switch x := rng.IntN(100); {
		case x < 85:
			status = store.StatusSuccess
		case x < 93:
			status = store.StatusFailure
		case x < 96:
			status = store.StatusError
		case x < 98:
			status = store.StatusCanceled
		default:
			status = store.StatusTimedOut
		}
		if err := addBuild(project, commit, created, status); err != nil {
			return nil, err
		}
		if status == store.StatusFailure && rng.IntN(5) == 0 {
			// A retry of the same commit (one more build).
			retry := store.StatusSuccess
			if rng.IntN(4) == 0 {
				retry = store.StatusFailure
			}
			if err := addBuild(project, commit, created+1000, retry); err != nil {
				return nil, err
			}
		}
	}
	if err := builds.flush(ctx); err != nil {
		return nil, err
	}
	if err := jobs.flush(ctx); err != nil {
		return nil, err
	}
	// A database that has run a while has its statistics (and on
	// PostgreSQL, its visibility map: index-only scans).
	analyze := `ANALYZE`
	if s.Dialect() == "postgres" {
		analyze = `VACUUM ANALYZE`
	}
	if _, err := db.ExecContext(ctx, analyze); err != nil {
		return nil, err
	}
	return ids, nil
}

// batch is a multi-row INSERT, sent every 500 rows.
type batch struct {
	db     *store.DBHandle
	prefix string
	cols   int
	args   []any
	// parent is flushed first (the rows this batch's refer to).
	parent *batch
}

func newBatch(db *store.DBHandle, prefix string, cols int) *batch {
	return &batch{db: db, prefix: prefix, cols: cols}
}

func (b *batch) add(ctx context.Context, vals ...any) error {
	if len(vals) != b.cols {
		return fmt.Errorf("%d values for %d columns", len(vals), b.cols)
	}
	b.args = append(b.args, vals...)
	if len(b.args) >= 500*b.cols {
		return b.flush(ctx)
	}
	return nil
}

func (b *batch) flush(ctx context.Context) error {
	if b.parent != nil {
		if err := b.parent.flush(ctx); err != nil {
			return err
		}
	}
	if len(b.args) == 0 {
		return nil
	}
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", b.cols), ", ") + ")"
	rows := len(b.args) / b.cols
	q := b.prefix + strings.TrimSuffix(strings.Repeat(row+", ", rows), ", ")
	_, err := b.db.ExecContext(ctx, q, b.args...)
	b.args = b.args[:0]
	return err
}
