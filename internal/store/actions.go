package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// GitHub workflow job statuses, in the order they move: a job's recorded
// status never goes back (see GHStatusRank).
const (
	GHQueued     = "queued"
	GHInProgress = "in_progress"
	GHCompleted  = "completed"
)

// GHStatusRank orders GitHub job statuses: waiting (and any status GitHub
// may add before queued) 0, queued 1, in_progress 2, completed 3.
func GHStatusRank(status string) int {
	switch status {
	case GHQueued:
		return 1
	case GHInProgress:
		return 2
	case GHCompleted:
		return 3
	}
	return 0
}

// Where Kiln learned of a workflow job.
const (
	SourceWebhook    = "webhook"
	SourceReconciler = "reconciler"
	SourceClaim      = "claim" // the check made before a runner is launched
)

// WorkflowJob is a GitHub Actions workflow job Kiln knows.
type WorkflowJob struct {
	ID             int64    `json:"id"`
	RunID          int64    `json:"run_id"`
	RunAttempt     int      `json:"run_attempt,omitempty"`
	Owner          string   `json:"owner"`
	Repo           string   `json:"repo"`
	Name           string   `json:"name,omitempty"`
	Workflow       string   `json:"workflow,omitempty"`
	Labels         []string `json:"labels"`
	Status         string   `json:"status"`
	Conclusion     string   `json:"conclusion,omitempty"`
	Pool           string   `json:"pool,omitempty"`
	InstallationID int64    `json:"installation_id,omitempty"`
	HTMLURL        string   `json:"html_url,omitempty"`
	HeadBranch     string   `json:"head_branch,omitempty"`
	HeadSHA        string   `json:"head_sha,omitempty"`
	// RunnerName is the runner GitHub says took the job.
	RunnerName string `json:"runner_name,omitempty"`
	// JobID is the Kiln runner job that serves it, if any.
	JobID     *int64    `json:"job_id,omitempty"`
	Launches  int       `json:"launches"`
	FirstSeen time.Time `json:"first_seen"`
	UpdatedAt time.Time `json:"updated_at"`
	Source    string    `json:"source"`
}

