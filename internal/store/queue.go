package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

const jobCols = `id, build_id, name, status, spec, labels, timeout_seconds, attempt, max_attempts, agent_id, lease_expires, cancel_requested,
	exit_code, error, queued_at, not_before, started_at, finished_at, pool, image_digest`

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func marshalLabels(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func scanJob(row interface{ Scan(...any) error }) (*Job, error) {
	var j Job
	var labels string
	var cancel int
	var lease, notBefore, started, finished, exit sql.NullInt64
	var queued int64
	err := row.Scan(&j.ID, &j.BuildID, &j.Name, &j.Status, &j.Spec, &labels, &j.TimeoutSeconds, &j.Attempt, &j.MaxAttempts, &j.AgentID, &lease, &cancel,
		&exit, &j.Error, &queued, &notBefore, &started, &finished, &j.Pool, &j.ImageDigest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job: %w", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(labels), &j.Labels)
	j.CancelRequested = cancel != 0
	j.LeaseExpires, j.NotBefore, j.StartedAt, j.FinishedAt = nullTime(lease), nullTime(notBefore), nullTime(started), nullTime(finished)
	j.ExitCode = nullInt(exit)
	j.QueuedAt = fromMS(queued)
	return &j, nil
}

func (s *Store) jobsOfBuild(ctx context.Context, q querier, buildID int64) ([]*Job, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE build_id = ? ORDER BY id`, buildID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func (s *Store) Job(ctx context.Context, id int64) (*Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
	if err != nil {
		return nil, err
	}
	j.Steps, err = s.steps(ctx, j.ID, j.Attempt)
	return j, err
}

func (s *Store) steps(ctx context.Context, jobID int64, attempt int) ([]*Step, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT idx, name, status, exit_code, started_at, finished_at FROM steps WHERE job_id = ? AND attempt = ? ORDER BY idx`, jobID, attempt)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Step
	for rows.Next() {
		st := Step{JobID: jobID, Attempt: attempt}
		var exit, started, finished sql.NullInt64
		if err := rows.Scan(&st.Index, &st.Name, &st.Status, &exit, &started, &finished); err != nil {
			return nil, err
		}
		st.ExitCode, st.StartedAt, st.FinishedAt = nullInt(exit), nullTime(started), nullTime(finished)
		out = append(out, &st)
	}
	return out, rows.Err()
}

// Claim describes the agent asking for a job.
type Claim struct {
	AgentID string
	Labels  []string
	Lease   time.Duration
	// AffinityWait is how long a job with sticky caches waits for an agent
	// holding its project's volumes (a live one) before any agent may take it.
	AffinityWait time.Duration
	// AliveWithin says which agents count as live holders: seen this recently.
	AliveWithin time.Duration
	// StepNames reads the step names from a job's spec (for its step rows).
	StepNames func(spec []byte) []string
	// Token is the id of the agent token claiming: only it may write the
	// attempt (see AgentWrites).
	Token int64
	// RetryElsewhere: a job whose last attempt ended in error on this
	// agent is left to other agents until it has been claimable this long
	// (0: not at all). The scheduler sets it only while another agent can
	// take the job, so a job is never starved by it.
	RetryElsewhere time.Duration
	// Order puts the projects that have claimable jobs in the order the
	// claim tries them: the scheduling policy (see fair.go). nil: the
	// project whose oldest job was queued first goes first (first in,
	// first out).
	Order func([]ProjectLoad)
	// DefaultMaxRunning caps the running jobs of a project that sets no
	// cap of its own (0: no cap).
	DefaultMaxRunning int
	// Fits, when set, says whether the agent can give a job the resources
	// its spec asks for (resources is the spec's "resources" object as JSON,
	// or empty); a job that does not fit is left to other agents.
	Fits func(resources []byte) bool
}

// ClaimJob leases a runnable queued job whose labels the agent carries all
// of: the oldest of the first project in c.Order that has one, among the
// projects under their cap on running jobs (fair.go). It returns nil, nil
// when there is none. The claim is one conditional UPDATE (status still
// 'queued', the project and the pool still under their caps), so two
// agents can never both win the same job nor overrun a cap; the attempt
// number it bumps fences every later write.
//
// Affinity ("bring the compute to the data"): a job with sticky caches is
// skipped by an agent that does not hold its project's volumes while a live
// agent that does exists, until the job has waited AffinityWait. The wait
// is bounded so a busy or dying holder never starves the job.
func (s *Store) ClaimJob(ctx context.Context, c Claim) (*Job, error) {
	now := s.nowMS()
	holders, err := s.warmHolders(ctx, now-c.AliveWithin.Milliseconds())
	if err != nil {
		return nil, err
	}
	var erredHere map[int64]bool
	if c.RetryElsewhere > 0 {
		if erredHere, err = s.retriedOn(ctx, c.AgentID, now-c.RetryElsewhere.Milliseconds()); err != nil {
			return nil, err
		}
	}
	// Projects in the policy's order (fair.go), each one's oldest jobs
	// first. A runner job (pool set) is a candidate only while its pool
	// runs fewer than max_runners; a job of a deleted pool never is. Full
	// pools are left out in SQL, so a burst of runner jobs cannot fill the
	// window and starve everything queued after it.
	loads, err := s.projectLoads(ctx, now, c.DefaultMaxRunning)
	if err != nil || len(loads) == 0 {
		return nil, err
	}
	if c.Order != nil {
		c.Order(loads)
	} else {
		oldestFirst(loads)
	}
	for _, l := range loads[:min(len(loads), fairProjects)] {
		j, err := s.claimOfProject(ctx, c, l.ProjectID, holders[l.ProjectID], erredHere, now)
		if err != nil || j != nil {
			return j, err
		}
	}
	return nil, nil
}

// claimOfProject claims the oldest of the project's first fairPerProject
// queued jobs that the agent may take, if any.
func (s *Store) claimOfProject(ctx context.Context, c Claim, projectID int64, holders map[string]bool, erredHere map[int64]bool, now int64) (*Job, error) {
	rows, err := s.db.QueryContext(ctx, candidatesQuery, projectID, now)
	if err != nil {
		return nil, err
	}
	var candidates []int64
	for rows.Next() {
		var id, since int64
		var labels string
		var spec []byte
		var sticky int
		if err := rows.Scan(&id, &labels, &sticky, &since, &spec); err != nil {
			rows.Close()
			return nil, err
		}
		var need []string
		_ = json.Unmarshal([]byte(labels), &need)
		if !hasAll(c.Labels, need) {
			continue
		}
		if c.Fits != nil && !c.Fits(specResources(spec)) {
			continue // more than this agent's limits: another agent's
		}
		if sticky != 0 && len(holders) > 0 && !holders[c.AgentID] && now < since+c.AffinityWait.Milliseconds() {
			continue // leave it to a holder of its volumes, for now
		}
		if erredHere[id] {
			continue // its last attempt failed here: another agent first
		}
		candidates = append(candidates, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return s.claimFirst(ctx, candidates, c, now)
}

// warmHolders maps project id to the live agents holding its sticky volumes.
func (s *Store) warmHolders(ctx context.Context, aliveSince int64) (map[int64]map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT w.project_id, w.agent_id FROM agent_warm w JOIN agents a ON a.id = w.agent_id WHERE a.last_seen >= ?`, aliveSince)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]map[string]bool{}
	for rows.Next() {
		var pid int64
		var agent string
		if err := rows.Scan(&pid, &agent); err != nil {
			return nil, err
		}
		if out[pid] == nil {
			out[pid] = map[string]bool{}
		}
		out[pid][agent] = true
	}
	return out, rows.Err()
}

// SetWarm records the projects (by name) whose sticky volumes an agent holds.
func (s *Store) SetWarm(ctx context.Context, agentID string, projects []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM agent_warm WHERE agent_id = ?`, agentID); err != nil {
		return err
	}
	for _, name := range projects {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agent_warm (agent_id, project_id) SELECT ?, id FROM projects WHERE name = ? ON CONFLICT DO NOTHING`, agentID, name); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// poolHasRoom is an SQL condition: the pool of the job row t runs fewer
// runner jobs than its max_runners (false when the pool is gone).
func poolHasRoom(t string) string {
	return `(SELECT COUNT(*) FROM jobs r WHERE r.pool = ` + t + `.pool AND r.status = 'running') < COALESCE((SELECT p.max_runners FROM pools p WHERE p.name = ` + t + `.pool), 0)`
}

func hasAll(have, need []string) bool {
	for _, n := range need {
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}

// claimFirst claims the first of candidates that is still claimable, in
// one transaction. The candidates were read before the write lock, so
// other agents may have taken some since: under the lock it reads which
// are still queued and tries those in order, each with the claim's
// conditional UPDATE, until one is won. (A transaction per candidate, as
// before, sent an agent that lost the oldest job to the back of the
// lock's queue to try the next: with 20 agents on PostgreSQL, 15
// transactions rolled back per job claimed; bench/ctlbench.)
func (s *Store) claimFirst(ctx context.Context, candidates []int64, c Claim, now int64) (*Job, error) {
	if len(candidates) == 0 {
		return nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	queued, err := stillQueued(ctx, tx, candidates)
	if err != nil {
		return nil, err
	}
	for _, id := range candidates {
		if !queued[id] {
			continue // taken meanwhile
		}
		j, err := s.claimInTx(ctx, tx, id, c, now)
		if err != nil || j != nil {
			if err == nil {
				err = tx.Commit()
			}
			return j, err
		}
	}
	return nil, nil
}

// stillQueued is which of ids are queued now.
func stillQueued(ctx context.Context, tx *dbTx, ids []int64) (map[int64]bool, error) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := tx.QueryContext(ctx, `SELECT id FROM jobs WHERE status = 'queued' AND id IN (?`+strings.Repeat(", ?", len(ids)-1)+`)`, args...)
	if err != nil {
		return nil, err
	}
	return idSet(rows)
}

// claimInTx claims job id in tx, under the write lock: nil, nil when the
// job is no longer claimable (another agent won it, it was canceled, a
// cap is full).
func (s *Store) claimInTx(ctx context.Context, tx *dbTx, id int64, c Claim, now int64) (*Job, error) {
	// The pool and project caps are checked again inside the claim's
	// (immediate, so serialized) transaction: two agents that both saw
	// room for one more runner, or one more job of a capped project,
	// cannot both take it.
	// A new attempt's cache restores are its own (the job keeps its last
	// attempt's); first_started_at ends the job's queue time (insights).
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET status = 'running', attempt = attempt + 1, agent_id = ?, lease_expires = ?, started_at = ?, finished_at = NULL, exit_code = NULL, error = '',
		first_started_at = COALESCE(first_started_at, ?), cache_restores = 0, cache_hits = 0, cache_bytes_restored = 0
		WHERE id = ? AND status = 'queued' AND cancel_requested = 0 AND (pool = '' OR `+poolHasRoom("jobs")+`)
		AND `+projectHasRoom("jobs", c.DefaultMaxRunning), c.AgentID, now+c.Lease.Milliseconds(), now, now, id)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, nil // another agent won it, or a cap is full
	}
	// The token that claimed fences every write of the attempt (see fence).
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET lease_token = ? WHERE id = ?`, c.Token, id); err != nil {
		return nil, err
	}
	j, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO job_attempts (job_id, attempt, agent_id, status, started_at) VALUES (?, ?, ?, 'running', ?)`, id, j.Attempt, c.AgentID, now); err != nil {
		return nil, err
	}
	for i, name := range c.StepNames(j.Spec) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO steps (job_id, attempt, idx, name, status) VALUES (?, ?, ?, ?, 'queued')`, id, j.Attempt, i, name); err != nil {
			return nil, err
		}
	}
	if err := s.refreshBuild(ctx, tx, j.BuildID); err != nil {
		return nil, err
	}
	return j, nil
}

// fence checks, inside tx, that attempt still holds the job's lease and,
// when by is an agent token (not 0, the server's own writes), that this
// token claimed it: an attempt is written only by the agent that holds it.
// A write of another attempt is ErrStaleAttempt; a write of the current
// attempt by another agent token is ErrNotYourLease.
func fence(ctx context.Context, tx *dbTx, jobID int64, attempt int, by int64) (buildID int64, cancel bool, err error) {
	var status, agent string
	var cur, c int
	var holder int64
	err = tx.QueryRowContext(ctx, `SELECT build_id, status, attempt, cancel_requested, agent_id, lease_token FROM jobs WHERE id = ?`, jobID).Scan(&buildID, &status, &cur, &c, &agent, &holder)
	if errors.Is(err, sql.ErrNoRows) {
		// The job is gone (its project was deleted): no attempt holds it.
		return 0, false, fmt.Errorf("job %d no longer exists: %w", jobID, ErrStaleAttempt)
	}
	if err != nil {
		return 0, false, err
	}
	if cur != attempt || Status(status) != StatusRunning {
		return 0, false, fmt.Errorf("job %d attempt %d (current attempt %d, %s): %w", jobID, attempt, cur, status, ErrStaleAttempt)
	}
	// holder 0: a lease claimed without a token (before migration 6, agent writes).
	if by != 0 && holder != 0 && holder != by {
		return 0, false, &NotYourLeaseError{JobID: jobID, Attempt: attempt, Holder: agent}
	}
	return buildID, c != 0, nil
}

// Heartbeat renews the lease of a running attempt and tells the agent
// whether the job was canceled. A stale attempt gets ErrStaleAttempt: the
// agent must kill its sandbox and report nothing more.
func (s *Store) Heartbeat(ctx context.Context, jobID int64, attempt int, lease time.Duration) (cancel bool, err error) {
	return s.heartbeat(ctx, jobID, attempt, lease, 0)
}

func (s *Store) heartbeat(ctx context.Context, jobID int64, attempt int, lease time.Duration, by int64) (cancel bool, err error) {
	defer func() { err = s.jobWrote(jobID, err) }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, cancel, err = fence(ctx, tx, jobID, attempt, by); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET lease_expires = ? WHERE id = ?`, s.nowMS()+lease.Milliseconds(), jobID); err != nil {
		return false, err
	}
	return cancel, tx.Commit()
}

