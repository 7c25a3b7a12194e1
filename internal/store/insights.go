package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// InsightsQuery selects what Insights reads: the builds and jobs that
// finished in [Since, Until), of every project or of some. What the
// window is, and what is made of the rows, is internal/insights' policy.
type InsightsQuery struct {
	Since, Until time.Time
	// Day is the length of BuildDays' buckets, counted from Since.
	Day time.Duration
	// AllProjects reads every project's; else only ProjectIDs' (none
	// when it is empty).
	AllProjects bool
	ProjectIDs  []int64
}

// InsightsData is what the store holds of a window, for insights.Report.
type InsightsData struct {
	// BuildDays counts finished builds by bucket (Day since Since) and
	// status.
	BuildDays []BuildDayCount
	// Jobs are the jobs that started and finished in the window.
	Jobs []JobRun
	// Flaky are the jobs that failed in the window (failure or timed
	// out) and succeeded, under the same name, in a later build of the
	// same project and commit: one row per later success.
	Flaky []FlakyRun
}

// BuildDayCount is the number of builds that finished in one bucket of
// the window with one status.
type BuildDayCount struct {
	Day    int
	Status Status
	Count  int
}

// JobRun is a job that ran: its last attempt's result, wall time and
// cache restores, and how long it waited for its first attempt.
type JobRun struct {
	BuildID     int64
	BuildNumber int64
	Project     string
	Name        string
	Status      Status
	Attempts    int
	// Queued is from the job's queueing to its first claim; QueueKnown
	// is false for a job whose first claim was not recorded.
	Queued     time.Duration
	QueueKnown bool
	// Ran is its last attempt's wall time, from claim to finish.
	Ran        time.Duration
	FinishedAt time.Time
	// The last attempt's cache restores as its agent reported them.
	CacheRestores      int
	CacheHits          int
	CacheBytesRestored int64
}

// FlakyRun is a job that failed in one build and succeeded in a later
// build of the same commit.
type FlakyRun struct {
	Project      string
	Name         string
	Commit       string
	FailedBuild  int64
	FailedNumber int64
	FailedStatus Status
	PassedBuild  int64
	PassedNumber int64
	PassedAt     time.Time
}

// projectsIn is a condition on col keeping q's projects ("" for all),
// and its arguments.
func (q InsightsQuery) projectsIn(col string) (string, []any) {
	if q.AllProjects {
		return "", nil
	}
	args := make([]any, len(q.ProjectIDs))
	for i, id := range q.ProjectIDs {
		args[i] = id
	}
	return " AND " + col + " IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ") + ")", args
}

// Insights reads the window q names. Each query reads its rows through
// an index on when they finished (jobs_finished, builds_finished, and per
// project jobs_project_finished, builds_project_finished).
func (s *Store) Insights(ctx context.Context, q InsightsQuery) (*InsightsData, error) {
	out := &InsightsData{}
	if !q.AllProjects && len(q.ProjectIDs) == 0 {
		return out, nil
	}
	if q.Day <= 0 {
		return nil, errors.New("insights: a day must be longer than nothing")
	}
	since, until := ms(q.Since), ms(q.Until)
	var err error
	if out.BuildDays, err = s.buildDays(ctx, q, since, until); err != nil {
		return nil, fmt.Errorf("insights: builds per day: %w", err)
	}
	if out.Jobs, err = s.jobRuns(ctx, q, since, until); err != nil {
		return nil, fmt.Errorf("insights: jobs: %w", err)
	}
	if out.Flaky, err = s.flakyRuns(ctx, q, since, until); err != nil {
		return nil, fmt.Errorf("insights: flaky jobs: %w", err)
	}
	return out, nil
}