// RunnerJob is a Kiln runner job: a job whose one step runs an ephemeral
// GitHub Actions runner, with what Kiln knows of that runner.
type RunnerJob struct {
	JobID   int64  `json:"job_id"`
	BuildID int64  `json:"build_id"`
	Project string `json:"project"`
	Pool    string `json:"pool"`
	// GHJobID is the GitHub job the runner was started for (or, once
	// GitHub gave the runner another job of the pool, that job).
	GHJobID int64 `json:"github_job_id"`
	// Name is the runner's name on GitHub, fixed when the runner job is made.
	Name           string `json:"runner_name"`
	Owner          string `json:"owner"`
	Repo           string `json:"repo,omitempty"`
	InstallationID int64  `json:"installation_id,omitempty"`
	// RunnerID is GitHub's id of the registered runner; 0 until the JIT
	// configuration is made at claim time.
	RunnerID int64 `json:"runner_id,omitempty"`
	// GHStatus is the runner as the reaper last saw it: "", offline,
	// online, busy.
	GHStatus  string     `json:"github_status,omitempty"`
	OnlineAt  *time.Time `json:"online_at,omitempty"`
	IdleSince *time.Time `json:"idle_since,omitempty"`
	CreatedAt time.Time  `json:"created_at"`

	// The Kiln job.
	Status          Status     `json:"status"`
	Attempt         int        `json:"attempt"`
	CancelRequested bool       `json:"cancel_requested"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	Error           string     `json:"error,omitempty"`

	// The GitHub job it serves.
	HTMLURL   string `json:"html_url,omitempty"`
	JobStatus string `json:"github_job_status,omitempty"`
	// JobRunner is the runner GitHub says took that job.
	JobRunner string `json:"github_job_runner,omitempty"`

	// Warm: a warm runner, started before any GitHub job asked for it
	// (GHJobID is 0 until GitHub hands it one).
	Warm bool `json:"warm,omitempty"`
}

// WarmRunnerPrefix starts the GitHub name of a warm runner:
// kiln-warm-<pool>-<Kiln job id>.
const WarmRunnerPrefix = "kiln-warm-"

// WarmRunnerName is the GitHub name of warm runner job jobID of pool.
func WarmRunnerName(pool string, jobID int64) string {
	return fmt.Sprintf("%s%s-%d", WarmRunnerPrefix, pool[:min(len(pool), 40)], jobID)
}

// Live reports whether the runner job has not finished.
func (r *RunnerJob) Live() bool { return !r.Status.Terminal() }

// LaunchSpec says how to make a runner job for a queued workflow job.
type LaunchSpec struct {
	Pool *Pool
	// CloneURL finds the repository's project; a new one is made with
	// ProjectName (a free variant of it) when none has that clone URL.
	CloneURL      string
	ProjectName   string
	DefaultBranch string
	Spec          []byte // the runner job's compiled spec (pipeline.JobSpec as JSON)
	StepNames     []string
	MaxAttempts   int
	Message       string // the build's message
	// Decide is the caller's launch policy (internal/actions): given what
	// the store knows of a queued job in the update's transaction, whether
	// to make it a runner job now, let it wait for an idle warm runner, or
	// neither. Nil: never launch.
	Decide func(LaunchFacts) LaunchDecision
}

// LaunchFacts is what the store knows, inside an update's transaction, of
// a queued workflow job that a runner job may be made for.
type LaunchFacts struct {
	// HasRunnerJob: a runner job serves the job; RunnerJobEnded: it ended
	// (or is gone), so the job has no live runner.
	HasRunnerJob   bool
	RunnerJobEnded bool
	// Relaunch: the update is a repair (WorkflowJobUpdate.Relaunch).
	Relaunch bool
	// Launches is how many runner jobs were made for the job so far.
	Launches int
	// WarmWaiting: the job is waiting for an idle warm runner; WarmWaited:
	// it waited, and the wait is over.
	WarmWaiting, WarmWaited bool
	// IdleWarm is the number of the pool's warm runners that no job
	// expects yet (negative when more jobs expect one than there are).
	IdleWarm int
}

// LaunchDecision is what the launch policy decided for a queued job.
type LaunchDecision struct {
	// Launch: make the job a runner job of its own now.
	Launch bool
	// AwaitWarm, when positive, lets the job wait this long for an idle
	// warm runner instead (a wait already running keeps its end).
	AwaitWarm time.Duration
}

// WarmCounts is what TopUpWarm knows of a pool, in its transaction.
type WarmCounts struct {
	// Want is the pool's warm number; Idle its warm runners no job
	// expects; MaxRunners its bound on live runner jobs, Live how many
	// there are.
	Want, Idle, MaxRunners, Live int
}

// WorkflowJobUpdate is what GitHub said about a job: a webhook delivery,
// or the reconciler's or the claim's look at GitHub's API.
type WorkflowJobUpdate struct {
	Job        WorkflowJob // GitHub's view; JobID, Launches and the times are ignored
	Source     string
	DeliveryID string // webhooks: recorded, and a repeat changes nothing
	Action     string
	// Launch, when set, makes a runner job for a job that is queued and
	// has none: new, or newly queued.
	Launch *LaunchSpec
	// Relaunch also considers one when the job's runner job has ended (or
	// it lost its runner to another job) while GitHub still says queued:
	// the reconciler's repair (Launch.Decide says whether, and how often).
	Relaunch bool
}

// WorkflowJobResult is what RecordWorkflowJob did.
type WorkflowJobResult struct {
	Duplicate bool   // the delivery was seen before: nothing changed
	New       bool   // Kiln did not know the job
	Prev      string // the status before ("" when new)
	Advanced  bool   // the status moved forward (or the job is new)
	Job       WorkflowJob
	// Created is the runner job this update made, if any.
	Created *RunnerJob
	// Runner is the runner job serving the job now, if any.
	Runner *RunnerJob
	// Swapped: GitHub gave the job to a runner Kiln started for another
	// job (or a warm runner); the two jobs' runner jobs were exchanged.
	Swapped bool
	// Warm: the job is queued and expected to be taken by an idle warm
	// runner (until the grace ends), so no runner job was made for it.
	Warm bool
}

const workflowJobCols = `gh_job_id, run_id, run_attempt, owner, repo, name, workflow, labels, status, conclusion, pool, installation_id,
	html_url, head_branch, head_sha, runner_name, job_id, launches, first_seen, updated_at, source`

func scanWorkflowJob(row interface{ Scan(...any) error }) (*WorkflowJob, error) {
	var w WorkflowJob
	var labels string
	var jobID sql.NullInt64
	var first, updated int64
	err := row.Scan(&w.ID, &w.RunID, &w.RunAttempt, &w.Owner, &w.Repo, &w.Name, &w.Workflow, &labels, &w.Status, &w.Conclusion, &w.Pool,
		&w.InstallationID, &w.HTMLURL, &w.HeadBranch, &w.HeadSHA, &w.RunnerName, &jobID, &w.Launches, &first, &updated, &w.Source)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("workflow job: %w", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(labels), &w.Labels)
	if jobID.Valid {
		id := jobID.Int64
		w.JobID = &id
	}
	w.FirstSeen, w.UpdatedAt = fromMS(first), fromMS(updated)
	return &w, nil
}

const runnerJobSelect = `SELECT r.job_id, j.build_id, p.name, r.pool, r.gh_job_id, r.name, r.owner, r.repo, r.installation_id, r.runner_id,
	r.gh_status, r.online_at, r.idle_since, r.created_at, j.status, j.attempt, j.cancel_requested, j.started_at, j.finished_at, j.error,
	COALESCE(w.html_url, ''), COALESCE(w.status, ''), COALESCE(w.runner_name, '')
	FROM actions_runners r JOIN jobs j ON j.id = r.job_id JOIN builds b ON b.id = j.build_id JOIN projects p ON p.id = b.project_id
	LEFT JOIN actions_jobs w ON w.gh_job_id = r.gh_job_id`

func scanRunnerJob(row interface{ Scan(...any) error }) (*RunnerJob, error) {
	var r RunnerJob
	var online, idle, started, finished sql.NullInt64
	var created int64
	var cancel int
	err := row.Scan(&r.JobID, &r.BuildID, &r.Project, &r.Pool, &r.GHJobID, &r.Name, &r.Owner, &r.Repo, &r.InstallationID, &r.RunnerID,
		&r.GHStatus, &online, &idle, &created, &r.Status, &r.Attempt, &cancel, &started, &finished, &r.Error,
		&r.HTMLURL, &r.JobStatus, &r.JobRunner)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("runner job: %w", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	r.OnlineAt, r.IdleSince, r.StartedAt, r.FinishedAt = nullTime(online), nullTime(idle), nullTime(started), nullTime(finished)
	r.CreatedAt, r.CancelRequested = fromMS(created), cancel != 0
	r.Warm = r.GHJobID == 0 || strings.HasPrefix(r.Name, WarmRunnerPrefix)
	return &r, nil
}

// RunnerName is the GitHub name of the n-th runner job (from 1) started
// for GitHub job ghJobID: kiln-<id>, then kiln-<id>-<n>. One name per
// launch, so a retried attempt re-registers the same runner (GitHub
// refuses a second runner of that name) and never adds one.
func RunnerName(ghJobID int64, n int) string {
	if n <= 1 {
		return fmt.Sprintf("kiln-%d", ghJobID)
	}
	return fmt.Sprintf("kiln-%d-%d", ghJobID, n)
}

// RecordWorkflowJob records what GitHub said about a workflow job, in one
// transaction: the delivery (a repeated delivery id changes nothing), the
// job's status (only forward: queued < in_progress < completed; a step
// back or a repeat changes nothing), the repository (for the
// reconciler), and, for a job that is queued and has no runner job, its
// runner job (a build of the repository's project, made if needed).
//
// When GitHub says a runner Kiln started for job A took job B (runner
// names are per job, but GitHub gives an idle runner any queued job its
// labels fit), the runner jobs of A and B are exchanged, so that each job
// points at the runner job that serves it and A is left with B's (not yet
// running, or ended: then the reconciler relaunches A).
func (s *Store) RecordWorkflowJob(ctx context.Context, u WorkflowJobUpdate) (*WorkflowJobResult, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	res, err := s.recordWorkflowJobTx(ctx, tx, u)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return res, nil
}

func (s *Store) recordWorkflowJobTx(ctx context.Context, tx *dbTx, u WorkflowJobUpdate) (*WorkflowJobResult, error) {
	now := s.nowMS()
	g := u.Job
	res := &WorkflowJobResult{}
	if u.DeliveryID != "" {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM actions_deliveries WHERE id = ?`, u.DeliveryID).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			res.Duplicate = true
			cur, err := scanWorkflowJob(tx.QueryRowContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE gh_job_id = ?`, g.ID))
			if err == nil {
				res.Job = *cur
				res.Prev = cur.Status
				if cur.JobID != nil {
					if res.Runner, err = scanRunnerJob(tx.QueryRowContext(ctx, runnerJobSelect+` WHERE r.job_id = ?`, *cur.JobID)); err != nil && !errors.Is(err, ErrNotFound) {
						return nil, err
					}
				}
			}
			return res, nil
		}
	}
	cur, err := scanWorkflowJob(tx.QueryRowContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE gh_job_id = ?`, g.ID))
	switch {
	case errors.Is(err, ErrNotFound):
		res.New, res.Advanced = true, true
		pool := g.Pool
		if u.Launch != nil && u.Launch.Pool != nil {
			pool = u.Launch.Pool.Name
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO actions_jobs (`+workflowJobCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?)`,
			g.ID, g.RunID, g.RunAttempt, g.Owner, g.Repo, g.Name, g.Workflow, marshalLabels(g.Labels), g.Status, g.Conclusion, pool, g.InstallationID,
			g.HTMLURL, g.HeadBranch, g.HeadSHA, g.RunnerName, now, now, u.Source); err != nil {
			return nil, fmt.Errorf("record workflow job: %w", err)
		}
	case err != nil:
		return nil, err
	default:
		res.Prev = cur.Status
		if GHStatusRank(g.Status) > GHStatusRank(cur.Status) {
			res.Advanced = true
			if _, err := tx.ExecContext(ctx, `UPDATE actions_jobs SET status = ?, conclusion = ?, runner_name = CASE WHEN ? = '' THEN runner_name ELSE ? END,
				html_url = CASE WHEN html_url = '' THEN ? ELSE html_url END, updated_at = ?, source = ? WHERE gh_job_id = ?`,
				g.Status, g.Conclusion, g.RunnerName, g.RunnerName, g.HTMLURL, now, u.Source, g.ID); err != nil {
				return nil, err
			}
		} else if g.Status == cur.Status && g.Status != GHQueued && cur.RunnerName == "" && g.RunnerName != "" {
			// The same status with what was missing (a reconciler's
			// in_progress after a webhook that named no runner): fill in.
			if _, err := tx.ExecContext(ctx, `UPDATE actions_jobs SET runner_name = ?, updated_at = ? WHERE gh_job_id = ?`, g.RunnerName, now, g.ID); err != nil {
				return nil, err
			}
		}
	}
	if owner, repo := strings.ToLower(g.Owner), strings.ToLower(g.Repo); owner != "" && repo != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO actions_repos (owner, repo, installation_id, last_seen) VALUES (?, ?, ?, ?)
			ON CONFLICT (owner, repo) DO UPDATE SET installation_id = excluded.installation_id, last_seen = excluded.last_seen`,
			owner, repo, g.InstallationID, now); err != nil {
			return nil, err
		}
	}

	if res.Advanced && g.RunnerName != "" && GHStatusRank(g.Status) >= GHStatusRank(GHInProgress) {
		if res.Swapped, err = s.swapRunnerJobs(ctx, tx, g.ID, g.RunnerName, now); err != nil {
			return nil, err
		}
	}

	after, err := scanWorkflowJob(tx.QueryRowContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE gh_job_id = ?`, g.ID))
	if err != nil {
		return nil, err
	}
	if u.Launch != nil && u.Launch.Decide != nil && after.Status == GHQueued && (res.Advanced || u.Relaunch) {
		f, err := s.launchFactsTx(ctx, tx, after, u)
		if err != nil {
			return nil, err
		}
		switch d := u.Launch.Decide(f); {
		case d.AwaitWarm > 0:
			if !f.WarmWaiting {
				if _, err := tx.ExecContext(ctx, `UPDATE actions_jobs SET warm_until = ?, pool = ?, updated_at = ? WHERE gh_job_id = ?`,
					now+d.AwaitWarm.Milliseconds(), u.Launch.Pool.Name, now, g.ID); err != nil {
					return nil, err
				}
			}
			res.Warm = true
		case d.Launch:
			id, err := s.createRunnerJob(ctx, tx, after, u, now)
			if err != nil {
				return nil, err
			}
			if res.Created, err = scanRunnerJob(tx.QueryRowContext(ctx, runnerJobSelect+` WHERE r.job_id = ?`, id)); err != nil {
				return nil, err
			}
			if after, err = scanWorkflowJob(tx.QueryRowContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE gh_job_id = ?`, g.ID)); err != nil {
				return nil, err
			}
		}
	}
	res.Job = *after
	if after.JobID != nil {
		if res.Runner, err = scanRunnerJob(tx.QueryRowContext(ctx, runnerJobSelect+` WHERE r.job_id = ?`, *after.JobID)); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if u.DeliveryID != "" {
		result := "recorded"
		switch {
		case res.Created != nil:
			result = "runner"
		case !res.Advanced:
			result = "unchanged"
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO actions_deliveries (id, action, gh_job_id, result, received_at) VALUES (?, ?, ?, ?, ?)`,
			u.DeliveryID, u.Action, g.ID, result, now); err != nil {
			return nil, fmt.Errorf("record delivery: %w", err)
		}
	}
	return res, nil
}

