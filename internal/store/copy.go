package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// CopyOptions are Copy's.
type CopyOptions struct {
	// Force empties a target that holds rows (TRUNCATE, in the copy's
	// transaction) instead of refusing it.
	Force bool
	// Progress, when set, is told of each table once it is copied.
	Progress func(TableCopy)
}

// TableCopy is what Copy did to one table.
type TableCopy struct {
	Table string
	Rows  int64
	// Replaced counts the text values PostgreSQL cannot hold (NUL or
	// invalid UTF-8, from a job's log say) written with U+FFFD instead,
	// as the store writes them on PostgreSQL.
	Replaced int64
}

// CopyReport is what Copy did.
type CopyReport struct {
	Tables         []TableCopy // in the order copied (parents first)
	Rows, Replaced int64
	// Truncated names the target's tables -force emptied.
	Truncated []string
	// FromVersion and ToVersion are the schema versions of the two
	// databases (each dialect counts its own migrations).
	FromVersion, ToVersion int
}

// copyBatch is the most rows one INSERT carries (fewer for wide tables:
// PostgreSQL takes at most 65535 parameters per statement).
const copyBatch = 1000

// Copy copies every table of a SQLite store into an empty PostgreSQL
// store, then verifies the copy: it moves an installation from the
// embedded default to PostgreSQL (kiln migrate). Both stores come from
// Open, so both are at this kiln's schema.
//
// The tables are discovered, not listed here: the two schemas must have
// the same tables with the same columns (a table a later migration adds
// to one dialect only is an error that names it, not a table silently
// left behind). Values are copied as they are stored — sealed secrets as
// bytes, so the target needs the same secret key — except text PostgreSQL
// cannot hold (see TableCopy.Replaced). Identity sequences are set past
// the highest id copied (or ever used, for SQLite's AUTOINCREMENT), so
// new rows never reuse an id.
//
// The whole copy is one PostgreSQL transaction, committed only once each
// table's row count and checksum of every column match the source's: a
// copy that fails leaves the target as it was. The source is read in one
// transaction holding SQLite's write lock: one consistent snapshot that
// nothing writes while it is read.
func Copy(ctx context.Context, from, to *Store, opts CopyOptions) (*CopyReport, error) {
	if from.db.d != dialectSQLite || to.db.d != dialectPostgres {
		return nil, fmt.Errorf("copy: from a SQLite store to a PostgreSQL one, not %s to %s", from.db.d, to.db.d)
	}
	src, err := from.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("copy: read the SQLite database: %w", err)
	}
	defer src.Rollback()
	dst, err := to.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("copy: write the PostgreSQL database: %w", err)
	}
	defer dst.Rollback()

	rep := &CopyReport{}
	if rep.FromVersion, err = schemaVersion(ctx, src); err != nil {
		return nil, err
	}
	if rep.ToVersion, err = schemaVersion(ctx, dst); err != nil {
		return nil, err
	}
	tables, err := copyPlan(ctx, src, dst)
	if err != nil {
		return nil, err
	}
	if rep.Truncated, err = emptyTarget(ctx, dst, tables, opts.Force); err != nil {
		return nil, err
	}
	sums := make(map[string]rowSum, len(tables))
	for _, t := range tables {
		tc, sum, err := copyRows(ctx, src, dst, t)
		if err != nil {
			return nil, err
		}
		sums[t.name] = sum
		rep.Tables = append(rep.Tables, tc)
		rep.Rows += tc.Rows
		rep.Replaced += tc.Replaced
		if opts.Progress != nil {
			opts.Progress(tc)
		}
	}
	if err := setSequences(ctx, src, dst, tables); err != nil {
		return nil, err
	}
	for _, t := range tables {
		if err := verifyTable(ctx, src, dst, t, sums[t.name]); err != nil {
			return nil, err
		}
	}
	if err := dst.Commit(); err != nil {
		return nil, fmt.Errorf("copy: commit: %w", err)
	}
	return rep, nil
}

