package cache

import (
	"context"
	"errors"
	"fmt"
)

// finalize makes the job's reserved entry id visible with the given size.
//
// A finalize retried after it succeeded succeeds again (same size). An
// upload whose bytes do not add up (check fails, nothing was uploaded, or
// the size does not match what arrived) is discarded, so no partial entry
// ever becomes visible and the key can be saved again.
func (s *Service) finalize(ctx context.Context, sc Scope, id, size int64, check func(entryRow) error) (entryRow, error) {
	e, err := s.finalizeLocked(ctx, sc, id, size, check)
	if err != nil {
		return e, err
	}
	// Parallel blocks are admitted one by one, so a project can end up a
	// little over budget; trim it now rather than at the next Evict. The
	// new entry is the most recently used, so it goes last.
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	if _, err := s.evictProject(ctx, e.Project, 0, nil); err != nil {
		s.log.Warn("cache: trim project after finalize", "project", e.Project, "err", err)
	}
	return e, nil
}

func (s *Service) finalizeLocked(ctx context.Context, sc Scope, id, size int64, check func(entryRow) error) (entryRow, error) {
	defer s.lock(id)()
	e, err := s.reservedEntry(ctx, sc, id)
	if err != nil {
		return e, err
	}
	if e.State == stateReady {
		if e.Size != size {
			return e, errorf(ErrInvalid, "cache entry %d was finalized with %d bytes, not %d", id, e.Size, size)
		}
		return e, nil
	}
	switch {
	case size < 0:
		err = errorf(ErrInvalid, "negative size %d", size)
	case size > s.cfg.ProjectBudgetBytes:
		err = errorf(ErrTooLarge, "cache entry of %d bytes is over the project budget of %d bytes", size, s.cfg.ProjectBudgetBytes)
	case check != nil:
		err = check(e)
	}
	if err == nil {
		err = s.files.publish(ctx, s.blobs, id, size)
	}
	if err != nil {
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
			if derr := s.deleteEntry(ctx, e); derr != nil {
				s.log.Error("cache: discard bad upload", "id", id, "err", derr)
			}
			return e, fmt.Errorf("%w (upload discarded)", err)
		}
		return e, err
	}
	now := s.now().UnixNano()
	_, err = s.db.ExecContext(ctx, `UPDATE cache_entries SET state = 'ready', size = ?, finalized_at = ?, last_used = ? WHERE id = ?`,
		size, now, now, id)
	if err != nil {
		return e, fmt.Errorf("cache: finalize %d: %w", id, err)
	}
	e.State, e.Size, e.Finalized, e.LastUsed = stateReady, size, now, now
	return e, nil
}
