package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// AcquireLease takes the leader lease name for holder for ttl, or renews
// it: it is taken when nobody holds it, when its holder's time ran out,
// or when holder holds it already. held is false when another holder
// has it. token identifies the tenure: it is bumped whenever the lease
// starts a new one (another holder, or the same one after it expired or
// was released), and stays while a holder renews in time. A holder whose
// renewal returns another token than it had lost the lease meanwhile.
//
// One conditional upsert: PostgreSQL locks the row it conflicts with and
// evaluates the WHERE on its newest version, so under READ COMMITTED two
// replicas never both get it; SQLite has one writer.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, token int64, err error) {
	if name == "" || holder == "" {
		return false, 0, errors.New("acquire lease: name and holder required")
	}
	if ttl <= 0 {
		return false, 0, errors.New("acquire lease: ttl must be positive")
	}
	now := s.nowMS()
	err = s.db.QueryRowContext(ctx, `INSERT INTO leader_leases (name, holder, token, expires_at) VALUES (?, ?, 1, ?)
		ON CONFLICT (name) DO UPDATE SET
			token = CASE WHEN leader_leases.holder = excluded.holder AND leader_leases.expires_at > ? THEN leader_leases.token ELSE leader_leases.token + 1 END,
			holder = excluded.holder,
			expires_at = excluded.expires_at
		WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at <= ?
		RETURNING token`, name, holder, now+ttl.Milliseconds(), now, now).Scan(&token)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, s.wrote(err)
	}
	return true, token, nil
}

// ReleaseLease gives up holder's lease name at once, so another holder
// takes it at its next try instead of when it expires. The row stays,
// its token with it: the next holder's is higher. Releasing a lease one
// does not hold changes nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE leader_leases SET expires_at = 0 WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return s.wrote(err)
	}
	return nil
}

// LeaderLease is a lease's row, for tests and the operator's view.
type LeaderLease struct {
	Name, Holder string
	Token        int64
	ExpiresAt    time.Time
}

// Lease reads the lease name (ErrNotFound: never taken).
func (s *Store) Lease(ctx context.Context, name string) (*LeaderLease, error) {
	l := &LeaderLease{Name: name}
	var exp int64
	err := s.db.QueryRowContext(ctx, `SELECT holder, token, expires_at FROM leader_leases WHERE name = ?`, name).Scan(&l.Holder, &l.Token, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	l.ExpiresAt = fromMS(exp)
	return l, nil
}
