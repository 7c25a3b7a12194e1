package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Single sign-on's persistence: the users who signed in through the
// OpenID provider, their sessions, the one-time codes the CLI trades for
// a session, and the role bindings an admin set. Who may do what with
// those roles is internal/authz's policy, not the store's.

// User is a person as the OpenID provider last described them.
type User struct {
	ID int64 `json:"id"`
	// Subject is the provider's stable id for the user (the ID token's
	// sub); the other fields are refreshed at each sign-in.
	Subject   string    `json:"subject"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Groups    []string  `json:"groups"`
	CreatedAt time.Time `json:"created_at"`
	LastLogin time.Time `json:"last_login"`
}

// UpsertUser records a sign-in: the user of u.Subject is created or its
// email, name and groups replaced. u's id and times are filled.
func (s *Store) UpsertUser(ctx context.Context, u *User) error {
	if u.Subject == "" {
		return errors.New("user: subject is required")
	}
	if u.Groups == nil {
		u.Groups = []string{}
	}
	groups, _ := json.Marshal(u.Groups)
	now := s.nowMS()
	var created int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO users (subject, email, name, user_groups, created_at, last_login) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (subject) DO UPDATE SET email = excluded.email, name = excluded.name, user_groups = excluded.user_groups, last_login = excluded.last_login
		RETURNING id, created_at`, u.Subject, u.Email, u.Name, string(groups), now, now).Scan(&u.ID, &created)
	if err != nil {
		return s.wrote(fmt.Errorf("user: %w", err))
	}
	u.CreatedAt, u.LastLogin = fromMS(created), fromMS(now)
	return nil
}

const userColumns = `u.id, u.subject, u.email, u.name, u.user_groups, u.created_at, u.last_login`

func scanUser(row interface{ Scan(...any) error }, extra ...any) (*User, error) {
	var u User
	var groups string
	var created, last int64
	if err := row.Scan(append([]any{&u.ID, &u.Subject, &u.Email, &u.Name, &groups, &created, &last}, extra...)...); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(groups), &u.Groups); err != nil || u.Groups == nil {
		u.Groups = []string{}
	}
	u.CreatedAt, u.LastLogin = fromMS(created), fromMS(last)
	return &u, nil
}

// UserByID returns a user, or ErrNotFound.
func (s *Store) UserByID(ctx context.Context, id int64) (*User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users u WHERE u.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("user %d: %w", id, ErrNotFound)
	}
	return u, err
}

// --- sessions ---

// SessionPrefix starts every session token (the kiln_session cookie's
// value, or the CLI's bearer token), so a session is told from an API
// token before any lookup.
const SessionPrefix = TokenPrefix + "session_"

// Session is a user's signed-in session. Only the hash of its token is
// stored; CSRF is the token a cookie-authenticated change must echo in
// X-Kiln-CSRF.
type Session struct {
	ID        int64
	UserID    int64
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// newSession makes a session's token (prefix and a secret) and CSRF
// token for a session of ttl, and deletes table's expired sessions on the
// way; now is the store's clock (Unix ms).
func (s *Store) newSession(ctx context.Context, table, prefix string, ttl time.Duration) (plain, csrf string, now int64, err error) {
	if ttl <= 0 {
		return "", "", 0, errors.New("session: the lifetime must be positive")
	}
	secret, err := randomHex(32)
	if err != nil {
		return "", "", 0, err
	}
	if csrf, err = randomHex(24); err != nil {
		return "", "", 0, err
	}
	now = s.nowMS()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM `+table+` WHERE expires_at <= ?`, now); err != nil {
		return "", "", 0, s.wrote(fmt.Errorf("session: %w", err))
	}
	return prefix + secret, csrf, now, nil
}

// CreateSession starts a session of userID that ends after ttl and
// returns it with its token (the plaintext, given once). Sessions past
// their expiry are deleted on the way.
func (s *Store) CreateSession(ctx context.Context, userID int64, ttl time.Duration) (*Session, string, error) {
	plain, csrf, now, err := s.newSession(ctx, "sessions", SessionPrefix, ttl)
	if err != nil {
		return nil, "", err
	}
	se := &Session{UserID: userID, CSRF: csrf, CreatedAt: fromMS(now), ExpiresAt: fromMS(now + ttl.Milliseconds())}
	err = s.db.QueryRowContext(ctx, `INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id`,
		hashToken(plain), userID, csrf, ms(se.CreatedAt), ms(se.ExpiresAt)).Scan(&se.ID)
	if err != nil {
		return nil, "", s.wrote(fmt.Errorf("session: %w", err))
	}
	return se, plain, nil
}

// SessionByToken returns the live session of a token and its user, or
// ErrNotFound (unknown, ended or expired).
func (s *Store) SessionByToken(ctx context.Context, plain string) (*Session, *User, error) {
	if !strings.HasPrefix(plain, SessionPrefix) {
		return nil, nil, fmt.Errorf("session: %w", ErrNotFound)
	}
	var se Session
	var created, expires int64
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+`, s.id, s.csrf, s.created_at, s.expires_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ? AND s.expires_at > ?`, hashToken(plain), s.nowMS()),
		&se.ID, &se.CSRF, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("session: %w", ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	se.UserID, se.CreatedAt, se.ExpiresAt = u.ID, fromMS(created), fromMS(expires)
	return &se, u, nil
}

// DeleteSession ends a session (sign-out); ErrNotFound when there is
// none of that token.
func (s *Store) DeleteSession(ctx context.Context, plain string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, hashToken(plain))
	return mustAffect(res, err, "session")
}

// --- one-time codes of the CLI's sign-in ---

// CreateLoginCode makes a one-time code standing for userID's sign-in,
// valid for ttl, that TakeLoginCode trades once.
func (s *Store) CreateLoginCode(ctx context.Context, userID int64, ttl time.Duration) (string, error) {
	plain, err := randomHex(24)
	if err != nil {
		return "", err
	}
	now := s.nowMS()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM login_codes WHERE expires_at <= ?`, now); err != nil {
		return "", s.wrote(fmt.Errorf("login code: %w", err))
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO login_codes (hash, user_id, expires_at) VALUES (?, ?, ?)`, hashToken(plain), userID, now+ttl.Milliseconds()); err != nil {
		return "", s.wrote(fmt.Errorf("login code: %w", err))
	}
	return plain, nil
}

// TakeLoginCode returns the user a live code stands for and deletes the
// code, in one statement: a code is traded once. ErrNotFound for a code
// unknown, used or expired.
func (s *Store) TakeLoginCode(ctx context.Context, plain string) (int64, error) {
	var userID, expires int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM login_codes WHERE hash = ? RETURNING user_id, expires_at`, hashToken(plain)).Scan(&userID, &expires)
	if errors.Is(err, sql.ErrNoRows) || err == nil && expires <= s.nowMS() {
		return 0, fmt.Errorf("login code: %w", ErrNotFound)
	}
	if err != nil {
		return 0, s.wrote(fmt.Errorf("login code: %w", err))
	}
	return userID, nil
}

