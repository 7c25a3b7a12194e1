package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrNotYourLease is the kind of a job write made by an agent token that
// does not hold the attempt's lease (another agent claimed it).
var ErrNotYourLease = errors.New("not your lease")

// ErrAgentTaken is the kind of a registration or claim under an agent id
// that another live agent token holds.
var ErrAgentTaken = errors.New("agent id belongs to another agent token")

// NotYourLeaseError says whose lease a refused write touched.
type NotYourLeaseError struct {
	JobID   int64
	Attempt int
	Holder  string // the agent id that holds the lease
}

func (e *NotYourLeaseError) Error() string {
	return fmt.Sprintf("job %d attempt %d is leased to agent %q, claimed with another agent token: %s", e.JobID, e.Attempt, e.Holder, ErrNotYourLease)
}

func (e *NotYourLeaseError) Unwrap() error { return ErrNotYourLease }

// AgentWrites are the writes an agent makes to the jobs it runs, as the
// agent token with id token. Each is fenced by the attempt (ErrStaleAttempt)
// and by the token that claimed it (ErrNotYourLease), inside the write's
// transaction: no other agent can heartbeat, report steps, append logs to
// or finish an attempt it does not hold.
type AgentWrites struct {
	s     *Store
	token int64
}

// AgentWrites returns the writes of the agent token with id token.
func (s *Store) AgentWrites(token int64) AgentWrites { return AgentWrites{s: s, token: token} }

// Heartbeat is Store.Heartbeat fenced by the token; it also marks the
// lease holder as seen (a busy agent does not claim).
func (w AgentWrites) Heartbeat(ctx context.Context, jobID int64, attempt int, lease time.Duration) (bool, error) {
	cancel, err := w.s.heartbeat(ctx, jobID, attempt, lease, w.token)
	if err == nil {
		_, _ = w.s.db.ExecContext(ctx, `UPDATE agents SET last_seen = ? WHERE id = (SELECT agent_id FROM jobs WHERE id = ?)`, w.s.nowMS(), jobID)
	}
	return cancel, err
}

// UpdateStep is Store.UpdateStep fenced by the token.
func (w AgentWrites) UpdateStep(ctx context.Context, jobID int64, attempt, idx int, status Status, exitCode *int) error {
	return w.s.updateStep(ctx, jobID, attempt, idx, status, exitCode, w.token)
}

// AppendLogs is Store.AppendLogs fenced by the token.
func (w AgentWrites) AppendLogs(ctx context.Context, jobID int64, attempt int, lines []LogLine) error {
	return w.s.appendLogs(ctx, jobID, attempt, lines, w.token)
}

// FinishJob is Store.FinishJob fenced by the token. The attempt's end is
// also noted in its agent's record (see Agent.ErrorStreak).
func (w AgentWrites) FinishJob(ctx context.Context, jobID int64, attempt int, status Status, exitCode *int, msg string, retryDelay time.Duration) (Status, error) {
	return w.s.finishReported(ctx, jobID, attempt, status, exitCode, msg, retryDelay, writer{token: w.token, outcome: true})
}

// noteAgentOutcome records, inside tx, how an attempt of the job ended on
// the agent that holds it: an error (infrastructure) lengthens the agent's
// streak of consecutive errors and stamps its time; an attempt that ran to
// a verdict (success, failure, timed out) ends the streak; a canceled one
// says nothing. What a streak means is the scheduler's policy.
func (s *Store) noteAgentOutcome(ctx context.Context, tx *dbTx, jobID int64, status Status) error {
	var q string
	switch status {
	case StatusError:
		q = `UPDATE agents SET error_streak = error_streak + 1, last_error_at = ? WHERE id = (SELECT agent_id FROM jobs WHERE id = ?)`
	case StatusSuccess, StatusFailure, StatusTimedOut:
		q = `UPDATE agents SET error_streak = 0, last_ok_at = ? WHERE id = (SELECT agent_id FROM jobs WHERE id = ?)`
	default:
		return nil
	}
	_, err := tx.ExecContext(ctx, q, s.nowMS(), jobID)
	return err
}

// RegisterAgent records an agent's registration under the agent token
// with id token. The first token to register an id holds it; another
// token's registration of it is ErrAgentTaken while the holder is live
// (not revoked), so an agent's id, and the jobs it runs, cannot be taken
// over by another agent's token.
func (s *Store) RegisterAgent(ctx context.Context, a *Agent, token int64) error {
	labels := marshalLabels(a.Labels)
	now := s.nowMS()
	res, err := s.db.ExecContext(ctx, `INSERT INTO agents (id, name, labels, capacity, version, protocol, max_resources, first_seen, last_seen, token_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, labels = excluded.labels, capacity = excluded.capacity, version = excluded.version, protocol = excluded.protocol,
			max_resources = excluded.max_resources, last_seen = excluded.last_seen, token_id = excluded.token_id
		WHERE agents.token_id IN (0, excluded.token_id) OR agents.token_id NOT IN (SELECT id FROM tokens WHERE revoked = 0)`,
		a.ID, a.Name, labels, a.Capacity, a.Version, a.Protocol, a.Max, now, now, token)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("agent %q: %w", a.ID, ErrAgentTaken)
	}
	return nil
}

// CheckAgentToken returns ErrAgentTaken when agentID is registered by
// another live agent token than token.
func (s *Store) CheckAgentToken(ctx context.Context, agentID string, token int64) error {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents WHERE id = ? AND token_id NOT IN (0, ?) AND token_id IN (SELECT id FROM tokens WHERE revoked = 0)`, agentID, token).Scan(&n)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("agent %q: %w", agentID, ErrAgentTaken)
	}
	return nil
}

// AgentRecord is what the scheduler's agent policy reads about one agent.
type AgentRecord struct {
	Agent
	Running int // attempts it holds now
}

// AgentRecord returns an agent's record; an agent never registered has
// the zero record (no streak).
func (s *Store) AgentRecord(ctx context.Context, id string) (AgentRecord, error) {
	r := AgentRecord{Agent: Agent{ID: id}}
	var last, ok sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT error_streak, last_error_at, last_ok_at, last_seen FROM agents WHERE id = ?`, id).Scan(&r.ErrorStreak, &last, &ok, new(int64))
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return r, err
	}
	r.LastErrorAt, r.LastOKAt = nullTime(last), nullTime(ok)
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE status = 'running' AND agent_id = ?`, id).Scan(&r.Running)
	return r, err
}

// retriedOn returns the queued jobs whose last attempt ended in error on
// agentID and that became claimable after since: a claim by that agent
// leaves them to others for a while (Claim.RetryElsewhere).
func (s *Store) retriedOn(ctx context.Context, agentID string, since int64) (map[int64]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT j.id FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt
		WHERE j.status = 'queued' AND a.agent_id = ? AND a.status = 'error' AND COALESCE(j.not_before, j.queued_at) > ?`, agentID, since)
	if err != nil {
		return nil, err
	}
	return idSet(rows)
}

// idSet reads rows of one id each into a set, and closes them.
func idSet(rows *sql.Rows) (map[int64]bool, error) {
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}
