package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kilnci/kiln/internal/store"
)

func runMigrate(ctx context.Context, args []string) error {
	return migrate(ctx, args, os.Stdout)
}

// migrate copies a SQLite installation's database into an empty
// PostgreSQL one (store.Copy), printing what it copied.
func migrate(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kiln migrate", flag.ContinueOnError)
	from := fs.String("from", filepath.Join(defaultDataDir(), "kiln.db"), "the SQLite database to copy: a stopped server's DATA_DIR/kiln.db (or DATA_DIR)")
	to := fs.String("to", os.Getenv("KILN_DATABASE"), "the PostgreSQL database to copy into, a postgres:// URL ($KILN_DATABASE; keep the password out of the command line: PGPASSWORD or ~/.pgpass)")
	force := fs.Bool("force", false, "empty a PostgreSQL database that holds rows first (TRUNCATE of every table) instead of refusing it")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kiln migrate [-from DATA_DIR/kiln.db] [-to postgres://…] [-force]\n\n"+
			"Copies every table of a SQLite installation into an empty PostgreSQL database, then\n"+
			"verifies row counts and checksums; the copy is one transaction. Stop the server first.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("migrate: unexpected arguments %q", fs.Args())
	}
	switch {
	case *to == "":
		return errors.New("migrate: no PostgreSQL database: give -to postgres://… or set $KILN_DATABASE")
	case !store.IsPostgres(*to):
		return fmt.Errorf("migrate: -to %s is not a postgres:// URL", store.RedactDatabase(*to))
	case store.IsPostgres(*from):
		return fmt.Errorf("migrate: -from %s: copies from a SQLite file, not from PostgreSQL", store.RedactDatabase(*from))
	}
	path := *from
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "kiln.db")
	}
	if fi, err := os.Stat(path); err != nil {
		return fmt.Errorf("migrate: no SQLite database at %s: %w", path, err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("migrate: %s is not a SQLite database file", path)
	}
	// A server still running would go on writing the SQLite file after
	// the copy: those writes would be lost. Refuse rather than warn.
	inUse, err := store.SQLiteInUse(path)
	if err != nil {
		return fmt.Errorf("migrate: %s: %w", path, err)
	}
	if inUse {
		return fmt.Errorf("migrate: %s is open in another process (a kiln server or kiln up?): stop it first, so that nothing it writes later is left behind", path)
	}

	// No sealer: sealed values are copied as the bytes they are.
	src, err := store.OpenSQLite(ctx, path, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer src.Close()
	dst, err := store.OpenPostgres(ctx, *to, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer dst.Close()

	target := store.RedactDatabase(*to)
	fmt.Fprintf(out, "copying %s to %s\n", path, target)
	rep, err := store.Copy(ctx, src, dst, store.CopyOptions{Force: *force, Progress: func(tc store.TableCopy) {
		note := ""
		if tc.Replaced > 0 {
			note = fmt.Sprintf(" (%d text values with NUL or invalid UTF-8 written with U+FFFD)", tc.Replaced)
		}
		fmt.Fprintf(out, "  %-24s %9d %s%s\n", tc.Table, tc.Rows, plural(tc.Rows, "row", "rows"), note)
	}})
	if err != nil {
		return fmt.Errorf("migrate: %w (PostgreSQL is left as it was)", err)
	}
	if len(rep.Truncated) > 0 {
		fmt.Fprintf(out, "emptied first (-force): %d tables that held rows\n", len(rep.Truncated))
	}
	fmt.Fprintf(out, "copied %d rows in %d tables (SQLite schema %d, PostgreSQL schema %d); row counts and checksums verified\n",
		rep.Rows, len(rep.Tables), rep.FromVersion, rep.ToVersion)
	if rep.Replaced > 0 {
		fmt.Fprintf(out, "%d text values PostgreSQL cannot hold were written with U+FFFD, as a server on PostgreSQL writes them\n", rep.Replaced)
	}
	dir := filepath.Dir(path)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	key := filepath.Join(dir, "secret.key")
	if _, err := os.Stat(key); err == nil {
		fmt.Fprintf(out, "Secrets, webhook secrets and forge tokens were copied sealed with %s: start the server on PostgreSQL with the same key,\n"+
			"  kiln server -database \"$KILN_DATABASE\" -data-dir %s   (or -secret-key / $KILN_SECRET_KEY set to that file's contents)\n", key, dir)
	} else {
		fmt.Fprintf(out, "Secrets, webhook secrets and forge tokens were copied sealed with this installation's secret key (there is no %s:\n"+
			"  its server had -secret-key or $KILN_SECRET_KEY): start the server on PostgreSQL with the same one\n", key)
	}
	fmt.Fprintln(out, "API and agent tokens are copied too: the admin token and the agents' tokens keep working.")
	return nil
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