// launchFactsTx gathers what the launch policy decides from, for queued
// job w.
func (s *Store) launchFactsTx(ctx context.Context, tx *dbTx, w *WorkflowJob, u WorkflowJobUpdate) (LaunchFacts, error) {
	f := LaunchFacts{HasRunnerJob: w.JobID != nil, Relaunch: u.Relaunch, Launches: w.Launches}
	if f.HasRunnerJob {
		var st string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM jobs WHERE id = ?`, *w.JobID).Scan(&st); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return f, err
		}
		f.RunnerJobEnded = st == "" || Status(st).Terminal()
	}
	var until sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT warm_until FROM actions_jobs WHERE gh_job_id = ?`, w.ID).Scan(&until); err != nil {
		return f, err
	}
	f.WarmWaiting = until.Valid && until.Int64 > s.nowMS()
	f.WarmWaited = until.Valid && !f.WarmWaiting
	if u.Launch.Pool != nil && u.Launch.Pool.Warm > 0 {
		idle, err := idleWarmTx(ctx, tx, u.Launch.Pool.Name)
		if err != nil {
			return f, err
		}
		f.IdleWarm = idle
	}
	return f, nil
}

// warmAvailableSQL counts a pool's live warm runner jobs (not canceled,
// their runner not seen busy) minus the queued jobs that expect one.
const warmAvailableSQL = `SELECT
	(SELECT COUNT(*) FROM actions_runners r JOIN jobs j ON j.id = r.job_id WHERE r.pool = ? AND r.gh_job_id = 0
		AND j.status IN ('queued', 'running') AND j.cancel_requested = 0 AND r.gh_status != 'busy')
	- (SELECT COUNT(*) FROM actions_jobs WHERE pool = ? AND status = 'queued' AND job_id IS NULL AND warm_until IS NOT NULL)`

