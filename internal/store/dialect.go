package store

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is what differs between the two databases Kiln runs on. The
// store's SQL is written once, in the subset both speak (placeholders as
// ?, RETURNING for new ids, ON CONFLICT upserts, row values); what is left
// over goes through here.
type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// rebind turns the store's ? placeholders into PostgreSQL's $1, $2, …
// The store's SQL has no ? inside string literals or identifiers, so every
// ? is a placeholder.
func (d dialect) rebind(q string) string {
	if d != dialectPostgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// writeLock is the PostgreSQL advisory lock every store transaction takes
// first: it gives PostgreSQL the one-writer-at-a-time transactions SQLite
// has (BEGIN IMMEDIATE), which the store's read-then-write transactions
// (claims, plans, finishes) are written for, across every replica.
// Statements outside a transaction are single conditional UPDATEs and
// INSERTs, correct under READ COMMITTED on their own (PostgreSQL re-checks
// an UPDATE's WHERE on the newest row version).
const writeLock = 0x6b696c6e // "kiln"

// isUniqueViolation tells a unique or primary key violation by the
// database's error code, not its message.
func isUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		return lite.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || lite.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// db is the store's database handle: database/sql with the dialect's
// placeholders, and transactions that take the write lock on PostgreSQL.
//
// The database/sql handle is a named field, not embedded: a call that
// would bypass the dialect (Exec without a context, Prepare) does not
// compile.
type db struct {
	sql   *sql.DB
	d     dialect
	stats txCounters
}

func (c *db) Close() error                          { return c.sql.Close() }
func (c *db) PingContext(ctx context.Context) error { return c.sql.PingContext(ctx) }

func (c *db) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return c.sql.ExecContext(ctx, c.d.rebind(q), c.d.args(args)...)
}

func (c *db) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return c.sql.QueryContext(ctx, c.d.rebind(q), c.d.args(args)...)
}

func (c *db) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return c.sql.QueryRowContext(ctx, c.d.rebind(q), c.d.args(args)...)
}

// BeginTx starts a transaction; on PostgreSQL it waits for the write lock
// first (see writeLock).
func (c *db) BeginTx(ctx context.Context, opts *sql.TxOptions) (*dbTx, error) {
	asked := time.Now()
	t, err := c.sql.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	if c.d == dialectPostgres {
		if _, err := t.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLock); err != nil {
			t.Rollback()
			return nil, err
		}
	}
	held := time.Now()
	c.stats.begun(held.Sub(asked))
	return &dbTx{tx: t, d: c.d, stats: &c.stats, held: held}, nil
}

// dbTx is a transaction with the dialect's placeholders.
type dbTx struct {
	tx *sql.Tx
	d  dialect
	// committed run once the transaction has committed: hints to those
	// waiting on what it wrote (never for what a rollback undid).
	committed []func()
	stats     *txCounters
	held      time.Time // since when it holds the write lock
}

// Commit commits, then runs the transaction's onCommit hints.
func (t *dbTx) Commit() error {
	err := t.tx.Commit()
	t.stats.ended(time.Since(t.held), err != nil)
	if err != nil {
		return err
	}
	for _, f := range t.committed {
		f()
	}
	return nil
}

// onCommit runs f after the transaction commits (nil f: nothing).
func (t *dbTx) onCommit(f func()) {
	if f != nil {
		t.committed = append(t.committed, f)
	}
}

// Rollback rolls back; after a Commit it does nothing (sql.ErrTxDone), so
// that it can always be deferred.
func (t *dbTx) Rollback() error {
	err := t.tx.Rollback()
	if !errors.Is(err, sql.ErrTxDone) {
		t.stats.ended(time.Since(t.held), true)
	}
	return err
}

func (t *dbTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *dbTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *dbTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *dbTx) PrepareContext(ctx context.Context, q string) (*dbStmt, error) {
	st, err := t.tx.PrepareContext(ctx, t.d.rebind(q))
	if err != nil {
		return nil, err
	}
	return &dbStmt{stmt: st, d: t.d}, nil
}

// dbStmt is a prepared statement whose arguments fit the dialect.
type dbStmt struct {
	stmt *sql.Stmt
	d    dialect
}

func (s *dbStmt) Close() error { return s.stmt.Close() }

func (s *dbStmt) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	return s.stmt.ExecContext(ctx, s.d.args(args)...)
}

// args makes text arguments fit the dialect: PostgreSQL's text holds
// neither NUL nor invalid UTF-8, both of which a job's log line, a commit
// message or a webhook's title may carry; there they become U+FFFD (on
// SQLite the bytes are kept as they came).
func (d dialect) args(args []any) []any {
	if d != dialectPostgres {
		return args
	}
	out := args
	for i, a := range args {
		if v, ok := a.(string); ok && !pgHoldsText(v) {
			if &out[0] == &args[0] {
				out = slices.Clone(args) // the caller's slice stays as it was
			}
			out[i] = pgText(v)
		}
	}
	return out
}

// pgHoldsText reports whether PostgreSQL's text can hold v as it is.
func pgHoldsText(v string) bool { return strings.IndexByte(v, 0) < 0 && utf8.ValidString(v) }

// pgText is v as PostgreSQL's text holds it: NUL and invalid UTF-8 made
// U+FFFD.
func pgText(v string) string {
	if pgHoldsText(v) {
		return v
	}
	return strings.ReplaceAll(strings.ToValidUTF8(v, "\uFFFD"), "\x00", "\uFFFD")
}
