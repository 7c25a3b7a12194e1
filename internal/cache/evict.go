package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// EvictStats counts what one Evict removed.
type EvictStats struct {
	ExpiredUploads int   // reservations not finalized within UploadTTL
	Aged           int   // entries unused for MaxAge
	OverBudget     int   // least recently used entries of projects over budget
	OverDisk       int   // least recently used entries removed for the disk high-water mark
	Orphans        int   // files with no entry (left by a crash)
	FreedBytes     int64 // bytes of finalized entries removed
}

// Evict applies every eviction rule once: abandoned uploads, age, each
// project's budget, the disk high-water mark (least recently used first,
// across projects), then files no entry owns. The server calls it
// periodically; uploads call the budget and disk parts themselves before
// taking bytes they could not hold.
func (s *Service) Evict(ctx context.Context) (EvictStats, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	var st EvictStats
	now := s.now().UnixNano()

	expired, err := s.queryEntries(ctx, `state = 'reserved' AND created_at < ?`, now-int64(s.cfg.UploadTTL))
	if err != nil {
		return st, err
	}
	for _, e := range expired {
		if err := s.evictOne(ctx, e, nil); err != nil {
			return st, err
		}
		st.ExpiredUploads++
	}

	aged, err := s.queryEntries(ctx, `state = 'ready' AND last_used < ?`, now-int64(s.cfg.MaxAge))
	if err != nil {
		return st, err
	}
	for _, e := range aged {
		if err := s.evictOne(ctx, e, &st.FreedBytes); err != nil {
			return st, err
		}
		st.Aged++
	}

	over, err := s.projectsOverBudget(ctx)
	if err != nil {
		return st, err
	}
	for _, p := range over {
		n, err := s.evictProject(ctx, p, 0, &st.FreedBytes)
		st.OverBudget += n
		if err != nil {
			return st, err
		}
	}

	n, err := s.evictForDisk(ctx, 0, &st.FreedBytes)
	st.OverDisk += n
	if err != nil {
		return st, err
	}

	st.Orphans, err = s.removeOrphans(ctx)
	return st, err
}

// RemoveOrphans removes this service's files that no entry owns, the last
// part of Evict alone. Servers sharing a database each keep their own
// files: one of them (the leader) evicts entries, and every other removes
// the files the entries it evicted left here.
func (s *Service) RemoveOrphans(ctx context.Context) (int, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	return s.removeOrphans(ctx)
}

// admit makes room for need more bytes of upload e before they are
// accepted.
func (s *Service) admit(ctx context.Context, e entryRow, need int64) error {
	return s.admitBytes(ctx, e.Project, s.files.stagedBytes(e.ID)+need, need)
}

// admitBytes makes room for an entry that will hold entry bytes, need of
// them not on disk yet: the entry must fit the project budget (evicting the
// project's least recently used entries if needed), and the disk must stay
// under its high-water mark (evicting across projects if needed).
func (s *Service) admitBytes(ctx context.Context, project string, entry, need int64) error {
	if entry > s.cfg.ProjectBudgetBytes {
		return errorf(ErrTooLarge, "cache entry would be %d bytes, over the project budget of %d bytes", entry, s.cfg.ProjectBudgetBytes)
	}
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	if _, err := s.evictProject(ctx, project, entry, nil); err != nil {
		return err
	}
	if _, err := s.evictForDisk(ctx, need, nil); err != nil {
		return err
	}
	return nil
}

func (s *Service) projectsOverBudget(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT project FROM cache_entries WHERE state = 'ready'
		GROUP BY project HAVING SUM(size) > ?`, s.cfg.ProjectBudgetBytes)
	if err != nil {
		return nil, fmt.Errorf("cache: projects over budget: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// evictProject removes the project's least recently used entries until its
// finalized entries plus extra bytes fit its budget.
func (s *Service) evictProject(ctx context.Context, project string, extra int64, freed *int64) (int, error) {
	var used int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM cache_entries WHERE project = ? AND state = 'ready'`, project).Scan(&used)
	if err != nil {
		return 0, fmt.Errorf("cache: project usage: %w", err)
	}
	if used+extra <= s.cfg.ProjectBudgetBytes {
		return 0, nil
	}
	lru, err := s.queryEntries(ctx, `project = ? AND state = 'ready' ORDER BY last_used, id`, project)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range lru {
		if used+extra <= s.cfg.ProjectBudgetBytes {
			break
		}
		if err := s.evictOne(ctx, e, freed); err != nil {
			return n, err
		}
		used -= e.Size
		n++
	}
	return n, nil
}

