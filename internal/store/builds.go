package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const buildCols = `b.id, b.project_id, p.name, b.number, b.status, b.trigger, b.forge, b.delivery_id, b.ref, b.branch, b.commit_sha,
	b.message, b.author, b.error, b.cancel_requested, b.planned, b.plan_attempts, b.created_at, b.started_at, b.finished_at,
	b.logs_pruned_at, b.logs_archived_at, b.event, b.pr_number, b.pr_title, b.head_branch, b.base_branch, b.fork, b.approval, b.approved_by, b.forge_action`

const buildFrom = ` FROM builds b JOIN projects p ON p.id = b.project_id`

func scanBuild(row interface{ Scan(...any) error }) (*Build, error) {
	var b Build
	var cancel, planned int
	var created int64
	var started, finished, pruned, archived sql.NullInt64
	var pr PullRequest
	var fork int
	err := row.Scan(&b.ID, &b.ProjectID, &b.Project, &b.Number, &b.Status, &b.Trigger, &b.Forge, &b.DeliveryID, &b.Ref, &b.Branch, &b.Commit,
		&b.Message, &b.Author, &b.Error, &cancel, &planned, &b.PlanAttempts, &created, &started, &finished, &pruned, &archived,
		&b.Event, &pr.Number, &pr.Title, &pr.HeadBranch, &pr.BaseBranch, &fork, &b.Approval, &b.ApprovedBy, &b.ForgeAction)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("build: %w", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	b.CancelRequested, b.Planned = cancel != 0, planned != 0
	b.CreatedAt, b.StartedAt, b.FinishedAt = fromMS(created), nullTime(started), nullTime(finished)
	b.LogsPrunedAt, b.LogsArchivedAt = nullTime(pruned), nullTime(archived)
	if pr.Number > 0 {
		pr.Fork = fork != 0
		b.PullRequest = &pr
	}
	return &b, nil
}

// RedeliveryWindow is how long after a build a delivery of the same event,
// ref and commit under another delivery id counts as a redelivery.
const RedeliveryWindow = 10 * time.Minute

// RecordDelivery stores a verified webhook delivery and, when b is not nil,
// the build it asks for, in one transaction, before the delivery is
// acknowledged. A delivery id already seen for this forge and project
// returns duplicate=true and changes nothing. When the project cancels
// superseded builds, older unfinished builds of the same branch are canceled
// in the same transaction.
func (s *Store) RecordDelivery(ctx context.Context, d *Delivery, b *Build) (duplicate bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var existing sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT build_id FROM deliveries WHERE forge = ? AND project_id = ? AND id = ?`, d.Forge, d.ProjectID, d.ID).Scan(&existing)
	if err == nil {
		if existing.Valid {
			id := existing.Int64
			d.BuildID = &id
		}
		return true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	d.ReceivedAt = fromMS(s.nowMS())
	if b != nil && b.Commit != "" {
		// A redelivery under a new id (Gitea's Replay and its hook test
		// send a fresh X-Gitea-Delivery; GitLab before 17.4 a fresh
		// X-Gitlab-Webhook-UUID on every retry) asks again for a build
		// made a moment ago: the same event (and request action) of the
		// same ref at the same commit. It is a duplicate, for every forge alike; a rebuild is
		// kiln retry's.
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM builds WHERE project_id = ? AND forge = ? AND event = ? AND forge_action = ? AND ref = ? AND commit_sha = ? AND created_at > ? ORDER BY id DESC LIMIT 1`,
			b.ProjectID, b.Forge, b.Event, b.ForgeAction, b.Ref, b.Commit, s.nowMS()-RedeliveryWindow.Milliseconds()).Scan(&id)
		if err == nil {
			d.BuildID = &id
			d.Result = "duplicate: build " + strconv.FormatInt(id, 10) + " was made for this event a moment ago"
			if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries (id, forge, project_id, event, result, build_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				d.ID, d.Forge, d.ProjectID, d.Event, d.Result, d.BuildID, ms(d.ReceivedAt)); err != nil {
				return false, fmt.Errorf("record delivery: %w", err)
			}
			return true, tx.Commit()
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, err
		}
	}
	if b != nil {
		if err := s.insertBuild(ctx, tx, b); err != nil {
			return false, err
		}
		d.BuildID = &b.ID
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries (id, forge, project_id, event, result, build_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.Forge, d.ProjectID, d.Event, d.Result, d.BuildID, ms(d.ReceivedAt)); err != nil {
		return false, fmt.Errorf("record delivery: %w", err)
	}
	return false, tx.Commit()
}