// idleWarmTx is the number of a pool's warm runners no job expects yet
// (negative when more jobs expect one than there are).
func idleWarmTx(ctx context.Context, tx *dbTx, pool string) (int, error) {
	var n int
	err := tx.QueryRowContext(ctx, warmAvailableSQL, pool, pool).Scan(&n)
	return n, err
}

// WarmPending counts a pool's queued jobs that expect a warm runner.
func (s *Store) WarmPending(ctx context.Context, pool string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM actions_jobs WHERE pool = ? AND status = 'queued' AND job_id IS NULL AND warm_until IS NOT NULL`, pool).Scan(&n)
	return n, err
}

// ExpiredWarmJobs lists the queued jobs without a runner job whose wait
// for a warm runner ended at or before now.
func (s *Store) ExpiredWarmJobs(ctx context.Context, now time.Time, limit int) ([]*WorkflowJob, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE status = 'queued' AND job_id IS NULL
		AND warm_until IS NOT NULL AND warm_until <= ? ORDER BY warm_until, gh_job_id LIMIT ?`, ms(now), limit)
	return collect(rows, err, scanWorkflowJob)
}

// TopUpWarm makes as many warm runner jobs for l.Pool as howMany says,
// given the pool's counts as stored now (in the same transaction), and
// returns those it made.
func (s *Store) TopUpWarm(ctx context.Context, l *LaunchSpec, howMany func(WarmCounts) int) ([]*RunnerJob, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var want, maxRunners, live int
	err = tx.QueryRowContext(ctx, `SELECT warm, max_runners FROM pools WHERE name = ?`, l.Pool.Name).Scan(&want, &maxRunners)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	idle, err := idleWarmTx(ctx, tx, l.Pool.Name)
	if err != nil {
		return nil, err
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE pool = ? AND status IN ('queued', 'running') AND cancel_requested = 0`, l.Pool.Name).Scan(&live); err != nil {
		return nil, err
	}
	now := s.nowMS()
	var ids []int64
	for n := howMany(WarmCounts{Want: want, Idle: idle, MaxRunners: maxRunners, Live: live}); n > 0; n-- {
		id, err := s.insertRunnerJob(ctx, tx, l, &Build{Trigger: TriggerGitHubActions, Forge: "github", Message: l.Message, Author: "github-actions"}, 0,
			func(jobID int64) string { return WarmRunnerName(l.Pool.Name, jobID) }, now)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	var out []*RunnerJob
	for _, id := range ids {
		r, err := s.RunnerJob(ctx, id)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// swapRunnerJobs makes the runner job whose runner is named runnerName
// serve job ghJobID, and gives that job's former runner job (if any) to the
// job the runner was started for.
func (s *Store) swapRunnerJobs(ctx context.Context, tx *dbTx, ghJobID int64, runnerName string, now int64) (bool, error) {
	var runnerJob, other int64
	err := tx.QueryRowContext(ctx, `SELECT job_id, gh_job_id FROM actions_runners WHERE name = ?`, runnerName).Scan(&runnerJob, &other)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && other == ghJobID) {
		return false, nil // not Kiln's runner, or already this job's
	}
	if err != nil {
		return false, err
	}
	// The other job must not itself be recorded as run by this runner (a
	// runner runs one job): then this report is the stale one.
	var otherRunner string
	_ = tx.QueryRowContext(ctx, `SELECT runner_name FROM actions_jobs WHERE gh_job_id = ?`, other).Scan(&otherRunner)
	if strings.EqualFold(otherRunner, runnerName) {
		return false, nil
	}
	var mine sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT job_id FROM actions_jobs WHERE gh_job_id = ?`, ghJobID).Scan(&mine); err != nil {
		return false, err
	}
	type stmt struct {
		q    string
		args []any
	}
	// In this order: the unique index on actions_jobs.job_id must hold
	// after every statement.
	steps := []stmt{
		{`UPDATE actions_jobs SET job_id = NULL WHERE gh_job_id IN (?, ?)`, []any{ghJobID, other}},
		{`UPDATE actions_jobs SET job_id = ?, updated_at = ? WHERE gh_job_id = ?`, []any{runnerJob, now, ghJobID}},
		{`UPDATE actions_runners SET gh_job_id = ?, updated_at = ? WHERE job_id = ?`, []any{ghJobID, now, runnerJob}},
	}
	if mine.Valid {
		steps = append(steps,
			stmt{`UPDATE actions_jobs SET job_id = ?, updated_at = ? WHERE gh_job_id = ?`, []any{mine.Int64, now, other}},
			stmt{`UPDATE actions_runners SET gh_job_id = ?, updated_at = ? WHERE job_id = ?`, []any{other, now, mine.Int64}})
	}
	for _, st := range steps {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return false, fmt.Errorf("swap runner jobs: %w", err)
		}
	}
	return true, nil
}

