package cache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Metadata lives in the store's database, in the table cache_entries,
// made by the store's migrations (internal/store/migrate.go) on SQLite and
// PostgreSQL alike. The SQL is kept plain (? placeholders, which the
// store's handle turns into the dialect's, substr, RETURNING). Times are
// Unix nanoseconds.
//
// An entry is "reserved" from CreateCacheEntry / POST caches until it is
// finalized, and only "ready" entries are ever matched. The unique index
// makes (project, scope, key, version) creatable once.

// DB is what the service needs of the database: the store's handle
// (store.Store.DB), which speaks the dialect.
type DB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const (
	stateReserved = "reserved"
	stateReady    = "ready"
)

type entryRow struct {
	ID, Size, Declared           int64
	Project, Scope, Key, Version string
	State                        string
	Created, Finalized, LastUsed int64
	Hits                         int64
}

const entryCols = `id, project, scope, cache_key, version, state, size, declared_size, created_at, finalized_at, last_used, hits`

func scanEntry(sc interface{ Scan(...any) error }) (entryRow, error) {
	var e entryRow
	err := sc.Scan(&e.ID, &e.Project, &e.Scope, &e.Key, &e.Version, &e.State, &e.Size, &e.Declared, &e.Created, &e.Finalized, &e.LastUsed, &e.Hits)
	return e, err
}

func (e entryRow) public() Entry {
	return Entry{ID: e.ID, Project: e.Project, Scope: e.Scope, Key: e.Key, Version: e.Version, Size: e.Size,
		Created: time.Unix(0, e.Finalized), LastUsed: time.Unix(0, e.LastUsed), Hits: e.Hits}
}

func (s *Service) queryEntries(ctx context.Context, where string, args ...any) ([]entryRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+entryCols+` FROM cache_entries WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("cache: query entries: %w", err)
	}
	defer rows.Close()
	var out []entryRow
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("cache: scan entry: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *Service) queryEntry(ctx context.Context, where string, args ...any) (entryRow, error) {
	e, err := scanEntry(s.db.QueryRowContext(ctx, `SELECT `+entryCols+` FROM cache_entries WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("cache: query entry: %w", err)
	}
	return e, nil
}

// reserve inserts a reserved entry in the job's branch scope. A reservation
// abandoned for longer than UploadTTL is cleaned first, so a crashed job
// does not block its key until the next Evict.
func (s *Service) reserve(ctx context.Context, sc Scope, key, version string, declared int64) (int64, error) {
	if sc.ReadOnly {
		return 0, errorf(ErrForbidden, "cache write denied: this job's token is read-only")
	}
	now := s.now().UnixNano()
	for attempt := 0; ; attempt++ {
		var id int64
		err := s.db.QueryRowContext(ctx, `INSERT INTO cache_entries (project, scope, cache_key, version, state, declared_size, created_at, last_used)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			sc.Project, sc.Branch, key, version, stateReserved, declared, now, now).Scan(&id)
		if err == nil {
			return id, nil
		}
		old, qerr := s.queryEntry(ctx, `project = ? AND scope = ? AND cache_key = ? AND version = ?`, sc.Project, sc.Branch, key, version)
		if qerr != nil {
			// The insert failed for some other reason than the identity.
			return 0, fmt.Errorf("cache: reserve: %w", err)
		}
		stale := old.State == stateReserved && now-old.Created > int64(s.cfg.UploadTTL)
		if !stale || attempt > 0 {
			return 0, errorf(ErrConflict, "cache entry %q (version %s) already exists in scope %q", key, version, sc.Branch)
		}
		if err := s.deleteEntry(ctx, old); err != nil {
			return 0, err
		}
	}
}

// reserved returns the job's reservation (project and branch scope must
// match) of entry id.
func (s *Service) reservedEntry(ctx context.Context, sc Scope, id int64) (entryRow, error) {
	e, err := s.queryEntry(ctx, `id = ? AND project = ? AND scope = ?`, id, sc.Project, sc.Branch)
	if err != nil {
		return e, errorf(err, "cache entry %d", id)
	}
	return e, nil
}

// lookup finds the entry to restore, as GitHub does: in each scope the job
// may read (its branch, the base branch, the default branch, in that order),
// try each key in turn (the primary key, then the restore keys), first as an
// exact match, then as a prefix; among several matches the newest wins.
// The version must always match. A hit records last_used and counts.
func (s *Service) lookup(ctx context.Context, sc Scope, keys []string, version string) (entryRow, bool, error) {
	const base = `project = ? AND scope = ? AND version = ? AND state = 'ready' AND `
	const newest = ` ORDER BY finalized_at DESC, id DESC LIMIT 1`
	for _, scope := range sc.readScopes() {
		for _, k := range keys {
			e, err := s.queryEntry(ctx, base+`cache_key = ?`+newest, sc.Project, scope, version, k)
			if errors.Is(err, ErrNotFound) {
				e, err = s.queryEntry(ctx, base+`substr(cache_key, 1, ?) = ?`+newest, sc.Project, scope, version, utf8.RuneCountInString(k), k)
			}
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return e, false, err
			}
			if err := s.touch(ctx, e.ID); err != nil {
				return e, false, err
			}
			return e, true, nil
		}
	}
	return entryRow{}, false, nil
}

func (s *Service) touch(ctx context.Context, id int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE cache_entries SET last_used = ?, hits = hits + 1 WHERE id = ?`, s.now().UnixNano(), id)
	if err != nil {
		return fmt.Errorf("cache: touch entry %d: %w", id, err)
	}
	return nil
}

// deleteEntry removes an entry's row first (so it is invisible at once),
// then its files. Files left by a crash in between are
// orphans that Evict removes.
func (s *Service) deleteEntry(ctx context.Context, e entryRow) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM cache_entries WHERE id = ?`, e.ID); err != nil {
		return fmt.Errorf("cache: delete entry %d: %w", e.ID, err)
	}
	s.removeBlob(ctx, e.ID)
	s.removeAll(s.files.staging(e.ID))
	return nil
}

// List returns the project's finalized entries, most recently used first.
func (s *Service) List(ctx context.Context, project string) ([]Entry, error) {
	rows, err := s.queryEntries(ctx, `project = ? AND state = 'ready' ORDER BY last_used DESC, id DESC`, project)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(rows))
	for _, e := range rows {
		out = append(out, e.public())
	}
	return out, nil
}

// Delete removes entry id of project (finalized or still uploading).
func (s *Service) Delete(ctx context.Context, project string, id int64) error {
	defer s.lock(id)()
	e, err := s.queryEntry(ctx, `id = ? AND project = ?`, id, project)
	if err != nil {
		return errorf(err, "cache entry %d of project %q", id, project)
	}
	return s.deleteEntry(ctx, e)
}
