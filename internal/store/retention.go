package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// pruneBatch is how many log lines one delete removes: each batch is its
// own short transaction, so pruning never holds the write lock for long
// and never needs much room in SQLite's write-ahead log.
const pruneBatch = 2000

// LogRetention is a project's own log retention; a nil field means the
// server's default. 0 means no limit.
type LogRetention struct {
	Days     *int   `json:"log_retention_days"`
	MaxBytes *int64 `json:"log_max_bytes"`
}

// SetLogRetention sets a project's log retention (nil fields: the server's default).
func (s *Store) SetLogRetention(ctx context.Context, projectID int64, r LogRetention) error {
	var err error
	if r.Days == nil && r.MaxBytes == nil {
		_, err = s.db.ExecContext(ctx, `DELETE FROM project_log_retention WHERE project_id = ?`, projectID)
	} else {
		_, err = s.db.ExecContext(ctx, `INSERT INTO project_log_retention (project_id, days, max_bytes) VALUES (?, ?, ?)
			ON CONFLICT (project_id) DO UPDATE SET days = excluded.days, max_bytes = excluded.max_bytes`, projectID, r.Days, r.MaxBytes)
	}
	return s.wrote(err)
}

// LogRetentions returns every project's own log retention, by project id
// (projects that keep the server's default are absent).
func (s *Store) LogRetentions(ctx context.Context) (map[int64]LogRetention, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT project_id, days, max_bytes FROM project_log_retention`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]LogRetention{}
	for rows.Next() {
		var id int64
		var days, maxBytes sql.NullInt64
		if err := rows.Scan(&id, &days, &maxBytes); err != nil {
			return nil, err
		}
		var r LogRetention
		if days.Valid {
			d := int(days.Int64)
			r.Days = &d
		}
		if maxBytes.Valid {
			r.MaxBytes = &maxBytes.Int64
		}
		out[id] = r
	}
	return out, rows.Err()
}

// BuildLogs is a finished build whose logs are still kept, and their size.
type BuildLogs struct {
	BuildID    int64
	FinishedAt time.Time
	Bytes      int64
}

// KeptBuildLogs lists a project's finished builds whose logs are kept,
// newest first, with the size of their logs. A build's size is measured
// once, the first time it is listed after it finished (its logs no longer
// change), so listing stays cheap.
func (s *Store) KeptBuildLogs(ctx context.Context, projectID int64) ([]BuildLogs, error) {
	// A few builds per transaction: the first pass over a database full of
	// unmeasured builds must not hold the write lock for a whole scan.
	for {
		res, err := s.db.ExecContext(ctx, `UPDATE builds SET log_bytes = (SELECT COALESCE(SUM(octet_length(l.text)), 0)
				FROM log_lines l JOIN jobs j ON j.id = l.job_id WHERE j.build_id = builds.id)
			WHERE id IN (SELECT id FROM builds WHERE project_id = ? AND finished_at IS NOT NULL AND log_bytes IS NULL AND logs_pruned_at IS NULL LIMIT 20)`, projectID)
		if err != nil {
			return nil, s.wrote(err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			break
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, finished_at, COALESCE(log_bytes, 0) FROM builds
		WHERE project_id = ? AND finished_at IS NOT NULL AND logs_pruned_at IS NULL ORDER BY finished_at DESC, id DESC`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BuildLogs
	for rows.Next() {
		var b BuildLogs
		var fin int64
		if err := rows.Scan(&b.BuildID, &fin, &b.Bytes); err != nil {
			return nil, err
		}
		b.FinishedAt = fromMS(fin)
		out = append(out, b)
	}
	return out, rows.Err()
}

// PruneBuildLogs deletes up to one batch of a finished build's log lines.
// When none are left it records on the build that its logs were pruned
// (logs_pruned_at) and returns done. Call it until done: each call is one
// short transaction.
func (s *Store) PruneBuildLogs(ctx context.Context, buildID int64) (deleted int64, done bool, err error) {
	var fin sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT finished_at FROM builds WHERE id = ?`, buildID).Scan(&fin); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, fmt.Errorf("build: %w", ErrNotFound)
		}
		return 0, false, err
	}
	if !fin.Valid {
		return 0, false, fmt.Errorf("build %d has not finished: its logs are not pruned", buildID)
	}
	err = s.deleting(func() error {
		res, err := s.db.ExecContext(ctx, `DELETE FROM log_lines WHERE (job_id, attempt, seq) IN (SELECT l.job_id, l.attempt, l.seq FROM log_lines l JOIN jobs j ON j.id = l.job_id WHERE j.build_id = ? LIMIT ?)`,
			buildID, pruneBatch)
		if err == nil {
			deleted, err = res.RowsAffected()
		}
		return err
	})
	if err != nil || deleted == pruneBatch {
		return deleted, false, err
	}
	err = s.wrote(func() error {
		_, err := s.db.ExecContext(ctx, `UPDATE builds SET logs_pruned_at = ?, log_bytes = 0 WHERE id = ? AND logs_pruned_at IS NULL`, s.nowMS(), buildID)
		return err
	}())
	return deleted, err == nil, err
}