// --- role bindings ---

// Binding kinds: a role given to one user (by subject or email) or to a
// group of the provider's groups claim.
const (
	BindUser  = "user"
	BindGroup = "group"
)

// RoleBinding gives Role to the user or group Subject on a project, or
// on every project when Project is "*".
type RoleBinding struct {
	ID int64
	// Project is the project's name, or "*".
	Project   string
	Kind      string
	Subject   string
	Role      string
	CreatedAt time.Time
}

// AllProjects names every project in a role binding.
const AllProjects = "*"

// SetRoleBinding gives b.Role to b's subject on b.Project, replacing the
// role it had there. An unknown project is ErrNotFound.
func (s *Store) SetRoleBinding(ctx context.Context, b *RoleBinding) error {
	if b.Kind != BindUser && b.Kind != BindGroup || b.Subject == "" || b.Role == "" {
		return errors.New("role binding: a kind (user or group), a subject and a role are required")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var project sql.NullInt64
	if b.Project != AllProjects {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM projects WHERE name = ?`, b.Project).Scan(&id); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("project %q: %w", b.Project, ErrNotFound)
		} else if err != nil {
			return err
		}
		project = sql.NullInt64{Int64: id, Valid: true}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM role_bindings WHERE project_id IS NOT DISTINCT FROM ? AND kind = ? AND subject = ?`, project, b.Kind, b.Subject); err != nil {
		return err
	}
	b.CreatedAt = fromMS(s.nowMS())
	if err := tx.QueryRowContext(ctx, `INSERT INTO role_bindings (project_id, kind, subject, role, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id`,
		project, b.Kind, b.Subject, b.Role, ms(b.CreatedAt)).Scan(&b.ID); err != nil {
		return err
	}
	return s.wrote(tx.Commit())
}

// RemoveRoleBinding deletes the binding of a subject on a project (or
// "*"); ErrNotFound when there is none.
func (s *Store) RemoveRoleBinding(ctx context.Context, project, kind, subject string) error {
	var res sql.Result
	var err error
	if project == AllProjects {
		res, err = s.db.ExecContext(ctx, `DELETE FROM role_bindings WHERE project_id IS NULL AND kind = ? AND subject = ?`, kind, subject)
	} else {
		res, err = s.db.ExecContext(ctx, `DELETE FROM role_bindings WHERE project_id = (SELECT id FROM projects WHERE name = ?) AND kind = ? AND subject = ?`, project, kind, subject)
	}
	return mustAffect(res, err, "role binding")
}

// ListRoleBindings returns every binding, by project ("*" first), kind
// and subject.
func (s *Store) ListRoleBindings(ctx context.Context) ([]RoleBinding, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT r.id, COALESCE(p.name, '*'), r.kind, r.subject, r.role, r.created_at
		FROM role_bindings r LEFT JOIN projects p ON p.id = r.project_id ORDER BY COALESCE(p.name, '*'), r.kind, r.subject`)
	return collect(rows, err, func(row interface{ Scan(...any) error }) (RoleBinding, error) {
		var b RoleBinding
		var created int64
		err := row.Scan(&b.ID, &b.Project, &b.Kind, &b.Subject, &b.Role, &created)
		b.CreatedAt = fromMS(created)
		return b, err
	})
}
