package store

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"strconv"
	"time"
)

// Scheduling across projects. The store offers the primitive, the
// scheduler the policy: a claim reads the projects that have claimable
// queued jobs and room under their cap (ProjectLoad: running jobs, weight,
// oldest queued job), lets Claim.Order put them in the policy's order, and
// then tries each project's oldest queued jobs, project by project,
// until one gives it a job. Each
// project costs a few index lookups (jobs_project_status), however long
// its queue, so one project's 10,000 queued jobs cost nothing to another.
//
// The cap on a project's running jobs is an invariant, not a preference:
// it is checked again inside the claim's UPDATE (projectHasRoom), in the
// claim's immediate (so serialized) transaction, so concurrent claimers
// cannot exceed it. The order is a preference read before that
// transaction: two claims at the same moment may both serve the same
// project, which the next claims even out.

// Scheduling is a project's own share of the agents.
type Scheduling struct {
	// MaxRunning caps the project's jobs running at once: nil, the
	// server's default; 0, no cap.
	MaxRunning *int `json:"max_running"`
	// Weight is the project's share relative to others (1 is the
	// default): the scheduler's fair share lets a project of weight 2 run
	// twice as many jobs as one of weight 1 before it prefers the other.
	Weight int `json:"weight"`
}

// ProjectLoad is a project with claimable queued jobs and room under its
// cap: what a scheduling policy (Claim.Order) orders. Its fields are
// facts, read at the claim.
type ProjectLoad struct {
	ProjectID int64
	// Running is how many of its jobs run now.
	Running int
	// Weight is its weight (at least 1).
	Weight int
	// Oldest is the id of its oldest claimable queued job: a smaller id
	// was queued earlier.
	Oldest int64
	// Claimed says whether any of its jobs was ever claimed; Idle is how
	// long ago the last claim was (at most a day).
	Claimed bool
	Idle    time.Duration
}

// maxIdle bounds ProjectLoad.Idle, so a policy may multiply it.
const maxIdle = 24 * time.Hour

const (
	// fairProjects bounds how many projects, in the policy's order, one
	// claim tries (it stops at the first that gives it a job);
	// fairPerProject bounds the queued jobs it reads of each (a job the
	// agent lacks labels for is passed over). A full pool's runner jobs
	// are left out in SQL, so they never fill a project's window.
	fairProjects   = 32
	fairPerProject = 64
)

// SetScheduling sets a project's scheduling (MaxRunning nil and weight 1:
// the defaults, and its row is removed).
func (s *Store) SetScheduling(ctx context.Context, projectID int64, sc Scheduling) error {
	var err error
	if sc.Weight <= 0 {
		sc.Weight = 1
	}
	if sc.MaxRunning == nil && sc.Weight == 1 {
		_, err = s.db.ExecContext(ctx, `DELETE FROM project_scheduling WHERE project_id = ?`, projectID)
	} else {
		_, err = s.db.ExecContext(ctx, `INSERT INTO project_scheduling (project_id, max_running, weight) VALUES (?, ?, ?)
			ON CONFLICT (project_id) DO UPDATE SET max_running = excluded.max_running, weight = excluded.weight`, projectID, sc.MaxRunning, sc.Weight)
	}
	return s.wrote(err)
}

