package store

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotWaiting is the kind of an approval or rejection of a build that
// does not wait for one (never did, or was decided already).
var ErrNotWaiting = errors.New("build is not waiting for approval")

// ApproveBuild lets a build that waits for approval be planned; by names
// who approved it.
func (s *Store) ApproveBuild(ctx context.Context, buildID int64, by string) error {
	return s.approveBuild(ctx, buildID, by, nil)
}

func (s *Store) approveBuild(ctx context.Context, buildID int64, by string, audit func() *AuditEvent) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE builds SET approval = ?, approved_by = ? WHERE id = ? AND approval = ? AND cancel_requested = 0 AND status = 'queued'`,
		ApprovalApproved, by, buildID, ApprovalWaiting)
	if err := s.decided(ctx, res, err, buildID); err != nil {
		return err
	}
	if err := s.syncStatuses(ctx, tx, buildID); err != nil {
		return err
	}
	if err := s.auditTx(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

// RejectBuild cancels a build that waits for approval; by names who
// rejected it.
func (s *Store) RejectBuild(ctx context.Context, buildID int64, by string) error {
	return s.rejectBuild(ctx, buildID, by, nil)
}

func (s *Store) rejectBuild(ctx context.Context, buildID int64, by string, audit func() *AuditEvent) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE builds SET approval = ?, approved_by = ? WHERE id = ? AND approval = ? AND cancel_requested = 0 AND status = 'queued'`,
		ApprovalRejected, by, buildID, ApprovalWaiting)
	if err := s.decided(ctx, res, err, buildID); err != nil {
		return err
	}
	if err := s.cancelBuildTx(ctx, tx, buildID, "rejected by "+by); err != nil {
		return err
	}
	if err := s.auditTx(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

// decided turns an approval's UPDATE into ErrNotFound or ErrNotWaiting
// when it changed nothing.
func (s *Store) decided(ctx context.Context, res interface{ RowsAffected() (int64, error) }, err error, buildID int64) error {
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	var approval string
	if err := s.db.QueryRowContext(ctx, `SELECT approval FROM builds WHERE id = ?`, buildID).Scan(&approval); err != nil {
		return fmt.Errorf("build: %w", ErrNotFound)
	}
	if approval == "" {
		return fmt.Errorf("build %d: %w (it never needed one)", buildID, ErrNotWaiting)
	}
	return fmt.Errorf("build %d: %w (it is %s)", buildID, ErrNotWaiting, approval)
}

// CancelPullRequest cancels the unfinished builds of a project's request
// (closed or merged), with reason, and returns their ids.
func (s *Store) CancelPullRequest(ctx context.Context, projectID int64, number int, reason string) ([]int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id FROM builds WHERE project_id = ? AND pr_number = ? AND status IN ('queued', 'running') AND cancel_requested = 0`, projectID, number)
	if err != nil {
		return nil, err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := s.cancelBuildTx(ctx, tx, id, reason); err != nil {
			return nil, err
		}
	}
	return ids, tx.Commit()
}
