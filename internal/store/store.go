package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL through pgx, registered as "pgx"
	_ "modernc.org/sqlite"             // the pure-Go SQLite driver, registered as "sqlite"
)

// Store is Kiln's persistence over database/sql. Times are stored as Unix
// milliseconds so that comparisons in SQL (lease expiry, retry backoff) are
// exact integers on every database.
type Store struct {
	db     *db
	sealer Sealer
	now    func() time.Time
	// health remembers failed writes (health.go); reserve is released
	// for deletes on a full disk.
	health  writeHealth
	reserve Reserve
	// outboxHint is OnForgeStatus's: set once, before use.
	outboxHint func()
	// originID names this store in the hints it publishes (hints.go).
	originOnce sync.Once
	originID   string
}

// Open opens the store a -database setting names: a postgres:// or
// postgresql:// URL is PostgreSQL, anything else the path of a SQLite
// file.
func Open(ctx context.Context, database string, sealer Sealer) (*Store, error) {
	if IsPostgres(database) {
		return OpenPostgres(ctx, database, sealer)
	}
	return OpenSQLite(ctx, database, sealer)
}

// IsPostgres reports whether a -database setting names PostgreSQL.
func IsPostgres(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// applies migrations. WAL mode lets readers proceed while one writer writes;
// busy_timeout makes concurrent writers wait instead of failing, and
// _txlock=immediate takes the write lock at BEGIN so two claimers can never
// both read a job as queued and then race to update it.
func OpenSQLite(ctx context.Context, path string, sealer Sealer) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	sqldb.SetMaxOpenConns(4)
	return open(ctx, &db{sql: sqldb, d: dialectSQLite}, path, sealer)
}

// OpenPostgres connects to the PostgreSQL database at url (pgx) and
// applies its migrations. Transactions take one advisory lock (see
// writeLock), so several servers on one database never interleave the
// store's read-then-write transactions.
func OpenPostgres(ctx context.Context, url string, sealer Sealer) (*Store, error) {
	sqldb, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	sqldb.SetMaxOpenConns(16)
	return open(ctx, &db{sql: sqldb, d: dialectPostgres}, RedactDatabase(url), sealer)
}

func open(ctx context.Context, conn *db, name string, sealer Sealer) (*Store, error) {
	s := &Store{db: conn, sealer: sealer, now: time.Now}
	if err := conn.PingContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	if err := s.migrate(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// RedactDatabase is a -database setting fit for logs and errors: a
// PostgreSQL URL without its password.
func RedactDatabase(database string) string {
	if !IsPostgres(database) {
		return database
	}
	u, err := url.Parse(database)
	if err != nil {
		return "postgres://…"
	}
	return u.Redacted()
}

// Dialect names the database: "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.db.d.String() }

// DB is the database handle for components with tables of their own in
// the store's migrations (the cache service): database/sql's calls, with
// ? placeholders in either dialect.
func (s *Store) DB() *DBHandle { return &DBHandle{c: s.db} }

// DBHandle is Store.DB's handle.
type DBHandle struct{ c *db }

func (h *DBHandle) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return h.c.ExecContext(ctx, q, args...)
}

func (h *DBHandle) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return h.c.QueryContext(ctx, q, args...)
}

func (h *DBHandle) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return h.c.QueryRowContext(ctx, q, args...)
}

func (s *Store) Close() error { return s.db.Close() }

// Ping checks the database answers (for /healthz).
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// --- time helpers ---

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func nullTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

func nullInt(v sql.NullInt64) *int {
	if !v.Valid {
		return nil
	}
	i := int(v.Int64)
	return &i
}

func (s *Store) nowMS() int64 { return ms(s.now()) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *Store) seal(v string) ([]byte, error) {
	if s.sealer == nil {
		return nil, errors.New("store: no sealer configured for secrets")
	}
	return s.sealer.Seal([]byte(v))
}

func (s *Store) open(v []byte) (string, error) {
	if len(v) == 0 {
		return "", nil
	}
	if s.sealer == nil {
		return "", errors.New("store: no sealer configured for secrets")
	}
	p, err := s.sealer.Open(v)
	if err != nil {
		return "", fmt.Errorf("decrypt secret (wrong secret key?): %w", err)
	}
	return string(p), nil
}

// --- projects ---

const projectCols = `id, name, clone_url, default_branch, webhook_secret, cancel_superseded, fork_pull_requests, draft_pull_requests, badge, created_at`

func (s *Store) scanProject(row interface{ Scan(...any) error }) (*Project, error) {
	var p Project
	var secret []byte
	var created int64
	var cancel int
	if err := row.Scan(&p.ID, &p.Name, &p.CloneURL, &p.DefaultBranch, &secret, &cancel, &p.ForkPullRequests, &p.DraftPullRequests, &p.Badge, &created); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("project: %w", ErrNotFound)
		}
		return nil, err
	}
	p.CancelSuperseded = cancel != 0
	p.CreatedAt = fromMS(created)
	var err error
	if p.WebhookSecret, err = s.open(secret); err != nil {
		return nil, err
	}
	return &p, nil
}