// evictForDisk removes the least recently used entries of all projects
// until need more bytes fit under the disk high-water mark, and fails with
// ErrInsufficientStorage when nothing is left to remove.
func (s *Service) evictForDisk(ctx context.Context, need int64, freed *int64) (int, error) {
	n := 0
	for {
		du, err := s.disk(s.cfg.Dir)
		if err != nil {
			return n, fmt.Errorf("cache: measure disk: %w", err)
		}
		if du.Total == 0 {
			return n, nil // size unknown: the mark cannot be enforced
		}
		used := float64(du.Total-du.Free) + float64(need)
		limit := s.cfg.DiskHighWater * float64(du.Total)
		if used <= limit {
			return n, nil
		}
		if !s.blobsOnDisk {
			// Archives live elsewhere (S3): evicting entries frees no room
			// here, where only uploads in progress are staged.
			return n, errorf(ErrInsufficientStorage,
				"cache staging disk would be %.1f%% full, over its high-water mark of %.1f%% (finalized archives are in the blob store; only uploads in progress are on this disk)",
				100*used/float64(du.Total), 100*s.cfg.DiskHighWater)
		}
		if n == 0 {
			// Evict nothing when evicting everything would not be enough.
			var evictable int64
			err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM cache_entries WHERE state = 'ready'`).Scan(&evictable)
			if err != nil {
				return n, fmt.Errorf("cache: disk usage: %w", err)
			}
			if used-float64(evictable) > limit {
				return n, errorf(ErrInsufficientStorage,
					"cache disk would be %.1f%% full, over its high-water mark of %.1f%%, even with every cache entry evicted",
					100*used/float64(du.Total), 100*s.cfg.DiskHighWater)
			}
		}
		victim, err := s.queryEntry(ctx, `state = 'ready' ORDER BY last_used, id LIMIT 1`)
		if errors.Is(err, ErrNotFound) {
			return n, errorf(ErrInsufficientStorage,
				"cache disk would be %.1f%% full, over its high-water mark of %.1f%%, and no cache entry is left to evict",
				100*used/float64(du.Total), 100*s.cfg.DiskHighWater)
		}
		if err != nil {
			return n, err
		}
		if err := s.evictOne(ctx, victim, freed); err != nil {
			return n, err
		}
		n++
	}
}

func (s *Service) evictOne(ctx context.Context, e entryRow, freed *int64) error {
	unlock := s.lock(e.ID)
	defer unlock()
	if err := s.deleteEntry(ctx, e); err != nil {
		return err
	}
	if freed != nil {
		*freed += e.Size
	}
	return nil
}

// removeOrphans deletes blobs and staging dirs that no entry owns. The
// blobs and directories are listed before the entries are read, and an
// entry's row is always written before its files, so a file listed here
// whose row is missing belongs to a deleted entry, never to one being
// created.
func (s *Service) removeOrphans(ctx context.Context) (int, error) {
	idOf := func(name string) int64 {
		id, err := strconv.ParseInt(name, 10, 64)
		if err != nil {
			return -1 // not ours: remove
		}
		return id
	}
	blobs, err := s.blobs.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	staged, err := os.ReadDir(filepath.Join(s.cfg.Dir, "staging"))
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	if len(blobs) == 0 && len(staged) == 0 {
		return 0, nil
	}
	live, err := s.liveIDs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range blobs {
		// A bucket may hold others' objects beside the prefix's; only
		// names the cache makes (entry ids) are its to remove there.
		if id := idOf(name); id < 0 && !s.blobsOnDisk || live[id] {
			continue
		}
		if err := s.blobs.Delete(ctx, name); err != nil {
			s.log.Warn("cache: delete orphan blob failed", "name", name, "err", err)
		}
		n++
	}
	for _, d := range staged {
		if !live[idOf(d.Name())] {
			s.removeAll(filepath.Join(s.cfg.Dir, "staging", d.Name()))
			n++
		}
	}
	return n, nil
}

func (s *Service) liveIDs(ctx context.Context) (map[int64]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM cache_entries`)
	if err != nil {
		return nil, fmt.Errorf("cache: list ids: %w", err)
	}
	defer rows.Close()
	live := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		live[id] = true
	}
	return live, rows.Err()
}

// admitDisk refuses new uploads while the disk is over its high-water mark
// and eviction cannot bring it back under.
func (s *Service) admitDisk(ctx context.Context) error {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	_, err := s.evictForDisk(ctx, 0, nil)
	return err
}
