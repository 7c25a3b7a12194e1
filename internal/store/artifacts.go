package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Artifact is one job attempt's archive of workspace files, kept in a
// blob store under Blob (the server's; the store holds only the record).
// A job has at most one: a later attempt's replaces its earlier one's.
type Artifact struct {
	ID      int64
	BuildID int64
	JobID   int64
	Attempt int
	// Job is the job's name, which names the artifact within its build.
	Job       string
	Blob      string
	Size      int64
	SHA256    string
	Files     int
	CreatedAt time.Time
	ExpiresAt time.Time
}

const artifactCols = `a.id, a.build_id, a.job_id, a.attempt, j.name, a.blob, a.size, a.sha256, a.files, a.created_at, a.expires_at`

func scanArtifact(row interface{ Scan(...any) error }) (Artifact, error) {
	var a Artifact
	var created, expires int64
	err := row.Scan(&a.ID, &a.BuildID, &a.JobID, &a.Attempt, &a.Job, &a.Blob, &a.Size, &a.SHA256, &a.Files, &created, &expires)
	a.CreatedAt, a.ExpiresAt = fromMS(created), fromMS(expires)
	return a, err
}

// CheckLease reports whether attempt holds the job's lease for this agent
// token (ErrStaleAttempt, ErrNotYourLease as the writes do), writing
// nothing: the server asks before it takes an upload's bytes.
func (w AgentWrites) CheckLease(ctx context.Context, jobID int64, attempt int) error {
	tx, err := w.s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, _, err = fence(ctx, tx, jobID, attempt, w.token)
	return err
}

// RecordArtifact records the artifact of a running attempt this token
// holds (a.BuildID and a.Job are the job's own). It replaces the job's
// earlier artifact, whose blob it returns for the caller to delete ("":
// none). A refused write records nothing: the caller deletes a.Blob.
func (w AgentWrites) RecordArtifact(ctx context.Context, a *Artifact) (replaced string, err error) {
	s := w.s
	defer func() { err = s.jobWrote(a.JobID, err) }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	buildID, _, err := fence(ctx, tx, a.JobID, a.Attempt, w.token)
	if err != nil {
		return "", err
	}
	a.BuildID = buildID
	if err := tx.QueryRowContext(ctx, `SELECT name FROM jobs WHERE id = ?`, a.JobID).Scan(&a.Job); err != nil {
		return "", err
	}
	err = tx.QueryRowContext(ctx, `SELECT blob FROM artifacts WHERE job_id = ?`, a.JobID).Scan(&replaced)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	now := s.nowMS()
	a.CreatedAt = fromMS(now)
	err = tx.QueryRowContext(ctx, `INSERT INTO artifacts (build_id, job_id, attempt, blob, size, sha256, files, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (job_id) DO UPDATE SET attempt = excluded.attempt, blob = excluded.blob, size = excluded.size, sha256 = excluded.sha256,
			files = excluded.files, created_at = excluded.created_at, expires_at = excluded.expires_at
		RETURNING id`,
		a.BuildID, a.JobID, a.Attempt, a.Blob, a.Size, a.SHA256, a.Files, now, ms(a.ExpiresAt)).Scan(&a.ID)
	if err != nil {
		return "", err
	}
	if replaced == a.Blob {
		replaced = ""
	}
	return replaced, tx.Commit()
}

// Artifacts lists a build's artifacts, by job id.
func (s *Store) Artifacts(ctx context.Context, buildID int64) ([]Artifact, error) {
	return s.artifacts(ctx, `WHERE a.build_id = ? ORDER BY a.job_id`, buildID)
}

// Artifact returns the artifact of a build's job, by the job's name.
func (s *Store) Artifact(ctx context.Context, buildID int64, job string) (*Artifact, error) {
	out, err := s.artifacts(ctx, `WHERE a.build_id = ? AND j.name = ?`, buildID, job)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("artifact of job %q of build %d: %w", job, buildID, ErrNotFound)
	}
	return &out[0], nil
}

// ExpiredArtifacts returns at most limit artifacts expired at now, the
// first to expire first.
func (s *Store) ExpiredArtifacts(ctx context.Context, now time.Time, limit int) ([]Artifact, error) {
	return s.artifacts(ctx, `WHERE a.expires_at <= ? ORDER BY a.expires_at, a.id LIMIT ?`, ms(now), limit)
}

// ProjectArtifacts lists every artifact of a project's builds (to delete
// their blobs with it).
func (s *Store) ProjectArtifacts(ctx context.Context, projectID int64) ([]Artifact, error) {
	return s.artifacts(ctx, `JOIN builds b ON b.id = a.build_id WHERE b.project_id = ? ORDER BY a.id`, projectID)
}

func (s *Store) artifacts(ctx context.Context, where string, args ...any) ([]Artifact, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+artifactCols+` FROM artifacts a JOIN jobs j ON j.id = a.job_id `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Artifact
	for rows.Next() {
		a, err := scanArtifact(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// DeleteArtifact deletes an artifact's record if it still names blob (a
// later attempt's upload may have replaced it meanwhile); deleted says
// whether it did, and so whether blob is now the caller's to delete.
func (s *Store) DeleteArtifact(ctx context.Context, id int64, blob string) (deleted bool, err error) {
	var res sql.Result
	err = s.deleting(func() error {
		var err error
		res, err = s.db.ExecContext(ctx, `DELETE FROM artifacts WHERE id = ? AND blob = ?`, id, blob)
		return err
	})
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