// UpdateStep records a step's progress: running (exitCode nil) or a final status.
func (s *Store) UpdateStep(ctx context.Context, jobID int64, attempt, idx int, status Status, exitCode *int) (err error) {
	return s.updateStep(ctx, jobID, attempt, idx, status, exitCode, 0)
}

func (s *Store) updateStep(ctx context.Context, jobID int64, attempt, idx int, status Status, exitCode *int, by int64) (err error) {
	defer func() { err = s.jobWrote(jobID, err) }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, _, err := fence(ctx, tx, jobID, attempt, by); err != nil {
		return err
	}
	now := s.nowMS()
	var res sql.Result
	if status == StatusRunning {
		res, err = tx.ExecContext(ctx, `UPDATE steps SET status = 'running', started_at = ? WHERE job_id = ? AND attempt = ? AND idx = ? AND status = 'queued'`, now, jobID, attempt, idx)
	} else {
		res, err = tx.ExecContext(ctx, `UPDATE steps SET status = ?, exit_code = ?, started_at = COALESCE(started_at, ?), finished_at = ? WHERE job_id = ? AND attempt = ? AND idx = ? AND status IN ('queued', 'running')`,
			string(status), exitCode, now, now, jobID, attempt, idx)
	}
	if err != nil {
		return err
	}
	_ = res // a repeated report of the same transition changes nothing: state moves forward only
	return tx.Commit()
}