// SQLiteInUse reports whether another connection has the SQLite database
// at path open — a kiln server using it, say: it tries to take the file
// for itself (locking_mode EXCLUSIVE, no waiting), which fails while any
// other connection, in this process or another, holds it open.
func SQLiteInUse(path string) (bool, error) {
	conn, err := sql.Open("sqlite", "file:"+path+"?mode=rw&_pragma=busy_timeout(0)&_pragma=locking_mode(EXCLUSIVE)")
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var n int
	err = conn.QueryRow(`SELECT COUNT(*) FROM sqlite_master`).Scan(&n)
	if err == nil {
		// In WAL mode the exclusive lock is taken by the first write
		// transaction rather than the first read.
		_, err = conn.Exec(`BEGIN EXCLUSIVE; COMMIT`)
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) && (lite.Code()&0xff == sqlite3.SQLITE_BUSY || lite.Code()&0xff == sqlite3.SQLITE_LOCKED) {
		return true, nil
	}
	return false, err
}

func schemaVersion(ctx context.Context, tx *dbTx) (int, error) {
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("copy: schema version (%s): %w", tx.d, err)
	}
	return v, nil
}

// copyTable is one table to copy: its columns, as PostgreSQL has them.
type copyTable struct {
	name string
	cols []copyColumn
}

type copyColumn struct {
	name     string
	pgType   string // information_schema's data_type
	identity bool   // an identity (or serial) column, with a sequence
}

