package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// CheckRun is the GitHub check run a (project, commit, context) was last
// given, and the build it was for.
type CheckRun struct {
	BuildID    int64
	CheckRunID int64
}

// CheckRun returns the check run recorded for a project's commit and
// context; nil when there is none.
func (s *Store) CheckRun(ctx context.Context, projectID int64, commit, context string) (*CheckRun, error) {
	var c CheckRun
	err := s.db.QueryRowContext(ctx, `SELECT build_id, check_run_id FROM check_runs WHERE project_id = ? AND commit_sha = ? AND context = ?`,
		projectID, commit, context).Scan(&c.BuildID, &c.CheckRunID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// SetCheckRun records the check run of a project's commit and context
// (replacing the one recorded before).
func (s *Store) SetCheckRun(ctx context.Context, projectID int64, commit, context string, c CheckRun) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO check_runs (project_id, commit_sha, context, build_id, check_run_id, updated_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (project_id, commit_sha, context) DO UPDATE SET build_id = excluded.build_id, check_run_id = excluded.check_run_id, updated_at = excluded.updated_at`,
		projectID, commit, context, c.BuildID, c.CheckRunID, s.nowMS())
	return err
}

// PruneCheckRuns forgets check runs recorded before before, and returns
// how many.
func (s *Store) PruneCheckRuns(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM check_runs WHERE updated_at < ?`, ms(before))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// LogTail returns the last n stored lines of one step (its index; -1 for
// lines outside any step) of a job attempt, in order.
func (s *Store) LogTail(ctx context.Context, jobID int64, attempt, step, n int) ([]LogLine, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, ts, text FROM log_lines WHERE job_id = ? AND attempt = ? AND step = ? ORDER BY seq DESC LIMIT ?`,
		jobID, attempt, step, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		l := LogLine{JobID: jobID, Attempt: attempt, Step: step}
		var ts int64
		if err := rows.Scan(&l.Seq, &ts, &l.Text); err != nil {
			return nil, err
		}
		l.Time = fromMS(ts)
		out = append(out, l)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, rows.Err()
}