// AppendLogs stores lines of a running attempt. Lines are keyed by
// (job, attempt, seq): a batch sent twice is stored once.
func (s *Store) AppendLogs(ctx context.Context, jobID int64, attempt int, lines []LogLine) (err error) {
	return s.appendLogs(ctx, jobID, attempt, lines, 0)
}

func (s *Store) appendLogs(ctx context.Context, jobID int64, attempt int, lines []LogLine, by int64) (err error) {
	defer func() { err = s.jobWrote(jobID, err) }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, _, err := fence(ctx, tx, jobID, attempt, by); err != nil {
		return err
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO log_lines (job_id, attempt, seq, step, ts, text) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, l := range lines {
		if _, err := stmt.ExecContext(ctx, jobID, attempt, l.Seq, l.Step, ms(l.Time), l.Text); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Logs returns a job attempt's stored lines with seq > afterSeq, in order.
// attempt 0 means the job's latest attempt.
func (s *Store) Logs(ctx context.Context, jobID int64, attempt int, afterSeq int64, limit int) ([]LogLine, error) {
	if attempt == 0 {
		if err := s.db.QueryRowContext(ctx, `SELECT attempt FROM jobs WHERE id = ?`, jobID).Scan(&attempt); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("job: %w", ErrNotFound)
			}
			return nil, err
		}
	}
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, step, ts, text FROM log_lines WHERE job_id = ? AND attempt = ? AND seq > ? ORDER BY seq LIMIT ?`, jobID, attempt, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		l := LogLine{JobID: jobID, Attempt: attempt}
		var ts int64
		if err := rows.Scan(&l.Seq, &l.Step, &ts, &l.Text); err != nil {
			return nil, err
		}
		l.Time = fromMS(ts)
		out = append(out, l)
	}
	return out, rows.Err()
}

// FinishJob ends an attempt. An attempt that ends in error is retried (the
// job goes back to queued after retryDelay) while attempts remain, unless the
// job was canceled. It returns the job's status after the call.
func (s *Store) FinishJob(ctx context.Context, jobID int64, attempt int, status Status, exitCode *int, msg string, retryDelay time.Duration) (Status, error) {
	return s.finishReported(ctx, jobID, attempt, status, exitCode, msg, retryDelay, writer{})
}

// writer says who ends an attempt: an agent token (0: the server itself),
// and whether the attempt's end counts toward its agent's record of
// infrastructure errors (see NoteAgentOutcome).
type writer struct {
	token   int64
	outcome bool
}

func (s *Store) finishReported(ctx context.Context, jobID int64, attempt int, status Status, exitCode *int, msg string, retryDelay time.Duration, w writer) (Status, error) {
	final, err := s.finishJob(ctx, jobID, attempt, status, exitCode, msg, retryDelay, w)
	if errors.Is(err, ErrStaleAttempt) || errors.Is(err, ErrNotYourLease) {
		return final, err
	}
	// Once the attempt's end is written, its failed writes are history.
	return final, s.jobWrote(jobID, err)
}

func (s *Store) finishJob(ctx context.Context, jobID int64, attempt int, status Status, exitCode *int, msg string, retryDelay time.Duration, w writer) (Status, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, _, err := fence(ctx, tx, jobID, attempt, w.token); err != nil {
		return "", err
	}
	if w.outcome {
		if err := s.noteAgentOutcome(ctx, tx, jobID, status); err != nil {
			return "", err
		}
	}
	final, err := s.finishTx(ctx, tx, jobID, attempt, status, exitCode, msg, retryDelay)
	if err != nil {
		return "", err
	}
	return final, tx.Commit()
}

func (s *Store) finishTx(ctx context.Context, tx *dbTx, jobID int64, attempt int, status Status, exitCode *int, msg string, retryDelay time.Duration) (Status, error) {
	buildID, cancel, err := fence(ctx, tx, jobID, attempt, 0)
	if err != nil {
		return "", err
	}
	var maxAttempts int
	if err := tx.QueryRowContext(ctx, `SELECT max_attempts FROM jobs WHERE id = ?`, jobID).Scan(&maxAttempts); err != nil {
		return "", err
	}
	now := s.nowMS()
	if cancel && status == StatusError {
		status = StatusCanceled
	}
	if _, err := tx.ExecContext(ctx, `UPDATE job_attempts SET status = ?, error = ?, finished_at = ? WHERE job_id = ? AND attempt = ?`, string(status), msg, now, jobID, attempt); err != nil {
		return "", err
	}
	skipped := StatusSkipped
	if status == StatusCanceled || status == StatusTimedOut || status == StatusError {
		skipped = status
	}
	// Steps that never finished take the job's outcome.
	if _, err := tx.ExecContext(ctx, `UPDATE steps SET status = CASE WHEN status = 'running' THEN ? ELSE ? END, finished_at = ? WHERE job_id = ? AND attempt = ? AND status IN ('queued', 'running')`,
		string(skipped), string(StatusSkipped), now, jobID, attempt); err != nil {
		return "", err
	}
	final := status
	if status == StatusError && attempt < maxAttempts {
		final = StatusQueued
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET status = 'queued', agent_id = '', lease_expires = NULL, error = ?, not_before = ? WHERE id = ?`,
			fmt.Sprintf("attempt %d: %s (retrying)", attempt, msg), now+retryDelay.Milliseconds(), jobID)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET status = ?, lease_expires = NULL, exit_code = ?, error = ?, finished_at = ? WHERE id = ?`,
			string(status), exitCode, msg, now, jobID)
	}
	if err != nil {
		return "", err
	}
	return final, s.refreshBuild(ctx, tx, buildID)
}

// ExpiredLease is a job attempt whose lease ran out.
type ExpiredLease struct {
	JobID   int64
	Attempt int
	AgentID string
	// StoreError is set when the last write the agent made for the job
	// (a heartbeat, step, log batch or finish) failed on the server's
	// side because the store could not write; StoreErrorSince is when such
	// writes began to fail. The agent was then not lost: the server was.
	StoreError      string
	StoreErrorSince time.Time
}

// ExpireLeases ends every running attempt whose lease expired as an error,
// which retries the job while attempts remain. reason gives each its
// message (the caller knows why leases expire; see ExpiredLease).
func (s *Store) ExpireLeases(ctx context.Context, retryDelay time.Duration, reason func(ExpiredLease) string) ([]ExpiredLease, error) {
	return s.failRunning(ctx, `lease_expires < ?`, []any{s.nowMS()}, reason, retryDelay)
}

// ReleaseAgent ends every running attempt leased to agentID as an error.
// An agent calls it (through registration) when it starts, because whatever
// it ran before it restarted is gone.
func (s *Store) ReleaseAgent(ctx context.Context, agentID string, retryDelay time.Duration) ([]ExpiredLease, error) {
	return s.failRunning(ctx, `agent_id = ?`, []any{agentID}, func(ExpiredLease) string { return "agent restarted while the job ran" }, retryDelay)
}

func (s *Store) failRunning(ctx context.Context, cond string, args []any, reason func(ExpiredLease) string, retryDelay time.Duration) ([]ExpiredLease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, attempt, agent_id FROM jobs WHERE status = 'running' AND `+cond, args...)
	if err != nil {
		return nil, err
	}
	var found []ExpiredLease
	for rows.Next() {
		var e ExpiredLease
		if err := rows.Scan(&e.JobID, &e.Attempt, &e.AgentID); err != nil {
			rows.Close()
			return nil, err
		}
		found = append(found, e)
	}
	rows.Close()
	var done []ExpiredLease
	for _, e := range found {
		if f, ok := s.jobWriteFailure(e.JobID); ok {
			e.StoreError, e.StoreErrorSince = f.err, f.since
		}
		// Not FinishJob: the reaper's own failed writes are not the agent's.
		// A lost lease counts against its agent, unless the store failed.
		_, err := s.finishJob(ctx, e.JobID, e.Attempt, StatusError, nil, reason(e), retryDelay, writer{outcome: e.StoreError == ""})
		if err == nil {
			s.forgetJobWrites(e.JobID)
		}
		if err = s.wrote(err); err != nil {
			if errors.Is(err, ErrStaleAttempt) {
				continue // finished meanwhile
			}
			return done, err
		}
		done = append(done, e)
	}
	return done, nil
}

