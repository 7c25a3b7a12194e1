package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
)

// ErrCannotWrite means the store could not write: its disk is full, or the
// database file cannot be written. The API answers 503 with the reason;
// agents retry.
var ErrCannotWrite = errors.New("store cannot write")

// writeErrorWindow is how long a failed write keeps Health failing after
// the probe succeeds again, unless a real write (not the probe) has
// succeeded since: a tiny probe may fit where a log batch does not
// (SQLite reuses the write-ahead log's space once checkpointed).
const writeErrorWindow = 30 * time.Second

// SQLite's primary result codes that mean "cannot write" (not a bad query).
const (
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteCorrupt  = 11
	sqliteFull     = 13
	sqliteCantOpen = 14
)

// storageFailure reports whether err is SQLite failing to write its files.
func storageFailure(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqliteFull, sqliteIOErr, sqliteReadOnly, sqliteCorrupt, sqliteCantOpen:
			return true
		}
		return false
	}
	return err != nil && strings.Contains(err.Error(), "database or disk is full")
}

// DiskFull reports whether err is the store's disk being full.
func DiskFull(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqliteFull
	}
	return err != nil && strings.Contains(err.Error(), "database or disk is full")
}

// writeHealth is what the store remembers of its failed writes: the last
// one, and per job the last failed write an agent made for it (cleared by
// its next successful one), so a lease that expires because the server
// could not record the agent's heartbeats is not blamed on the agent.
// It lives in memory: after a restart an expired lease is "agent lost".
type writeHealth struct {
	mu      sync.Mutex
	lastErr error
	lastAt  time.Time
	// events orders failed and successful writes: errSeq and okSeq are
	// the events of the last failed and the last successful one.
	events, errSeq, okSeq uint64
	jobs                  map[int64]jobWriteFailure
	probeAt               time.Time // the last probe, and its result (probes run at most once a second)
	probe                 error
}

type jobWriteFailure struct {
	since, last time.Time
	err         string
}

// wrote notes the outcome of a write: a storage failure is remembered and
// returned wrapped in ErrCannotWrite; other errors pass unchanged.
func (s *Store) wrote(err error) error {
	h := &s.health
	if err == nil {
		h.mu.Lock()
		h.events++
		h.okSeq = h.events
		h.mu.Unlock()
		return nil
	}
	if !storageFailure(err) || errors.Is(err, ErrCannotWrite) {
		return err
	}
	h.mu.Lock()
	h.events++
	h.lastErr, h.lastAt, h.errSeq = err, s.now(), h.events
	h.mu.Unlock()
	return fmt.Errorf("%w: %v", ErrCannotWrite, err)
}

// jobWrote is wrote for an agent's write to a job (heartbeat, step, logs,
// finish): it also keeps, per job, whether the last such write failed.
func (s *Store) jobWrote(jobID int64, err error) error {
	cause := err
	err = s.wrote(err)
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		delete(h.jobs, jobID)
	case errors.Is(err, ErrCannotWrite):
		if h.jobs == nil {
			h.jobs = map[int64]jobWriteFailure{}
		}
		f, ok := h.jobs[jobID]
		if !ok {
			f.since = s.now()
		}
		f.last, f.err = s.now(), cause.Error()
		h.jobs[jobID] = f
	}
	return err
}

// jobWriteFailure returns the failure of the last write made for the job,
// if it failed (ok false when it did not, or none was made).
func (s *Store) jobWriteFailure(jobID int64) (jobWriteFailure, bool) {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	f, ok := h.jobs[jobID]
	return f, ok
}

func (s *Store) forgetJobWrites(jobID int64) {
	h := &s.health
	h.mu.Lock()
	delete(h.jobs, jobID)
	h.mu.Unlock()
}

// LastWriteError returns the last write that failed because the store could
// not write, and when (nil when none has since the store was opened).
func (s *Store) LastWriteError() (error, time.Time) {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastErr, h.lastAt
}

// Health checks that the store can write: a tiny upsert in the health
// table (at most once a second; later calls reuse the answer), and no
// failed write within the last writeErrorWindow. The error says why not.
func (s *Store) Health(ctx context.Context) error {
	h := &s.health
	h.mu.Lock()
	probed, perr := h.probeAt, h.probe
	h.mu.Unlock()
	now := s.now()
	if probed.IsZero() || now.Sub(probed) >= time.Second || now.Before(probed) {
		_, err := s.db.ExecContext(ctx, `INSERT INTO health (id, checked_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at`, ms(now))
		perr = err
		if err != nil { // a success of the probe is not a real write's (see writeErrorWindow)
			if perr = s.wrote(err); perr == err {
				perr = fmt.Errorf("store: %w", err) // not a storage failure, still not healthy
			}
		}
		h.mu.Lock()
		h.probeAt, h.probe = now, perr
		h.mu.Unlock()
	}
	if perr != nil {
		return perr
	}
	h.mu.Lock()
	lastErr, at, recovered := h.lastErr, h.lastAt, h.okSeq > h.errSeq
	h.mu.Unlock()
	if lastErr != nil && !recovered && now.Sub(at) < writeErrorWindow {
		return fmt.Errorf("%w: a write failed %s ago: %v", ErrCannotWrite, now.Sub(at).Round(time.Second), lastErr)
	}
	return nil
}

// Reserve is space kept on the store's disk for deletes: Release frees it
// (true when it freed something), for a delete that failed on a full disk
// to be tried once more.
type Reserve interface{ Release() bool }

// SetReserve sets the space deletes may release when the disk is full.
func (s *Store) SetReserve(r Reserve) { s.reserve = r }

// deleting runs a delete, and once more after releasing the reserve when
// the first try failed because the disk is full: SQLite needs room in its
// write-ahead log to delete, so a full disk could otherwise never be
// relieved through Kiln.
func (s *Store) deleting(f func() error) error {
	err := f()
	if DiskFull(err) && s.reserve != nil && s.reserve.Release() {
		err = f()
	}
	return s.wrote(err)
}
