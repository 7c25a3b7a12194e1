package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TokenSessionPrefix starts the session token of a browser signed in
// with an admin token (the dashboard's token sign-in): the cookie holds
// this session's token, never the admin token itself, so signing out
// ends the browser's session and leaves the token working elsewhere.
const TokenSessionPrefix = TokenPrefix + "tsession_"

// TokenSession is a browser's session signed in with an API token. It
// lives while the token does: revoking the token ends it.
type TokenSession struct {
	ID        int64
	TokenID   int64
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// CreateTokenSession starts a session of token tokenID that ends after
// ttl, and returns it with its own token (the plaintext, given once).
// Sessions past their expiry are deleted on the way.
func (s *Store) CreateTokenSession(ctx context.Context, tokenID int64, ttl time.Duration) (*TokenSession, string, error) {
	plain, csrf, now, err := s.newSession(ctx, "token_sessions", TokenSessionPrefix, ttl)
	if err != nil {
		return nil, "", err
	}
	se := &TokenSession{TokenID: tokenID, CSRF: csrf, CreatedAt: fromMS(now), ExpiresAt: fromMS(now + ttl.Milliseconds())}
	err = s.db.QueryRowContext(ctx, `INSERT INTO token_sessions (hash, token_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id`,
		hashToken(plain), tokenID, csrf, ms(se.CreatedAt), ms(se.ExpiresAt)).Scan(&se.ID)
	if err != nil {
		return nil, "", s.wrote(fmt.Errorf("session: %w", err))
	}
	return se, plain, nil
}

// TokenSessionByToken returns the live session of plain and its token,
// or ErrNotFound (unknown, ended, expired, or its token revoked).
func (s *Store) TokenSessionByToken(ctx context.Context, plain string) (*TokenSession, *Token, error) {
	if !strings.HasPrefix(plain, TokenSessionPrefix) {
		return nil, nil, fmt.Errorf("session: %w", ErrNotFound)
	}
	var se TokenSession
	var t Token
	var kind string
	var created, expires, tokCreated int64
	var used sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT s.id, s.token_id, s.csrf, s.created_at, s.expires_at, t.name, t.kind, t.created_at, t.last_used
		FROM token_sessions s JOIN tokens t ON t.id = s.token_id
		WHERE s.hash = ? AND s.expires_at > ? AND t.revoked = 0`, hashToken(plain), s.nowMS()).
		Scan(&se.ID, &se.TokenID, &se.CSRF, &created, &expires, &t.Name, &kind, &tokCreated, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("session: %w", ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	se.CreatedAt, se.ExpiresAt = fromMS(created), fromMS(expires)
	t.ID, t.Kind, t.CreatedAt, t.LastUsed = se.TokenID, TokenKind(kind), fromMS(tokCreated), nullTime(used)
	return &se, &t, nil
}

// DeleteTokenSession ends a token's browser session (sign-out);
// ErrNotFound when there is none.
func (s *Store) DeleteTokenSession(ctx context.Context, plain string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM token_sessions WHERE hash = ?`, hashToken(plain))
	return mustAffect(res, err, "session")
}