// copyPlan compares the two schemas and returns the tables in an order
// that satisfies the target's foreign keys (parents before children).
func copyPlan(ctx context.Context, src, dst *dbTx) ([]copyTable, error) {
	srcTables, err := queryStrings(ctx, src, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name != 'schema_version'`)
	if err != nil {
		return nil, fmt.Errorf("copy: SQLite's tables: %w", err)
	}
	dstTables, err := queryStrings(ctx, dst, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name != 'schema_version'`)
	if err != nil {
		return nil, fmt.Errorf("copy: PostgreSQL's tables: %w", err)
	}
	if err := sameNames("tables", "", srcTables, dstTables); err != nil {
		return nil, err
	}
	byName := make(map[string]copyTable, len(dstTables))
	for _, name := range dstTables {
		if strings.Contains(name, "?") {
			return nil, fmt.Errorf("copy: table %q: a name with ? cannot be copied", name)
		}
		srcCols, err := queryStrings(ctx, src, `SELECT name FROM pragma_table_info(?)`, name)
		if err != nil {
			return nil, fmt.Errorf("copy: SQLite's columns of %s: %w", name, err)
		}
		t := copyTable{name: name}
		rows, err := dst.QueryContext(ctx, `SELECT column_name, data_type, is_identity = 'YES' OR COALESCE(column_default, '') LIKE 'nextval(%'
			FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position`, name)
		if err != nil {
			return nil, fmt.Errorf("copy: PostgreSQL's columns of %s: %w", name, err)
		}
		for rows.Next() {
			var c copyColumn
			if err := rows.Scan(&c.name, &c.pgType, &c.identity); err != nil {
				rows.Close()
				return nil, fmt.Errorf("copy: PostgreSQL's columns of %s: %w", name, err)
			}
			if strings.Contains(c.name, "?") {
				rows.Close()
				return nil, fmt.Errorf("copy: column %s.%q: a name with ? cannot be copied", name, c.name)
			}
			t.cols = append(t.cols, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("copy: PostgreSQL's columns of %s: %w", name, err)
		}
		dstCols := make([]string, len(t.cols))
		for i, c := range t.cols {
			dstCols[i] = c.name
		}
		if err := sameNames("columns", name, srcCols, dstCols); err != nil {
			return nil, err
		}
		byName[name] = t
	}

	// Foreign keys, child → parents, as the target enforces them.
	parents := map[string][]string{}
	rows, err := dst.QueryContext(ctx, `SELECT c.relname, p.relname FROM pg_constraint k
		JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE k.contype = 'f' AND n.nspname = current_schema()`)
	if err != nil {
		return nil, fmt.Errorf("copy: PostgreSQL's foreign keys: %w", err)
	}
	for rows.Next() {
		var child, parent string
		if err := rows.Scan(&child, &parent); err != nil {
			rows.Close()
			return nil, fmt.Errorf("copy: PostgreSQL's foreign keys: %w", err)
		}
		if child != parent { // a table referring to itself: none has
			parents[child] = append(parents[child], parent)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("copy: PostgreSQL's foreign keys: %w", err)
	}
	// Kahn's order, alphabetical among the ready: the same order each run.
	var order []copyTable
	done := map[string]bool{}
	left := slices.Clone(dstTables)
	sort.Strings(left)
	for len(left) > 0 {
		progressed := false
		for i := 0; i < len(left); i++ {
			ready := true
			for _, p := range parents[left[i]] {
				if !done[p] {
					ready = false
					break
				}
			}
			if ready {
				done[left[i]] = true
				order = append(order, byName[left[i]])
				left = slices.Delete(left, i, i+1)
				progressed = true
				break
			}
		}
		if !progressed {
			return nil, fmt.Errorf("copy: foreign keys form a cycle among %s", strings.Join(left, ", "))
		}
	}
	return order, nil
}

// sameNames errs when the two databases' lists differ, naming what is in
// one only.
func sameNames(what, table string, sqliteNames, pgNames []string) error {
	var onlySQLite, onlyPG []string
	for _, n := range sqliteNames {
		if !slices.Contains(pgNames, n) {
			onlySQLite = append(onlySQLite, n)
		}
	}
	for _, n := range pgNames {
		if !slices.Contains(sqliteNames, n) {
			onlyPG = append(onlyPG, n)
		}
	}
	if len(onlySQLite) == 0 && len(onlyPG) == 0 {
		return nil
	}
	where := ""
	if table != "" {
		where = " of " + table
	}
	var parts []string
	if len(onlySQLite) > 0 {
		parts = append(parts, "only SQLite has "+strings.Join(onlySQLite, ", "))
	}
	if len(onlyPG) > 0 {
		parts = append(parts, "only PostgreSQL has "+strings.Join(onlyPG, ", "))
	}
	return fmt.Errorf("copy: the two schemas' %s%s differ: %s (is each migrated by this kiln?)", what, where, strings.Join(parts, "; "))
}

// emptyTarget refuses a target with rows in any table, or with force
// empties it; it returns the tables that had rows.
func emptyTarget(ctx context.Context, dst *dbTx, tables []copyTable, force bool) ([]string, error) {
	var full []string
	for _, t := range tables {
		var has bool
		if err := dst.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+quoteIdent(t.name)+`)`).Scan(&has); err != nil {
			return nil, fmt.Errorf("copy: is %s empty: %w", t.name, err)
		}
		if has {
			full = append(full, t.name)
		}
	}
	if len(full) == 0 {
		return nil, nil
	}
	if !force {
		return nil, fmt.Errorf("copy: the PostgreSQL database is not empty (rows in %s): copy into an empty one, or force to empty it first", strings.Join(full, ", "))
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = quoteIdent(t.name)
	}
	if _, err := dst.ExecContext(ctx, `TRUNCATE TABLE `+strings.Join(names, ", ")+` RESTART IDENTITY`); err != nil {
		return nil, fmt.Errorf("copy: empty the PostgreSQL database: %w", err)
	}
	return full, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (t copyTable) columnList() string {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = quoteIdent(c.name)
	}
	return strings.Join(names, ", ")
}

// copyRows copies one table in batches of multi-row INSERTs, through the
// target's handle (its text rule applied), and returns the sum of the
// rows as written.
func copyRows(ctx context.Context, src, dst *dbTx, t copyTable) (TableCopy, rowSum, error) {
	tc := TableCopy{Table: t.name}
	var sum rowSum
	batch := min(copyBatch, 65535/len(t.cols))
	overriding := ""
	for _, c := range t.cols {
		if c.identity {
			overriding = " OVERRIDING SYSTEM VALUE" // explicit ids, even into GENERATED ALWAYS
		}
	}
	insert := func(n int) string {
		row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(t.cols)), ", ") + ")"
		return `INSERT INTO ` + quoteIdent(t.name) + ` (` + t.columnList() + `)` + overriding + ` VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
	}
	var full *dbStmt
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	args := make([]any, 0, batch*len(t.cols))
	flush := func() error {
		n := len(args) / len(t.cols)
		if n == 0 {
			return nil
		}
		var err error
		if n == batch {
			if full == nil {
				if full, err = dst.PrepareContext(ctx, insert(batch)); err != nil {
					return err
				}
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = dst.ExecContext(ctx, insert(n), args...)
		}
		args = args[:0]
		return err
	}

	rows, err := src.QueryContext(ctx, `SELECT `+t.columnList()+` FROM `+quoteIdent(t.name))
	if err != nil {
		return tc, sum, fmt.Errorf("copy: read %s: %w", t.name, err)
	}
	defer rows.Close()
	vals := make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return tc, sum, fmt.Errorf("copy: read %s: %w", t.name, err)
		}
		for i, c := range t.cols {
			v, replaced, err := pgValue(vals[i], c.pgType)
			if err != nil {
				return tc, sum, fmt.Errorf("copy: %s.%s: %w", t.name, c.name, err)
			}
			if replaced {
				tc.Replaced++
			}
			vals[i] = v
		}
		sum.add(vals)
		args = append(args, vals...)
		tc.Rows++
		if len(args) == batch*len(t.cols) {
			if err := flush(); err != nil {
				return tc, sum, fmt.Errorf("copy: write %s: %w", t.name, err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return tc, sum, fmt.Errorf("copy: read %s: %w", t.name, err)
	}
	if err := flush(); err != nil {
		return tc, sum, fmt.Errorf("copy: write %s: %w", t.name, err)
	}
	return tc, sum, nil
}

// pgValue is a value read from SQLite as the PostgreSQL column's type
// takes it. SQLite keeps what it was given, whatever a column declares;
// the store gives each column its one type, but a blob column written
// with a string (or text with bytes) comes back as such.
func pgValue(v any, pgType string) (out any, replaced bool, err error) {
	if v == nil {
		return nil, false, nil
	}
	switch pgType {
	case "bigint", "integer", "smallint":
		switch x := v.(type) {
		case int64:
			return x, false, nil
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
				return int64(x), false, nil
			}
		}
	case "double precision", "real":
		switch x := v.(type) {
		case float64:
			return x, false, nil
		case int64:
			return float64(x), false, nil
		}
	case "text", "character varying", "character":
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		default:
			return nil, false, fmt.Errorf("a %T where PostgreSQL has %s", v, pgType)
		}
		return pgText(s), !pgHoldsText(s), nil
	case "bytea":
		switch x := v.(type) {
		case []byte:
			if x == nil {
				x = []byte{} // a zero-length blob, not NULL
			}
			return x, false, nil
		case string:
			return []byte(x), false, nil
		}
	default:
		return v, false, nil // a type the store does not use yet: PostgreSQL judges
	}
	return nil, false, fmt.Errorf("a %T (%v) where PostgreSQL has %s", v, v, pgType)
}

// setSequences sets each identity column's sequence past the highest id
// copied, and past the highest SQLite's AUTOINCREMENT ever gave (a
// deleted build's id stays unused, as on SQLite).
func setSequences(ctx context.Context, src, dst *dbTx, tables []copyTable) error {
	used := map[string]int64{}
	var have bool
	if err := src.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence')`).Scan(&have); err != nil {
		return fmt.Errorf("copy: SQLite's sequences: %w", err)
	}
	if have {
		rows, err := src.QueryContext(ctx, `SELECT name, seq FROM sqlite_sequence`)
		if err != nil {
			return fmt.Errorf("copy: SQLite's sequences: %w", err)
		}
		for rows.Next() {
			var name string
			var seq int64
			if err := rows.Scan(&name, &seq); err != nil {
				rows.Close()
				return fmt.Errorf("copy: SQLite's sequences: %w", err)
			}
			used[name] = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("copy: SQLite's sequences: %w", err)
		}
	}
	for _, t := range tables {
		for _, c := range t.cols {
			if !c.identity {
				continue
			}
			var seq sql.NullString
			if err := dst.QueryRowContext(ctx, `SELECT pg_get_serial_sequence(?, ?)`, quoteIdent(t.name), c.name).Scan(&seq); err != nil {
				return fmt.Errorf("copy: the sequence of %s.%s: %w", t.name, c.name, err)
			}
			if !seq.Valid {
				continue
			}
			var top int64
			if err := dst.QueryRowContext(ctx, `SELECT COALESCE(MAX(`+quoteIdent(c.name)+`), 0) FROM `+quoteIdent(t.name)).Scan(&top); err != nil {
				return fmt.Errorf("copy: the highest %s.%s: %w", t.name, c.name, err)
			}
			top = max(top, used[t.name])
			var err error
			if top > 0 {
				_, err = dst.ExecContext(ctx, `SELECT setval(CAST(? AS regclass), ?)`, seq.String, top)
			} else {
				_, err = dst.ExecContext(ctx, `SELECT setval(CAST(? AS regclass), 1, false)`, seq.String)
			}
			if err != nil {
				return fmt.Errorf("copy: set the sequence of %s.%s: %w", t.name, c.name, err)
			}
		}
	}
	return nil
}