// CreateBuild stores a build triggered through the API.
func (s *Store) CreateBuild(ctx context.Context, b *Build) error {
	return s.createBuild(ctx, b, nil)
}

func (s *Store) createBuild(ctx context.Context, b *Build, audit func() *AuditEvent) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.insertBuild(ctx, tx, b); err != nil {
		return err
	}
	if err := s.auditTx(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *Store) insertBuild(ctx context.Context, tx *dbTx, b *Build) error {
	var cancelSuperseded int
	if err := tx.QueryRowContext(ctx, `SELECT next_build_number, cancel_superseded, name FROM projects WHERE id = ?`, b.ProjectID).
		Scan(&b.Number, &cancelSuperseded, &b.Project); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("project: %w", ErrNotFound)
		}
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projects SET next_build_number = next_build_number + 1 WHERE id = ?`, b.ProjectID); err != nil {
		return err
	}
	b.Status = StatusQueued
	b.CreatedAt = fromMS(s.nowMS())
	var pr PullRequest
	if b.PullRequest != nil {
		pr = *b.PullRequest
	}
	err := tx.QueryRowContext(ctx, `INSERT INTO builds (project_id, number, status, trigger, forge, delivery_id, ref, branch, commit_sha, message, author, created_at,
			event, pr_number, pr_title, head_branch, base_branch, fork, approval, forge_action)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		b.ProjectID, b.Number, string(b.Status), b.Trigger, b.Forge, b.DeliveryID, b.Ref, b.Branch, b.Commit, b.Message, b.Author, ms(b.CreatedAt),
		b.Event, pr.Number, pr.Title, pr.HeadBranch, pr.BaseBranch, boolInt(pr.Fork), b.Approval, b.ForgeAction).Scan(&b.ID)
	if err != nil {
		return fmt.Errorf("create build: %w", err)
	}
	// Runner builds (one per GitHub Actions job) never supersede, nor are
	// superseded: the jobs of one workflow run share a branch. A request's
	// build supersedes the older builds of the same request; a push's,
	// those of its branch (a request's builds have no branch).
	if cancelSuperseded != 0 && (b.Branch != "" || pr.Number > 0) && b.Trigger != TriggerGitHubActions {
		rows, err := tx.QueryContext(ctx, `SELECT id FROM builds WHERE project_id = ? AND branch = ? AND pr_number = ? AND id < ? AND status IN ('queued', 'running') AND cancel_requested = 0 AND trigger != ?`,
			b.ProjectID, b.Branch, pr.Number, b.ID, TriggerGitHubActions)
		if err != nil {
			return err
		}
		var older []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			older = append(older, id)
		}
		rows.Close()
		for _, id := range older {
			if err := s.cancelBuildTx(ctx, tx, id, fmt.Sprintf("superseded by build #%d", b.Number)); err != nil {
				return err
			}
		}
	}
	return s.syncStatuses(ctx, tx, b.ID)
}