func (s *Store) buildDays(ctx context.Context, q InsightsQuery, since, until int64) ([]BuildDayCount, error) {
	cond, args := q.projectsIn("project_id")
	// The bucket's bounds are integers of the caller's, written into the
	// statement: the same expression then groups on both databases.
	bucket := fmt.Sprintf("(finished_at - %d) / %d", since, q.Day.Milliseconds())
	rows, err := s.db.QueryContext(ctx, buildDaysSQL(bucket, cond), append([]any{since, until}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BuildDayCount
	for rows.Next() {
		var d BuildDayCount
		if err := rows.Scan(&d.Day, &d.Status, &d.Count); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *Store) jobRuns(ctx context.Context, q InsightsQuery, since, until int64) ([]JobRun, error) {
	// Projects by id, read once rather than joined to every job.
	names := map[int64]string{}
	prows, err := s.db.QueryContext(ctx, `SELECT id, name FROM projects`)
	if err != nil {
		return nil, err
	}
	for prows.Next() {
		var id int64
		var name string
		if err := prows.Scan(&id, &name); err != nil {
			prows.Close()
			return nil, err
		}
		names[id] = name
	}
	prows.Close()
	if err := prows.Err(); err != nil {
		return nil, err
	}
	cond, args := q.projectsIn("j.project_id")
	rows, err := s.db.QueryContext(ctx, jobRunsSQL(cond),
		append([]any{since, until}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []JobRun
	for rows.Next() {
		var r JobRun
		var project, queued, started, finished int64
		var first sql.NullInt64
		if err := rows.Scan(&r.BuildID, &r.BuildNumber, &project, &r.Name, &r.Status, &r.Attempts, &queued, &first,
			&started, &finished, &r.CacheRestores, &r.CacheHits, &r.CacheBytesRestored); err != nil {
			return nil, err
		}
		r.Project = names[project]
		if first.Valid {
			r.Queued, r.QueueKnown = time.Duration(first.Int64-queued)*time.Millisecond, true
		}
		r.Ran = time.Duration(finished-started) * time.Millisecond
		r.FinishedAt = fromMS(finished)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *Store) flakyRuns(ctx context.Context, q InsightsQuery, since, until int64) ([]FlakyRun, error) {
	cond, args := q.projectsIn("jf.project_id")
	rows, err := s.db.QueryContext(ctx, flakySQL(cond),
		append([]any{since, until}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []FlakyRun
	for rows.Next() {
		var f FlakyRun
		var passed sql.NullInt64
		if err := rows.Scan(&f.Project, &f.Name, &f.Commit, &f.FailedBuild, &f.FailedNumber, &f.FailedStatus, &f.PassedBuild, &f.PassedNumber, &passed); err != nil {
			return nil, err
		}
		if passed.Valid {
			f.PassedAt = fromMS(passed.Int64)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// BranchStatus is what a project's status badge shows of a branch.
type BranchStatus struct {
	// Finished is the status of the branch's newest build that finished
	// ("" when none has).
	Finished Status
	// Pending: a build of the branch is queued or running.
	Pending bool
}

// BranchStatus reads a branch's newest finished build's status, and
// whether one is in progress (through builds_project_branch).
func (s *Store) BranchStatus(ctx context.Context, projectID int64, branch string) (BranchStatus, error) {
	var bs BranchStatus
	err := s.db.QueryRowContext(ctx, `SELECT status FROM builds WHERE project_id = ? AND branch = ? AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1`,
		projectID, branch).Scan(&bs.Finished)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return bs, err
	}
	var one int
	err = s.db.QueryRowContext(ctx, `SELECT 1 FROM builds WHERE project_id = ? AND branch = ? AND finished_at IS NULL LIMIT 1`, projectID, branch).Scan(&one)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return bs, err
	}
	bs.Pending = one == 1
	return bs, nil
}

// CacheRestored records one cache restore of a running attempt, as its
// agent reported it: a hit and the bytes it gave, or a miss (or a
// failed restore). One conditional UPDATE, fenced as the agent's other
// writes are (the attempt holds the lease, this token claimed it): false
// when it does not, and nothing is recorded.
func (w AgentWrites) CacheRestored(ctx context.Context, jobID int64, attempt int, hit bool, bytes int64) (bool, error) {
	hits := 0
	if hit {
		hits = 1
	} else {
		bytes = 0
	}
	res, err := w.s.db.ExecContext(ctx, `UPDATE jobs SET cache_restores = cache_restores + 1, cache_hits = cache_hits + ?, cache_bytes_restored = cache_bytes_restored + ?
		WHERE id = ? AND attempt = ? AND status = 'running' AND lease_token = ?`, hits, max(bytes, 0), jobID, attempt, w.token)
	if err != nil {
		return false, w.s.wrote(err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// The window's queries, with a condition on the projects (projectsIn's)
// and the window's bounds as their first two arguments. Each is read
// through an index on when its rows finished; insights_test.go checks
// SQLite's plans.

// buildDaysSQL counts the window's finished builds by bucket and
// status, from builds_finished (or builds_project_finished) alone.
func buildDaysSQL(bucket, cond string) string {
	return `SELECT ` + bucket + `, status, COUNT(*) FROM builds
		WHERE finished_at >= ? AND finished_at < ?` + cond + ` GROUP BY ` + bucket + `, status`
}

// jobRunsSQL reads the window's jobs. Every column but the build's
// number is in jobs_finished (or jobs_project_finished): the jobs' rows,
// specs and all, are not read. CROSS JOIN keeps SQLite's planner to that
// order (jobs by the index, then each build by its id): for a window
// holding most of the table it would otherwise scan the builds and read
// each one's jobs' rows, several times slower. PostgreSQL plans a CROSS
// JOIN as any join.
func jobRunsSQL(cond string) string {
	return `SELECT j.build_id, b.number, j.project_id, j.name, j.status, j.attempt, j.queued_at, j.first_started_at,
			j.started_at, j.finished_at, j.cache_restores, j.cache_hits, j.cache_bytes_restored
		FROM jobs j CROSS JOIN builds b
		WHERE b.id = j.build_id AND j.finished_at >= ? AND j.finished_at < ? AND j.started_at IS NOT NULL` + cond
}

// flakySQL goes from the window's failed jobs (through jobs_finished,
// covering) to the later builds of their commit (builds_commit) and
// their job of the same name (jobs_build_status). In that order on
// SQLite too: the CROSS JOINs keep it, and the status is compared as an
// expression so that SQLite does not read every failed job of the
// table's history through jobs_status instead (their rows, specs and
// all).
func flakySQL(cond string) string {
	return `SELECT p.name, jf.name, bf.commit_sha, bf.id, bf.number, jf.status, bs.id, bs.number, js.finished_at
		FROM jobs jf CROSS JOIN builds bf CROSS JOIN builds bs CROSS JOIN jobs js CROSS JOIN projects p
		WHERE (jf.status || '') IN ('failure', 'timed_out') AND jf.finished_at >= ? AND jf.finished_at < ?` + cond + `
			AND bf.id = jf.build_id AND bf.commit_sha <> ''
			AND bs.project_id = bf.project_id AND bs.commit_sha = bf.commit_sha AND bs.id > bf.id
			AND js.build_id = bs.id AND js.status = 'success' AND js.name = jf.name
			AND p.id = bf.project_id
		ORDER BY bf.id, bs.id`
}
