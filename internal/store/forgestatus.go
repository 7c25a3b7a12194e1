package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Forges a project's statuses can be sent to (ForgeConnection.Forge).
const (
	ForgeGitHub = "github"
	ForgeGitLab = "gitlab"
	ForgeGitea  = "gitea"
)

// ForgeConnection is how Kiln reaches a project's repository on its
// forge: the forge, the repository (GitHub and Gitea owner/name, GitLab
// group/name), the API's base URL, and the credentials: a token (sealed at
// rest, never shown) or, on GitHub, the installation of the server's
// GitHub App (InstallationID, tokens minted from the App's key).
type ForgeConnection struct {
	Forge          string `json:"forge"`
	Repo           string `json:"repo"`
	APIURL         string `json:"api_url"`
	InstallationID int64  `json:"installation_id,omitempty"`
	Token          string `json:"-"`
}

// App reports whether the connection is a GitHub App installation.
func (c *ForgeConnection) App() bool {
	return c != nil && c.Forge == ForgeGitHub && c.InstallationID != 0
}

// SetProjectForge stores a project's forge connection; nil removes it.
func (s *Store) SetProjectForge(ctx context.Context, projectID int64, c *ForgeConnection) error {
	if c == nil {
		_, err := s.db.ExecContext(ctx, `DELETE FROM project_forges WHERE project_id = ?`, projectID)
		return err
	}
	token, err := s.seal(c.Token)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO project_forges (project_id, forge, repo, api_url, token, installation_id) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (project_id) DO UPDATE SET forge = excluded.forge, repo = excluded.repo, api_url = excluded.api_url, token = excluded.token,
			installation_id = excluded.installation_id`,
		projectID, c.Forge, c.Repo, c.APIURL, token, c.InstallationID)
	return err
}

// ProjectForge returns a project's forge connection, nil when it has none.
func (s *Store) ProjectForge(ctx context.Context, projectID int64) (*ForgeConnection, error) {
	var c ForgeConnection
	var token []byte
	err := s.db.QueryRowContext(ctx, `SELECT forge, repo, api_url, token, installation_id FROM project_forges WHERE project_id = ?`, projectID).
		Scan(&c.Forge, &c.Repo, &c.APIURL, &token, &c.InstallationID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if c.Token, err = s.open(token); err != nil {
		return nil, err
	}
	return &c, nil
}

// ForgeStatus is one row of the statuses outbox: a state of a build (JobID
// 0, context "kiln") or of one of its jobs (context "kiln/JOB") at a commit.
type ForgeStatus struct {
	ID          int64
	BuildID     int64
	JobID       int64
	ProjectID   int64
	Commit      string
	Context     string
	State       Status // Kiln's word (a build waiting for approval is queued; its description says so)
	Description string
	CreatedAt   time.Time
	Attempts    int
	NextAttempt time.Time
	LastError   string
	Outcome     string
}

// Outcomes of an outbox row (ForgeStatus.Outcome); "" is still to send.
const (
	OutcomeDelivered  = "delivered"
	OutcomeSuperseded = "superseded"
	OutcomeFailed     = "failed"
)

// ContextBuild is the context of a build's own status; a job's is
// ContextBuild + "/" + its name.
const ContextBuild = "kiln"

// syncStatuses writes into the outbox, inside tx (the transaction of the
// change), every status of the build that differs from the last one
// written: the build's own and each job's. It does nothing for a build
// without a commit, whose project has no forge connection, or that runs a
// GitHub Actions job (GitHub shows those itself). It is called
// wherever a build's or a job's status changes, so a crash between the
// change and its status cannot happen.
func (s *Store) syncStatuses(ctx context.Context, tx *dbTx, buildID int64) error {
	var projectID int64
	var commit, approval string
	var status Status
	err := tx.QueryRowContext(ctx, `SELECT b.project_id, b.commit_sha, b.status, b.approval FROM builds b JOIN project_forges f ON f.project_id = b.project_id
		WHERE b.id = ? AND b.commit_sha != '' AND b.trigger != ?`, buildID, TriggerGitHubActions).Scan(&projectID, &commit, &status, &approval)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("forge statuses: %w", err)
	}
	type want struct {
		job     int64
		context string
		state   Status
		desc    string
	}
	wants := []*want{{context: ContextBuild, state: status, desc: buildDescription(status, approval)}}
	jobs, err := s.jobsOfBuild(ctx, tx, buildID)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		wants = append(wants, &want{job: j.ID, context: ContextBuild + "/" + j.Name, state: j.Status, desc: jobDescription(j)})
	}
	rows, err := tx.QueryContext(ctx, `SELECT job_id, context, state, description FROM forge_statuses WHERE id IN
		(SELECT MAX(id) FROM forge_statuses WHERE build_id = ? GROUP BY job_id, context)`, buildID)
	if err != nil {
		return fmt.Errorf("forge statuses: %w", err)
	}
	last := map[string][2]string{}
	for rows.Next() {
		var job int64
		var ctxName, state, desc string
		if err := rows.Scan(&job, &ctxName, &state, &desc); err != nil {
			rows.Close()
			return err
		}
		last[fmt.Sprint(job, ctxName)] = [2]string{state, desc}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	now := s.nowMS()
	for _, w := range wants {
		if l, ok := last[fmt.Sprint(w.job, w.context)]; ok && l[0] == string(w.state) && l[1] == w.desc {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO forge_statuses (build_id, job_id, project_id, commit_sha, context, state, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			buildID, w.job, projectID, commit, w.context, string(w.state), w.desc, now); err != nil {
			return fmt.Errorf("forge statuses: %w", err)
		}
		tx.onCommit(s.outboxHint)
	}
	return nil
}

// OnForgeStatus sets f to be called after each transaction that wrote
// the outbox commits: a hint (the sender still polls), so f must not
// block.
func (s *Store) OnForgeStatus(f func()) { s.outboxHint = f }

func buildDescription(st Status, approval string) string {
	if st == StatusQueued && approval == ApprovalWaiting {
		return "waiting for an admin's approval"
	}
	return "build " + statusWords(st)
}

func jobDescription(j *Job) string {
	d := "job " + statusWords(j.Status)
	if j.Status == StatusQueued && j.Attempt > 0 {
		d += " (attempt " + fmt.Sprint(j.Attempt+1) + ")"
	}
	return d
}

func statusWords(st Status) string {
	switch st {
	case StatusQueued:
		return "queued"
	case StatusRunning:
		return "running"
	case StatusSuccess:
		return "succeeded"
	case StatusFailure:
		return "failed"
	case StatusCanceled:
		return "canceled"
	case StatusTimedOut:
		return "timed out"
	case StatusError:
		return "ended in an infrastructure error"
	}
	return string(st)
}

// PendingForgeStatuses returns up to limit outbox rows still to send
// whose next attempt is due at now, oldest first, leaving out the
// projects in skip (a forge that asked to wait), with their projects'
// forge connections (nil: removed since). Call SupersedeForgeStatuses
// first, so that only the newest state of each context is among them.
func (s *Store) PendingForgeStatuses(ctx context.Context, now time.Time, skip []int64, limit int) ([]*ForgeStatus, map[int64]*ForgeConnection, error) {
	q := `SELECT id, build_id, job_id, project_id, commit_sha, context, state, description, created_at, attempts, next_attempt_at, last_error
		FROM forge_statuses WHERE outcome = '' AND next_attempt_at <= ?`
	args := []any{ms(now)}
	if len(skip) > 0 {
		q += ` AND project_id NOT IN (?` + strings.Repeat(`, ?`, len(skip)-1) + `)`
		for _, p := range skip {
			args = append(args, p)
		}
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, nil, err
	}
	var out []*ForgeStatus
	for rows.Next() {
		var f ForgeStatus
		var created, next int64
		if err := rows.Scan(&f.ID, &f.BuildID, &f.JobID, &f.ProjectID, &f.Commit, &f.Context, &f.State, &f.Description, &created, &f.Attempts, &next, &f.LastError); err != nil {
			rows.Close()
			return nil, nil, err
		}
		f.CreatedAt, f.NextAttempt = fromMS(created), fromMS(next)
		out = append(out, &f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	conns := map[int64]*ForgeConnection{}
	for _, f := range out {
		if _, ok := conns[f.ProjectID]; ok {
			continue
		}
		c, err := s.ProjectForge(ctx, f.ProjectID)
		if err != nil {
			return nil, nil, err
		}
		conns[f.ProjectID] = c // nil: the connection was removed since
	}
	return out, conns, nil
}

// SupersedeForgeStatuses marks every row still to send that has a newer
// one still to send of the same project, commit and context as
// superseded (the newer state is sent instead), and returns how many of
// each project's it marked.
func (s *Store) SupersedeForgeStatuses(ctx context.Context) (map[int64]int, error) {
	rows, err := s.db.QueryContext(ctx, `UPDATE forge_statuses SET outcome = 'superseded' WHERE outcome = '' AND EXISTS
		(SELECT 1 FROM forge_statuses n WHERE n.outcome = '' AND n.project_id = forge_statuses.project_id AND n.commit_sha = forge_statuses.commit_sha
			AND n.context = forge_statuses.context AND n.id > forge_statuses.id)
		RETURNING project_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]int{}
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out[p]++
	}
	return out, rows.Err()
}