// Build returns a build with its jobs and their steps (of each job's latest attempt).
func (s *Store) Build(ctx context.Context, id int64) (*Build, error) {
	b, err := scanBuild(s.db.QueryRowContext(ctx, `SELECT `+buildCols+buildFrom+` WHERE b.id = ?`, id))
	if err != nil {
		return nil, err
	}
	if b.Jobs, err = s.jobsOfBuild(ctx, s.db, id); err != nil {
		return nil, err
	}
	for _, j := range b.Jobs {
		if j.Steps, err = s.steps(ctx, j.ID, j.Attempt); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// BuildFilter selects builds for ListBuilds. Zero fields match everything.
type BuildFilter struct {
	ProjectID int64
	Status    Status
	Branch    string
	BeforeID  int64 // for paging: builds with id < BeforeID
	Limit     int   // default 50, at most 500
	// OnlyProjects keeps the builds of the projects in ProjectIDs (none
	// when it is empty): the projects the caller may see.
	OnlyProjects bool
	ProjectIDs   []int64
	// Event (push, tag, pull_request, api), Trigger (push, api,
	// github_actions) and PullRequest (a request's number) keep the
	// builds that match; zero values keep all.
	Event       string
	Trigger     string
	PullRequest int
	// Requests keeps the builds of pull and merge requests only (through
	// their index: cheaper than Event for a project with few of them).
	Requests bool
}

// ListBuilds returns builds newest first, without their jobs.
func (s *Store) ListBuilds(ctx context.Context, f BuildFilter) ([]*Build, error) {
	var where []string
	var args []any
	if f.ProjectID != 0 {
		where, args = append(where, "b.project_id = ?"), append(args, f.ProjectID)
	}
	if f.OnlyProjects {
		if len(f.ProjectIDs) == 0 {
			return nil, nil
		}
		where = append(where, "b.project_id IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(f.ProjectIDs)), ", ")+")")
		for _, id := range f.ProjectIDs {
			args = append(args, id)
		}
	}
	if f.Status != "" {
		where, args = append(where, "b.status = ?"), append(args, string(f.Status))
	}
	if f.Branch != "" {
		where, args = append(where, "b.branch = ?"), append(args, f.Branch)
	}
	if f.BeforeID != 0 {
		where, args = append(where, "b.id < ?"), append(args, f.BeforeID)
	}
	if f.Event != "" {
		where, args = append(where, "b.event = ?"), append(args, f.Event)
	}
	if f.Trigger != "" {
		where, args = append(where, "b.trigger = ?"), append(args, f.Trigger)
	}
	if f.PullRequest != 0 {
		where, args = append(where, "b.pr_number = ?"), append(args, f.PullRequest)
	}
	if f.Requests {
		where = append(where, "b.pr_number > 0")
	}
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 500)
	q := `SELECT ` + buildCols + buildFrom
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += fmt.Sprintf(" ORDER BY b.id DESC LIMIT %d", f.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Build
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// CountBuildsByStatus is for metrics.
func (s *Store) CountBuildsByStatus(ctx context.Context) (map[Status]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, COUNT(*) FROM builds GROUP BY status`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[Status]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[Status(st)] = n
	}
	return out, rows.Err()
}

// --- planning: turning a queued build into jobs ---

// ClaimPlan takes one build that still needs planning (its .kiln.yml read and
// compiled into jobs) and leases it for lease, so that with several
// control-plane replicas only one plans it; a planner that dies loses the
// lease and another takes over. Builds of the projects in skip are left
// alone: the caller is planning one of theirs already.
func (s *Store) ClaimPlan(ctx context.Context, lease time.Duration, skip ...int64) (*Build, error) {
	now := s.nowMS()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	args := []any{now}
	notIn := ""
	if len(skip) > 0 {
		notIn = " AND b.project_id NOT IN (?" + strings.Repeat(", ?", len(skip)-1) + ")"
		for _, id := range skip {
			args = append(args, id)
		}
	}
	b, err := scanBuild(tx.QueryRowContext(ctx, `SELECT `+buildCols+buildFrom+`
		WHERE b.planned = 0 AND b.status = 'queued' AND b.cancel_requested = 0 AND b.approval != 'waiting' AND (b.plan_lease IS NULL OR b.plan_lease < ?)`+notIn+`
		ORDER BY b.id LIMIT 1`, args...))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE builds SET plan_lease = ?, plan_attempts = plan_attempts + 1 WHERE id = ?`, now+lease.Milliseconds(), b.ID); err != nil {
		return nil, err
	}
	b.PlanAttempts++
	return b, tx.Commit()
}

// PlanWanted reports whether the build still waits to be planned: false
// once it is canceled, planned or gone with its project, so a planner
// stuck on its repository can stop.
func (s *Store) PlanWanted(ctx context.Context, buildID int64) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM builds WHERE id = ? AND planned = 0 AND cancel_requested = 0`, buildID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// RenewPlan extends the plan lease of a build being planned, and reports
// false, as PlanWanted does, when it no longer wants planning.
func (s *Store) RenewPlan(ctx context.Context, buildID int64, lease time.Duration) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE builds SET plan_lease = ? WHERE id = ? AND planned = 0 AND cancel_requested = 0`, s.nowMS()+lease.Milliseconds(), buildID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// PlanBuild records the resolved commit and the build's jobs, queued.
func (s *Store) PlanBuild(ctx context.Context, buildID int64, commit string, jobs []*Job) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE builds SET planned = 1, plan_lease = NULL, commit_sha = ? WHERE id = ? AND planned = 0 AND cancel_requested = 0`, commit, buildID)
	if err := mustAffect(res, err, "unplanned build"); err != nil {
		return err
	}
	now := s.nowMS()
	for _, j := range jobs {
		labels := marshalLabels(j.Labels)
		if j.MaxAttempts <= 0 {
			j.MaxAttempts = 3
		}
		err := tx.QueryRowContext(ctx, `INSERT INTO jobs (build_id, project_id, name, status, spec, labels, sticky, timeout_seconds, max_attempts, queued_at)
			VALUES (?, (SELECT project_id FROM builds WHERE id = ?), ?, 'queued', ?, ?, ?, ?, ?, ?) RETURNING id`,
			buildID, buildID, j.Name, j.Spec, labels, boolInt(j.Sticky), j.TimeoutSeconds, j.MaxAttempts, now).Scan(&j.ID)
		if err != nil {
			return fmt.Errorf("plan build: %w", err)
		}
		j.BuildID, j.Status, j.QueuedAt = buildID, StatusQueued, fromMS(now)
	}
	if err := s.syncStatuses(ctx, tx, buildID); err != nil {
		return err
	}
	return tx.Commit()
}

// DeferPlan releases a build whose planning hit an infrastructure fault, to be
// tried again after delay.
func (s *Store) DeferPlan(ctx context.Context, buildID int64, delay time.Duration) error {
	_, err := s.db.ExecContext(ctx, `UPDATE builds SET plan_lease = ? WHERE id = ? AND planned = 0`, s.nowMS()+delay.Milliseconds(), buildID)
	return err
}

// FailPlan ends a build that could not be planned: status failure (the
// user's pipeline file is invalid) or error (the repository could not be
// read, retries exhausted). The message lines become the log of a job named
// "pipeline", so the reason shows wherever build logs are read.
func (s *Store) FailPlan(ctx context.Context, buildID int64, status Status, commit string, lines []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := s.nowMS()
	msg := strings.Join(lines, "\n")
	res, err := tx.ExecContext(ctx, `UPDATE builds SET planned = 1, plan_lease = NULL, status = ?, commit_sha = CASE WHEN ? = '' THEN commit_sha ELSE ? END, error = ?, started_at = COALESCE(started_at, ?), finished_at = ?
		WHERE id = ? AND planned = 0`, string(status), commit, commit, msg, now, now, buildID)
	if err := mustAffect(res, err, "unplanned build"); err != nil {
		return err
	}
	var jobID int64
	err = tx.QueryRowContext(ctx, `INSERT INTO jobs (build_id, project_id, name, status, spec, timeout_seconds, attempt, max_attempts, error, queued_at, started_at, finished_at)
		VALUES (?, (SELECT project_id FROM builds WHERE id = ?), 'pipeline', ?, ?, 0, 1, 1, ?, ?, ?, ?) RETURNING id`, buildID, buildID, string(status), []byte("{}"), msg, now, now, now).Scan(&jobID)
	if err != nil {
		return err
	}
	for i, l := range lines {
		if _, err := tx.ExecContext(ctx, `INSERT INTO log_lines (job_id, attempt, seq, step, ts, text) VALUES (?, 1, ?, -1, ?, ?)`, jobID, i+1, now, l); err != nil {
			return err
		}
	}
	if err := s.syncStatuses(ctx, tx, buildID); err != nil {
		return err
	}
	return tx.Commit()
}