// verifyTable compares a copied table with its source: the row counts of
// both, and the sum of the rows read back from PostgreSQL with the sum of
// those written.
func verifyTable(ctx context.Context, src, dst *dbTx, t copyTable, want rowSum) error {
	var nSrc, nDst int64
	if err := src.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(t.name)).Scan(&nSrc); err != nil {
		return fmt.Errorf("copy: verify %s: %w", t.name, err)
	}
	if err := dst.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(t.name)).Scan(&nDst); err != nil {
		return fmt.Errorf("copy: verify %s: %w", t.name, err)
	}
	if nSrc != nDst {
		return fmt.Errorf("copy: verify %s: %d rows in SQLite, %d in PostgreSQL", t.name, nSrc, nDst)
	}
	rows, err := dst.QueryContext(ctx, `SELECT `+t.columnList()+` FROM `+quoteIdent(t.name))
	if err != nil {
		return fmt.Errorf("copy: verify %s: %w", t.name, err)
	}
	defer rows.Close()
	var got rowSum
	vals := make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("copy: verify %s: %w", t.name, err)
		}
		got.add(vals)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("copy: verify %s: %w", t.name, err)
	}
	if got != want {
		return fmt.Errorf("copy: verify %s: the rows read back from PostgreSQL differ from those copied (checksum)", t.name)
	}
	return nil
}

// rowSum is a checksum of a table's rows that does not depend on their
// order (the two databases order text differently): the sum, lane by
// lane, of each row's SHA-256.
type rowSum [4]uint64

func (s *rowSum) add(vals []any) {
	h := sha256.New()
	var n [8]byte
	word := func(tag byte, v uint64) {
		h.Write([]byte{tag})
		binary.BigEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	for _, v := range vals {
		switch x := v.(type) {
		case nil:
			h.Write([]byte{'n'})
		case int64:
			word('i', uint64(x))
		case float64:
			word('f', math.Float64bits(x))
		case string:
			word('s', uint64(len(x)))
			h.Write([]byte(x))
		case []byte:
			word('b', uint64(len(x)))
			h.Write(x)
		default:
			str := fmt.Sprintf("%T:%v", x, x)
			word('o', uint64(len(str)))
			h.Write([]byte(str))
		}
	}
	sum := h.Sum(nil)
	for i := range s {
		s[i] += binary.BigEndian.Uint64(sum[8*i:])
	}
}

func queryStrings(ctx context.Context, tx *dbTx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