// createRunnerJob makes the build, job and runner record of a launch.
func (s *Store) createRunnerJob(ctx context.Context, tx *dbTx, w *WorkflowJob, u WorkflowJobUpdate, now int64) (int64, error) {
	l := u.Launch
	b := &Build{Trigger: TriggerGitHubActions, Forge: "github", DeliveryID: u.DeliveryID,
		Branch: w.HeadBranch, Commit: w.HeadSHA, Message: l.Message, Author: "github-actions"}
	if w.HeadBranch != "" {
		b.Ref = "refs/heads/" + w.HeadBranch
	}
	n := w.Launches + 1
	jobID, err := s.insertRunnerJob(ctx, tx, l, b, w.ID, func(int64) string { return RunnerName(w.ID, n) }, now)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE actions_jobs SET job_id = ?, launches = ?, pool = ?, updated_at = ? WHERE gh_job_id = ?`, jobID, n, l.Pool.Name, now, w.ID); err != nil {
		return 0, err
	}
	return jobID, nil
}

// insertRunnerJob makes build b (in the project of l) with its one runner
// job and the runner record (for GitHub job ghJobID, 0 for a warm runner),
// named by name from the Kiln job's id.
func (s *Store) insertRunnerJob(ctx context.Context, tx *dbTx, l *LaunchSpec, b *Build, ghJobID int64, name func(int64) string, now int64) (int64, error) {
	projectID, err := s.repoProject(ctx, tx, l)
	if err != nil {
		return 0, err
	}
	b.ProjectID = projectID
	if err := s.insertBuild(ctx, tx, b); err != nil {
		return 0, err
	}
	// Nothing to plan: the runner job is made here.
	if _, err := tx.ExecContext(ctx, `UPDATE builds SET planned = 1 WHERE id = ?`, b.ID); err != nil {
		return 0, err
	}
	maxAttempts := l.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = 3
	}
	var jobID int64
	err = tx.QueryRowContext(ctx, `INSERT INTO jobs (build_id, project_id, name, status, spec, labels, timeout_seconds, max_attempts, queued_at, pool) VALUES (?, ?, 'runner', 'queued', ?, ?, ?, ?, ?, ?) RETURNING id`,
		b.ID, b.ProjectID, l.Spec, marshalLabels(l.Pool.AgentLabels), l.Pool.TimeoutSeconds, maxAttempts, now, l.Pool.Name).Scan(&jobID)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO actions_runners (job_id, pool, gh_job_id, name, owner, repo, installation_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		jobID, l.Pool.Name, ghJobID, name(jobID), l.Pool.Owner, l.Pool.Repo, l.Pool.InstallationID, now, now); err != nil {
		return 0, fmt.Errorf("create runner record: %w", err)
	}
	return jobID, nil
}

// repoProject finds the project of a repository by clone URL (with or
// without .git), or makes one named l.ProjectName (or -2, -3, ... when
// that name is taken by another repository). It has no webhook secret:
// pushes to it are not built unless the user sets one.
func (s *Store) repoProject(ctx context.Context, tx *dbTx, l *LaunchSpec) (int64, error) {
	bare := strings.TrimSuffix(l.CloneURL, ".git")
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM projects WHERE lower(clone_url) IN (lower(?), lower(?)) ORDER BY id LIMIT 1`, bare, bare+".git").Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	secret, err := s.seal("")
	if err != nil {
		return 0, err
	}
	branch := l.DefaultBranch
	if branch == "" {
		branch = "main"
	}
	for i := 1; i <= 20; i++ {
		name := l.ProjectName
		if i > 1 {
			suffix := fmt.Sprintf("-%d", i)
			name = name[:min(len(name), 63-len(suffix))] + suffix
		}
		// A name taken is no row (not an error: on PostgreSQL that would
		// abort the transaction).
		err := tx.QueryRowContext(ctx, `INSERT INTO projects (name, clone_url, default_branch, webhook_secret, cancel_superseded, created_at) VALUES (?, ?, ?, ?, 0, ?)
			ON CONFLICT (name) DO NOTHING RETURNING id`,
			name, l.CloneURL, branch, secret, s.nowMS()).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("create project %s: %w", name, err)
		}
		return id, nil
	}
	return 0, fmt.Errorf("create project for %s: every name like %q is taken: %w", l.CloneURL, l.ProjectName, ErrConflict)
}