// CreateProject stores a new project. Name must be unique (ErrConflict).
func (s *Store) CreateProject(ctx context.Context, p *Project) error {
	secret, err := s.seal(p.WebhookSecret)
	if err != nil {
		return err
	}
	p.CreatedAt = fromMS(s.nowMS())
	p.ForkPullRequests = cmp.Or(p.ForkPullRequests, ForkApprove)
	p.DraftPullRequests = cmp.Or(p.DraftPullRequests, DraftBuild)
	p.Badge = cmp.Or(p.Badge, BadgePrivate)
	err = s.db.QueryRowContext(ctx, `INSERT INTO projects (name, clone_url, default_branch, webhook_secret, cancel_superseded, fork_pull_requests, draft_pull_requests, badge, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		p.Name, p.CloneURL, p.DefaultBranch, secret, boolInt(p.CancelSuperseded), p.ForkPullRequests, p.DraftPullRequests, p.Badge, ms(p.CreatedAt)).Scan(&p.ID)
	if isUniqueViolation(err) {
		return fmt.Errorf("project %q: %w", p.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	return nil
}

// UpdateProject writes every field of p (found by ID).
func (s *Store) UpdateProject(ctx context.Context, p *Project) error {
	secret, err := s.seal(p.WebhookSecret)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE projects SET clone_url = ?, default_branch = ?, webhook_secret = ?, cancel_superseded = ?, fork_pull_requests = ?, draft_pull_requests = ?, badge = ? WHERE id = ?`,
		p.CloneURL, p.DefaultBranch, secret, boolInt(p.CancelSuperseded), cmp.Or(p.ForkPullRequests, ForkApprove), cmp.Or(p.DraftPullRequests, DraftBuild), cmp.Or(p.Badge, BadgePrivate), p.ID)
	return mustAffect(res, err, "project")
}

func (s *Store) ProjectByName(ctx context.Context, name string) (*Project, error) {
	return s.scanProject(s.db.QueryRowContext(ctx, `SELECT `+projectCols+` FROM projects WHERE name = ?`, name))
}

func (s *Store) ProjectByID(ctx context.Context, id int64) (*Project, error) {
	return s.scanProject(s.db.QueryRowContext(ctx, `SELECT `+projectCols+` FROM projects WHERE id = ?`, id))
}

func (s *Store) ListProjects(ctx context.Context) ([]*Project, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+projectCols+` FROM projects ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Project
	for rows.Next() {
		p, err := s.scanProject(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// DeleteProject deletes a project and everything of it. Its log lines go
// first, in batches, each its own transaction: one huge delete would need
// as much room in SQLite's write-ahead log as the lines it deletes, which a
// full disk (or its reserve) may not have.
func (s *Store) DeleteProject(ctx context.Context, id int64) error {
	for {
		var n int64
		err := s.deleting(func() error {
			res, err := s.db.ExecContext(ctx, `DELETE FROM log_lines WHERE (job_id, attempt, seq) IN (SELECT l.job_id, l.attempt, l.seq FROM log_lines l JOIN jobs j ON j.id = l.job_id JOIN builds b ON b.id = j.build_id
				WHERE b.project_id = ? LIMIT ?)`, id, pruneBatch)
			if err == nil {
				n, err = res.RowsAffected()
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("project: delete its logs: %w", err)
		}
		if n < pruneBatch {
			break
		}
	}
	var res sql.Result
	err := s.deleting(func() error {
		var err error
		res, err = s.db.ExecContext(ctx, `DELETE FROM projects WHERE id = ?`, id)
		return err
	})
	return mustAffect(res, err, "project")
}

func mustAffect(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

// --- secrets ---

func (s *Store) SetSecret(ctx context.Context, projectID int64, name, value string) error {
	sealed, err := s.seal(value)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO secrets (project_id, name, value) VALUES (?, ?, ?)
		ON CONFLICT (project_id, name) DO UPDATE SET value = excluded.value`, projectID, name, sealed)
	return err
}

func (s *Store) DeleteSecret(ctx context.Context, projectID int64, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM secrets WHERE project_id = ? AND name = ?`, projectID, name)
	return mustAffect(res, err, "secret")
}

// Secrets returns the project's secrets, decrypted, sorted by name.
func (s *Store) Secrets(ctx context.Context, projectID int64) ([]Secret, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, value FROM secrets WHERE project_id = ? ORDER BY name`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Secret
	for rows.Next() {
		var name string
		var sealed []byte
		if err := rows.Scan(&name, &sealed); err != nil {
			return nil, err
		}
		v, err := s.open(sealed)
		if err != nil {
			return nil, err
		}
		out = append(out, Secret{Name: name, Value: v})
	}
	return out, rows.Err()
}

