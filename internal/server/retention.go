package server

import (
	"context"
	"errors"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// RetentionPolicy bounds the logs a project keeps: a finished build's logs
// are pruned once it is older than MaxAge, or once the project's newer
// builds' logs already add up to MaxBytes. 0 means no limit. A project may
// override either (store.LogRetention).
type RetentionPolicy struct {
	MaxAge   time.Duration
	MaxBytes int64
}

// policyFor is the default with a project's own settings applied.
func (p RetentionPolicy) policyFor(o store.LogRetention) RetentionPolicy {
	if o.Days != nil {
		p.MaxAge = time.Duration(*o.Days) * 24 * time.Hour
	}
	if o.MaxBytes != nil {
		p.MaxBytes = *o.MaxBytes
	}
	return p
}

// expired picks, from a project's kept builds (newest first), those whose
// logs the policy prunes at now.
func (p RetentionPolicy) expired(kept []store.BuildLogs, now time.Time) []int64 {
	var out []int64
	var total int64
	for _, b := range kept {
		total += b.Bytes
		if (p.MaxAge > 0 && now.Sub(b.FinishedAt) > p.MaxAge) || (p.MaxBytes > 0 && total > p.MaxBytes) {
			out = append(out, b.BuildID)
		}
	}
	return out
}

// PruneLogs applies log retention once: for every project, the logs of the
// finished builds its policy no longer keeps are deleted, a batch per
// transaction, and each build records when (logs_pruned_at). It returns
// how many builds' logs it pruned.
func (s *Server) PruneLogs(ctx context.Context) (int, error) {
	projects, err := s.Store.ListProjects(ctx)
	if err != nil {
		return 0, err
	}
	overrides, err := s.Store.LogRetentions(ctx)
	if err != nil {
		return 0, err
	}
	now := s.now()
	pruned := 0
	for _, p := range projects {
		pol := s.cfg.LogRetention.policyFor(overrides[p.ID])
		if pol.MaxAge <= 0 && pol.MaxBytes <= 0 {
			continue
		}
		kept, err := s.Store.KeptBuildLogs(ctx, p.ID)
		if err != nil {
			return pruned, err
		}
		for _, id := range pol.expired(kept, now) {
			b, err := s.Store.Build(ctx, id)
			if err != nil {
				return pruned, err
			}
			for {
				if err := ctx.Err(); err != nil {
					return pruned, err
				}
				_, done, err := s.Store.PruneBuildLogs(ctx, id)
				if err != nil {
					return pruned, err
				}
				if done {
					break
				}
			}
			// After logs_pruned_at: a blob whose delete fails is left
			// over, but no build points at a missing blob.
			if b.LogsArchivedAt != nil && s.logArchive != nil {
				if err := s.logArchive.Delete(ctx, id); err != nil {
					return pruned, err
				}
			}
			pruned++
		}
	}
	return pruned, nil
}

// archiveBatch is how many builds one round of the retention loop archives.
const archiveBatch = 20

// ArchiveLogs moves the log lines of up to archiveBatch builds finished
// more than LogArchiveAfter ago into the log archive: the blob is written
// and read back first, then the lines are deleted in the transaction that
// records logs_archived_at. A crash in between leaves the lines and a
// blob, and the build is archived again (the blob replaced) next round.
// It returns how many builds it archived.
func (s *Server) ArchiveLogs(ctx context.Context) (int, error) {
	if s.cfg.LogArchiveAfter <= 0 || s.logArchive == nil {
		return 0, nil
	}
	ids, err := s.Store.BuildsToArchive(ctx, s.now().Add(-s.cfg.LogArchiveAfter), archiveBatch)
	if err != nil {
		return 0, err
	}
	archived := 0
	for _, id := range ids {
		n, err := s.logArchive.Write(ctx, id, func(f func(store.LogLine) error) (int64, error) {
			return s.Store.EachBuildLogLine(ctx, id, f)
		})
		if err != nil {
			return archived, err
		}
		if err := s.Store.MarkLogsArchived(ctx, id, n); errors.Is(err, store.ErrArchiveChanged) {
			s.log.Warn("log archive: build's lines changed while archived: archived again next round", "build", id, "err", err)
			continue
		} else if err != nil {
			return archived, err
		}
		archived++
	}
	return archived, nil
}

// retentionLoop prunes logs now and then every RetentionEvery.
func (s *Server) retentionLoop(ctx context.Context) {
	every := s.cfg.RetentionEvery
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.ArchiveLogs(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("log archive", "err", err)
		} else if n > 0 {
			s.log.Info("log archive: archived finished builds' logs", "builds", n)
		}
		if n, err := s.PruneLogs(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("log retention", "err", err)
		} else if n > 0 {
			s.log.Info("log retention: pruned old builds' logs", "builds", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// healthLoop probes the store's writes every HealthEvery, so a full disk
// is logged (once, and once more when it is over) even when nothing polls
// /healthz, and makes the reserve again once there is room.
func (s *Server) healthLoop(ctx context.Context) {
	every := s.cfg.HealthEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var failing error
	for {
		s.checkHealth(ctx, &failing)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkHealth probes once; failing carries the last failure between calls.
func (s *Server) checkHealth(ctx context.Context, failing *error) {
	err := s.Store.Health(ctx)
	if err == nil {
		err = diskHealth(s.cfg.DataDir, s.cfg.MinFreeBytes)(ctx)
	}
	switch {
	case ctx.Err() != nil:
		return
	case err != nil && *failing == nil:
		s.log.Error("store cannot write: /healthz answers 503 until it can", "err", err)
	case err == nil && *failing != nil:
		s.log.Info("store writes again", "was", (*failing).Error())
	}
	*failing = err
	if err == nil {
		if ok, rerr := s.reserve.ensure(); rerr != nil {
			s.log.Warn("reserve", "err", rerr)
		} else if !ok {
			s.log.Debug("reserve not made yet: not enough free space", "bytes", s.cfg.ReserveBytes)
		}
	}
}
