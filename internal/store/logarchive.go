package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// BuildsToArchive lists up to limit finished builds, finished before
// before, whose log lines are still in log_lines (neither archived nor
// pruned), oldest first.
func (s *Store) BuildsToArchive(ctx context.Context, before time.Time, limit int) ([]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds
		WHERE finished_at IS NOT NULL AND finished_at < ? AND logs_archived_at IS NULL AND logs_pruned_at IS NULL
		ORDER BY finished_at, id LIMIT ?`, ms(before), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// EachBuildLogLine calls f with every stored log line of a build, every
// job and attempt, ordered by job, attempt and seq. It returns how many.
func (s *Store) EachBuildLogLine(ctx context.Context, buildID int64, f func(LogLine) error) (int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT l.job_id, l.attempt, l.seq, l.step, l.ts, l.text FROM log_lines l JOIN jobs j ON j.id = l.job_id
		WHERE j.build_id = ? ORDER BY l.job_id, l.attempt, l.seq`, buildID)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var l LogLine
		var ts int64
		if err := rows.Scan(&l.JobID, &l.Attempt, &l.Seq, &l.Step, &ts, &l.Text); err != nil {
			return n, err
		}
		l.Time = fromMS(ts)
		if err := f(l); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

// ErrArchiveChanged: a build's stored lines are not the ones archived.
var ErrArchiveChanged = errors.New("the build's log lines changed since they were archived")

// MarkLogsArchived deletes a finished build's log lines and records on it
// that they are archived (logs_archived_at), in one transaction, once its
// archive blob is written and holds count lines. If the build's stored
// lines are no longer count, nothing changes (ErrArchiveChanged). The size
// of the logs is measured first (log_bytes), so log retention still
// counts them.
func (s *Store) MarkLogsArchived(ctx context.Context, buildID, count int64) error {
	return s.deleting(func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		var fin sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT finished_at FROM builds WHERE id = ?`, buildID).Scan(&fin); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("build: %w", ErrNotFound)
			}
			return err
		}
		if !fin.Valid {
			return fmt.Errorf("build %d has not finished: its logs are not archived", buildID)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET log_bytes = (SELECT COALESCE(SUM(octet_length(l.text)), 0)
				FROM log_lines l JOIN jobs j ON j.id = l.job_id WHERE j.build_id = builds.id)
			WHERE id = ? AND log_bytes IS NULL`, buildID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM log_lines WHERE job_id IN (SELECT id FROM jobs WHERE build_id = ?)`, buildID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != count {
			return fmt.Errorf("build %d: %d lines stored, %d archived: %w", buildID, n, count, ErrArchiveChanged)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET logs_archived_at = ? WHERE id = ?`, s.nowMS(), buildID); err != nil {
			return err
		}
		return tx.Commit()
	})
}

// ArchivedBuilds lists a project's builds whose logs are in the log
// archive (archived and not pruned since).
func (s *Store) ArchivedBuilds(ctx context.Context, projectID int64) ([]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds WHERE project_id = ? AND logs_archived_at IS NOT NULL AND logs_pruned_at IS NULL ORDER BY id`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