// --- tokens ---

// TokenPrefix starts every Kiln token, so leaked tokens are recognisable.
const TokenPrefix = "kiln_"

func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

// CreateToken makes a new random token and stores only its hash. The
// plaintext is returned once and never again.
func (s *Store) CreateToken(ctx context.Context, name string, kind TokenKind) (*Token, string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, "", err
	}
	plain := TokenPrefix + string(kind) + "_" + hex.EncodeToString(b[:])
	t := &Token{Name: name, Kind: kind, CreatedAt: fromMS(s.nowMS())}
	err := s.db.QueryRowContext(ctx, `INSERT INTO tokens (name, kind, hash, created_at) VALUES (?, ?, ?, ?) RETURNING id`, name, string(kind), hashToken(plain), ms(t.CreatedAt)).Scan(&t.ID)
	if err != nil {
		return nil, "", fmt.Errorf("create token: %w", err)
	}
	return t, plain, nil
}

// Authenticate returns the token matching plain, or ErrNotFound when it is
// unknown or revoked.
func (s *Store) Authenticate(ctx context.Context, plain string) (*Token, error) {
	if !strings.HasPrefix(plain, TokenPrefix) {
		return nil, fmt.Errorf("token: %w", ErrNotFound)
	}
	var t Token
	var kind string
	var created int64
	var used sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT id, name, kind, created_at, last_used FROM tokens WHERE hash = ? AND revoked = 0`, hashToken(plain)).
		Scan(&t.ID, &t.Name, &kind, &created, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	t.Kind, t.CreatedAt, t.LastUsed = TokenKind(kind), fromMS(created), nullTime(used)
	// last_used is advisory: update it at most once a minute to spare writes.
	if now := s.nowMS(); !used.Valid || now-used.Int64 > 60_000 {
		_, _ = s.db.ExecContext(ctx, `UPDATE tokens SET last_used = ? WHERE id = ?`, now, t.ID)
	}
	return &t, nil
}

func (s *Store) ListTokens(ctx context.Context) ([]*Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, kind, created_at, last_used FROM tokens WHERE revoked = 0 ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Token
	for rows.Next() {
		var t Token
		var kind string
		var created int64
		var used sql.NullInt64
		if err := rows.Scan(&t.ID, &t.Name, &kind, &created, &used); err != nil {
			return nil, err
		}
		t.Kind, t.CreatedAt, t.LastUsed = TokenKind(kind), fromMS(created), nullTime(used)
		out = append(out, &t)
	}
	return out, rows.Err()
}

func (s *Store) RevokeToken(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked = 1 WHERE id = ? AND revoked = 0`, id)
	return mustAffect(res, err, "token")
}

// CountTokens counts live tokens of a kind (to know whether this is a first start).
func (s *Store) CountTokens(ctx context.Context, kind TokenKind) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens WHERE kind = ? AND revoked = 0`, string(kind)).Scan(&n)
	return n, err
}

// --- agents ---

// UpsertAgent records an agent's registration or heartbeat.
func (s *Store) UpsertAgent(ctx context.Context, a *Agent) error {
	labels, _ := json.Marshal(a.Labels)
	now := s.nowMS()
	_, err := s.db.ExecContext(ctx, `INSERT INTO agents (id, name, labels, capacity, version, max_resources, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, labels = excluded.labels, capacity = excluded.capacity, version = excluded.version,
		max_resources = excluded.max_resources, last_seen = excluded.last_seen`,
		a.ID, a.Name, string(labels), a.Capacity, a.Version, a.Max, now, now)
	return err
}

// TouchAgent updates an agent's last_seen.
func (s *Store) TouchAgent(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE agents SET last_seen = ? WHERE id = ?`, s.nowMS(), id)
	return err
}

func (s *Store) ListAgents(ctx context.Context) ([]*Agent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, labels, capacity, version, protocol, max_resources, first_seen, last_seen, error_streak, last_error_at, last_ok_at FROM agents ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Agent
	for rows.Next() {
		var a Agent
		var labels string
		var first, last int64
		var lastErr, lastOK sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Name, &labels, &a.Capacity, &a.Version, &a.Protocol, &a.Max, &first, &last, &a.ErrorStreak, &lastErr, &lastOK); err != nil {
			return nil, err
		}
		a.LastErrorAt, a.LastOKAt = nullTime(lastErr), nullTime(lastOK)
		_ = json.Unmarshal([]byte(labels), &a.Labels)
		a.FirstSeen, a.LastSeen = fromMS(first), fromMS(last)
		out = append(out, &a)
	}
	return out, rows.Err()
}

// Now is the store's clock: the time its writes stamp. Readers of what
// it stamped (insights' windows) take their now from it, so a test that
// moves the clock moves them together.
func (s *Store) Now() time.Time { return s.now() }