// WorkflowJob returns a workflow job Kiln knows.
func (s *Store) WorkflowJob(ctx context.Context, ghJobID int64) (*WorkflowJob, error) {
	return scanWorkflowJob(s.db.QueryRowContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE gh_job_id = ?`, ghJobID))
}

// QueuedWorkflowJobs lists the repository's jobs Kiln last saw queued,
// least recently updated first, at most limit.
func (s *Store) QueuedWorkflowJobs(ctx context.Context, owner, repo string, limit int) ([]*WorkflowJob, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+workflowJobCols+` FROM actions_jobs WHERE lower(owner) = lower(?) AND lower(repo) = lower(?) AND status = 'queued'
		ORDER BY updated_at, gh_job_id LIMIT ?`, owner, repo, limit)
	return collect(rows, err, scanWorkflowJob)
}

// collect scans every row of a query with scan.
func collect[T any](rows *sql.Rows, err error, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ActionsRepo is a repository a workflow_job webhook named.
type ActionsRepo struct {
	Owner, Repo    string
	InstallationID int64
	LastSeen       time.Time
}

// ActionsRepos lists the repositories seen since since.
func (s *Store) ActionsRepos(ctx context.Context, since time.Time) ([]ActionsRepo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT owner, repo, installation_id, last_seen FROM actions_repos WHERE last_seen >= ? ORDER BY owner, repo`, ms(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ActionsRepo
	for rows.Next() {
		var r ActionsRepo
		var seen int64
		if err := rows.Scan(&r.Owner, &r.Repo, &r.InstallationID, &seen); err != nil {
			return nil, err
		}
		r.LastSeen = fromMS(seen)
		out = append(out, r)
	}
	return out, rows.Err()
}

// RunnerJob returns the runner record of Kiln job jobID (ErrNotFound when
// it is not a runner job).
func (s *Store) RunnerJob(ctx context.Context, jobID int64) (*RunnerJob, error) {
	return scanRunnerJob(s.db.QueryRowContext(ctx, runnerJobSelect+` WHERE r.job_id = ?`, jobID))
}

// RunnerFilter selects runner jobs for ListRunnerJobs.
type RunnerFilter struct {
	// Since keeps live runner jobs and those that finished at or after it
	// (zero: all).
	Since time.Time
	Pool  string
	Limit int // default 500
}

// ListRunnerJobs returns runner jobs, newest first.
func (s *Store) ListRunnerJobs(ctx context.Context, f RunnerFilter) ([]*RunnerJob, error) {
	q := runnerJobSelect + ` WHERE 1 = 1`
	var args []any
	if !f.Since.IsZero() {
		q += ` AND (j.status IN ('queued', 'running') OR COALESCE(j.finished_at, r.updated_at) >= ?)`
		args = append(args, ms(f.Since))
	}
	if f.Pool != "" {
		q += ` AND r.pool = ?`
		args = append(args, f.Pool)
	}
	if f.Limit <= 0 {
		f.Limit = 500
	}
	q += fmt.Sprintf(` ORDER BY r.job_id DESC LIMIT %d`, f.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	return collect(rows, err, scanRunnerJob)
}

// SetRunnerRegistered records the GitHub id of the runner a launch
// registered (its JIT configuration was made).
func (s *Store) SetRunnerRegistered(ctx context.Context, jobID, runnerID int64) error {
	res, err := s.db.ExecContext(ctx, `UPDATE actions_runners SET runner_id = ?, gh_status = 'offline', online_at = NULL, idle_since = NULL, updated_at = ? WHERE job_id = ?`,
		runnerID, s.nowMS(), jobID)
	return mustAffect(res, err, "runner job")
}

// SetRunnerSeen records how the reaper saw the runner on GitHub: status
// ("online", "offline", or "gone" when GitHub does not list it) and busy.
// online_at is set the first time it is online; idle_since while it is
// online and not busy.
func (s *Store) SetRunnerSeen(ctx context.Context, jobID int64, status string, busy bool) error {
	now := s.nowMS()
	gh := status
	if busy {
		gh = "busy"
	}
	online := status == "online"
	_, err := s.db.ExecContext(ctx, `UPDATE actions_runners SET gh_status = ?,
		online_at = CASE WHEN ? = 1 THEN COALESCE(online_at, ?) ELSE online_at END,
		idle_since = CASE WHEN ? = 1 THEN COALESCE(idle_since, ?) ELSE NULL END,
		updated_at = ? WHERE job_id = ?`, gh, boolInt(online), now, boolInt(online && !busy), now, now, jobID)
	return err
}

// RetryJobLater ends a runner job's attempt as an error that does not
// count against its attempts (GitHub's rate limit, not a fault of the
// job): the job is queued again after delay.
func (s *Store) RetryJobLater(ctx context.Context, jobID int64, attempt int, msg string, delay time.Duration) (Status, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, _, err := fence(ctx, tx, jobID, attempt, 0); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET max_attempts = max_attempts + 1 WHERE id = ?`, jobID); err != nil {
		return "", err
	}
	final, err := s.finishTx(ctx, tx, jobID, attempt, StatusError, nil, msg, delay)
	if err != nil {
		return "", err
	}
	return final, tx.Commit()
}

// CountRunnerJobs counts the live runner jobs by State, for the
// kiln_actions_runners gauge.
func (s *Store) CountRunnerJobs(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, runnerJobSelect+` WHERE j.status IN ('queued', 'running')`)
	live, err := collect(rows, err, scanRunnerJob)
	out := map[string]int{}
	for _, r := range live {
		out[r.State()]++
	}
	return out, err
}

// RunnerStates are the states State returns.
var RunnerStates = []string{"queued", "starting", "online", "busy", "done"}

// State is the runner job's state as the API shows it: queued (the Kiln
// job waits for an agent), starting (the sandbox runs, the runner is not
// online yet), online (registered and idle), busy (running a GitHub job),
// done (the Kiln job ended).
func (r *RunnerJob) State() string {
	switch {
	case r.Status == StatusQueued:
		return "queued"
	case r.Status.Terminal():
		return "done"
	case r.GHStatus == "busy" || (r.JobStatus == GHInProgress && strings.EqualFold(r.JobRunner, r.Name)):
		return "busy"
	case r.GHStatus == "online":
		return "online"
	}
	return "starting"
}

// SetClock replaces the store's clock (tests of other packages move time
// without sleeping).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// SetPoolWarm changes the number of warm runners a pool keeps (the Actions
// service then starts or cancels warm runner jobs).
func (s *Store) SetPoolWarm(ctx context.Context, name string, warm int) error {
	res, err := s.db.ExecContext(ctx, `UPDATE pools SET warm = ? WHERE name = ?`, warm, name)
	return mustAffect(res, err, "pool")
}