// ForgeStatusDelivered records that the forge took a row.
func (s *Store) ForgeStatusDelivered(ctx context.Context, id int64, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE forge_statuses SET outcome = ?, attempts = attempts + 1, delivered_at = ?, last_error = '' WHERE id = ?`, OutcomeDelivered, ms(at), id)
	return err
}

// ForgeStatusRetry records a failed attempt to be tried again at next.
func (s *Store) ForgeStatusRetry(ctx context.Context, id int64, msg string, next time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE forge_statuses SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ? AND outcome = ''`, msg, ms(next), id)
	return err
}

// ForgeStatusFailed records that a row is given up, with why.
func (s *Store) ForgeStatusFailed(ctx context.Context, id int64, msg string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE forge_statuses SET outcome = ?, attempts = attempts + 1, last_error = ? WHERE id = ? AND outcome = ''`, OutcomeFailed, msg, id)
	return err
}

// ForgeStatuses lists a build's outbox rows in the order they were written.
func (s *Store) ForgeStatuses(ctx context.Context, buildID int64) ([]*ForgeStatus, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, build_id, job_id, project_id, commit_sha, context, state, description, created_at, attempts, next_attempt_at, last_error, outcome
		FROM forge_statuses WHERE build_id = ? ORDER BY id`, buildID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*ForgeStatus
	for rows.Next() {
		var f ForgeStatus
		var created, next int64
		if err := rows.Scan(&f.ID, &f.BuildID, &f.JobID, &f.ProjectID, &f.Commit, &f.Context, &f.State, &f.Description, &created, &f.Attempts, &next, &f.LastError, &f.Outcome); err != nil {
			return nil, err
		}
		f.CreatedAt, f.NextAttempt = fromMS(created), fromMS(next)
		out = append(out, &f)
	}
	return out, rows.Err()
}

// OldestPendingForgeStatus returns how many rows are still to send and
// when the oldest of them was written (zero when none).
func (s *Store) OldestPendingForgeStatus(ctx context.Context) (int, time.Time, error) {
	var n int
	var oldest sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(created_at) FROM forge_statuses WHERE outcome = ''`).Scan(&n, &oldest)
	if err != nil || !oldest.Valid {
		return n, time.Time{}, err
	}
	return n, fromMS(oldest.Int64), nil
}

// PruneForgeStatuses deletes outbox rows done with (delivered, superseded
// or given up) written before before, and returns how many. A build
// changed after its rows were pruned writes its current states again.
func (s *Store) PruneForgeStatuses(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM forge_statuses WHERE outcome != '' AND created_at < ?`, ms(before))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