// Schedulings returns every project's own scheduling, by project id;
// a project that keeps the defaults is absent (use SchedulingOf).
func (s *Store) Schedulings(ctx context.Context) (map[int64]Scheduling, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT project_id, max_running, weight FROM project_scheduling`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]Scheduling{}
	for rows.Next() {
		var id int64
		var maxRunning sql.NullInt64
		var sc Scheduling
		if err := rows.Scan(&id, &maxRunning, &sc.Weight); err != nil {
			return nil, err
		}
		if maxRunning.Valid {
			n := int(maxRunning.Int64)
			sc.MaxRunning = &n
		}
		out[id] = sc
	}
	return out, rows.Err()
}

// SchedulingOf returns one project's scheduling (the defaults when it has
// none of its own).
func SchedulingOf(all map[int64]Scheduling, projectID int64) Scheduling {
	if sc, ok := all[projectID]; ok {
		return sc
	}
	return Scheduling{Weight: 1}
}

// projectLoads returns the projects with claimable queued jobs and room
// under their cap (their own, or defaultCap; 0 is none).
func (s *Store) projectLoads(ctx context.Context, now int64, defaultCap int) ([]ProjectLoad, error) {
	// A claim sets started_at, so its maximum is the project's last claim
	// (an index lookup on jobs_project_started).
	rows, err := s.db.QueryContext(ctx, `SELECT id, weight, running, oldest, last_claim FROM (
		SELECT p.id, COALESCE(s.max_running, ?) AS max_running, COALESCE(s.weight, 1) AS weight,
			(SELECT COUNT(*) FROM jobs r WHERE r.project_id = p.id AND r.status = 'running') AS running,
			(SELECT q.id FROM jobs q WHERE q.project_id = p.id AND q.status = 'queued' AND q.cancel_requested = 0
				AND (q.not_before IS NULL OR q.not_before <= ?) ORDER BY q.id LIMIT 1) AS oldest,
			(SELECT MAX(c.started_at) FROM jobs c WHERE c.project_id = p.id) AS last_claim
		FROM projects p LEFT JOIN project_scheduling s ON s.project_id = p.id) AS loads
		WHERE oldest IS NOT NULL AND (max_running <= 0 OR running < max_running)`, defaultCap, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var loads []ProjectLoad
	for rows.Next() {
		var l ProjectLoad
		var last sql.NullInt64
		if err := rows.Scan(&l.ProjectID, &l.Weight, &l.Running, &l.Oldest, &last); err != nil {
			return nil, err
		}
		l.Weight = max(l.Weight, 1)
		if last.Valid {
			l.Claimed = true
			l.Idle = min(max(time.Duration(now-last.Int64)*time.Millisecond, 0), maxIdle)
		}
		loads = append(loads, l)
	}
	return loads, rows.Err()
}

// oldestFirst is the order without a policy: the project whose oldest job
// was queued first goes first (first in, first out across projects).
func oldestFirst(loads []ProjectLoad) {
	slices.SortFunc(loads, func(a, b ProjectLoad) int { return cmp.Compare(a.Oldest, b.Oldest) })
}

// candidatesQuery reads a project's first fairPerProject queued jobs,
// oldest first (an index range of jobs_project_status): id, labels,
// sticky, since (when the job became claimable), the spec (JSON: its
// resources are read in Go, the same on every database). Arguments: the
// project, now.
var candidatesQuery = `SELECT j.id, j.labels, j.sticky, CASE WHEN j.not_before > j.queued_at THEN j.not_before ELSE j.queued_at END, j.spec
	FROM jobs j WHERE j.project_id = ? AND j.status = 'queued' AND j.cancel_requested = 0 AND (j.not_before IS NULL OR j.not_before <= ?)
	AND (j.pool = '' OR ` + poolHasRoom("j") + `) ORDER BY j.id LIMIT ` + strconv.Itoa(fairPerProject)

// projectHasRoom is an SQL condition: the project of the job row t runs
// fewer jobs than its cap (its own, or defaultCap; 0 is none). The claim's
// UPDATE repeats it inside its immediate (so serialized) transaction.
func projectHasRoom(t string, defaultCap int) string {
	capOf := `COALESCE((SELECT ps.max_running FROM project_scheduling ps WHERE ps.project_id = ` + t + `.project_id), ` + strconv.Itoa(defaultCap) + `)`
	return `(` + capOf + ` <= 0 OR (SELECT COUNT(*) FROM jobs pr WHERE pr.project_id = ` + t + `.project_id AND pr.status = 'running') < ` + capOf + `)`
}
