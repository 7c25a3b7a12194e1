package store

import (
	"context"
	"time"
)

// Registry is one of a project's registry credentials: what the agent
// pulls the project's images from that host with. Password is the
// plaintext, opened from its sealed column; it never leaves the store
// but in a job's assignment.
type Registry struct {
	Host      string
	Username  string
	Password  string
	UpdatedAt time.Time
}

// SetRegistry stores (or replaces) the project's credentials for host,
// the password sealed as secrets are.
func (s *Store) SetRegistry(ctx context.Context, projectID int64, host, username, password string) error {
	sealed, err := s.seal(password)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO registries (project_id, host, username, password, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (project_id, host) DO UPDATE SET username = excluded.username, password = excluded.password, updated_at = excluded.updated_at`,
		projectID, host, username, sealed, s.nowMS())
	return s.wrote(err)
}

// DeleteRegistry removes the project's credentials for host
// (ErrNotFound when it has none).
func (s *Store) DeleteRegistry(ctx context.Context, projectID int64, host string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM registries WHERE project_id = ? AND host = ?`, projectID, host)
	return mustAffect(res, err, "registry")
}

// Registries returns the project's registry credentials, opened, sorted
// by host.
func (s *Store) Registries(ctx context.Context, projectID int64) ([]Registry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT host, username, password, updated_at FROM registries WHERE project_id = ? ORDER BY host`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Registry
	for rows.Next() {
		var r Registry
		var sealed []byte
		var updated int64
		if err := rows.Scan(&r.Host, &r.Username, &sealed, &updated); err != nil {
			return nil, err
		}
		if r.Password, err = s.open(sealed); err != nil {
			return nil, err
		}
		r.UpdatedAt = fromMS(updated)
		out = append(out, r)
	}
	return out, rows.Err()
}

// ImagePulled records the digest of the image a running attempt's
// sandbox was made from, as its agent reported it; fenced as the
// agent's other writes are: false, and nothing recorded, when the
// attempt does not hold the lease under this token.
func (w AgentWrites) ImagePulled(ctx context.Context, jobID int64, attempt int, digest string) (bool, error) {
	res, err := w.s.db.ExecContext(ctx, `UPDATE jobs SET image_digest = ? WHERE id = ? AND attempt = ? AND status = 'running' AND lease_token = ?`,
		digest, jobID, attempt, w.token)
	if err != nil {
		return false, w.s.wrote(err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