// CancelBuild asks for a build to stop: queued jobs end canceled at once,
// running ones when their agent next heartbeats.
func (s *Store) CancelBuild(ctx context.Context, buildID int64, reason string) error {
	return s.cancelBuild(ctx, buildID, reason, nil)
}

func (s *Store) cancelBuild(ctx context.Context, buildID int64, reason string, audit func() *AuditEvent) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.cancelBuildTx(ctx, tx, buildID, reason); err != nil {
		return err
	}
	if err := s.auditTx(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *Store) cancelBuildTx(ctx context.Context, tx *dbTx, buildID int64, reason string) error {
	var status string
	var planned int
	err := tx.QueryRowContext(ctx, `SELECT status, planned FROM builds WHERE id = ?`, buildID).Scan(&status, &planned)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("build: %w", ErrNotFound)
	}
	if err != nil {
		return err
	}
	if Status(status).Terminal() {
		return nil
	}
	now := s.nowMS()
	if _, err := tx.ExecContext(ctx, `UPDATE builds SET cancel_requested = 1, error = CASE WHEN error = '' THEN ? ELSE error END WHERE id = ?`, reason, buildID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET cancel_requested = 1 WHERE build_id = ? AND status IN ('queued', 'running')`, buildID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET status = 'canceled', error = ?, finished_at = ? WHERE build_id = ? AND status = 'queued'`, reason, now, buildID); err != nil {
		return err
	}
	if planned == 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET status = 'canceled', planned = 1, finished_at = ? WHERE id = ?`, now, buildID); err != nil {
			return err
		}
		return s.syncStatuses(ctx, tx, buildID)
	}
	return s.refreshBuild(ctx, tx, buildID)
}

// refreshBuild derives a build's status from its jobs. Precedence when all
// jobs are done: error, timed_out, failure, canceled, success.
func (s *Store) refreshBuild(ctx context.Context, tx *dbTx, buildID int64) error {
	// Counted in SQL, not read job by job: every claim and finish calls
	// this, and a build may hold up to -max-jobs-per-build jobs.
	rows, err := tx.QueryContext(ctx, `SELECT status, COUNT(*), MAX(CASE WHEN attempt > 0 THEN 1 ELSE 0 END) FROM jobs WHERE build_id = ? GROUP BY status`, buildID)
	if err != nil {
		return err
	}
	counts := map[Status]int{}
	started := false
	for rows.Next() {
		var st string
		var n, anyStarted int
		if err := rows.Scan(&st, &n, &anyStarted); err != nil {
			rows.Close()
			return err
		}
		counts[Status(st)] += n
		started = started || anyStarted != 0
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(counts) == 0 {
		return err
	}
	now := s.nowMS()
	status := StatusQueued
	switch {
	case counts[StatusQueued]+counts[StatusRunning] > 0:
		if started {
			status = StatusRunning
		}
	case counts[StatusError] > 0:
		status = StatusError
	case counts[StatusTimedOut] > 0:
		status = StatusTimedOut
	case counts[StatusFailure] > 0:
		status = StatusFailure
	case counts[StatusCanceled] > 0:
		status = StatusCanceled
	default:
		status = StatusSuccess
	}
	var finished any
	if status.Terminal() {
		finished = now
	}
	var startedAt any
	if started {
		startedAt = now
	}
	if _, err = tx.ExecContext(ctx, `UPDATE builds SET status = ?, started_at = COALESCE(started_at, ?), finished_at = ? WHERE id = ?`, string(status), startedAt, finished, buildID); err != nil {
		return err
	}
	return s.syncStatuses(ctx, tx, buildID)
}

// RunningJobs lists running jobs (for the reaper's timeout backstop).
func (s *Store) RunningJobs(ctx context.Context) ([]*Job, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE status = 'running' ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// TimeOutJob ends a running attempt as timed_out (the reaper's backstop for
// an agent that did not enforce the timeout itself).
func (s *Store) TimeOutJob(ctx context.Context, jobID int64, attempt int, msg string) error {
	_, err := s.FinishJob(ctx, jobID, attempt, StatusTimedOut, nil, msg, 0)
	return err
}

// specResources is the resources member of a job's spec (JSON), nil when
// it has none or the spec is not JSON (a plan's failure record).
func specResources(spec []byte) []byte {
	var s struct {
		Resources json.RawMessage `json:"resources"`
	}
	if json.Unmarshal(spec, &s) != nil || string(s.Resources) == "null" {
		return nil
	}
	return s.Resources
}
