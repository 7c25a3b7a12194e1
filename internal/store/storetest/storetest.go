// Package storetest gives tests a fresh, empty database of the dialect the
// run asks for: SQLite by default, PostgreSQL when KILN_TEST_STORE is
// "postgres", on the server KILN_TEST_POSTGRES names (a postgres:// URL of
// a role that may create databases). The same tests then run on both:
// scripts/test.sh runs every package that opens a store once more with
// KILN_TEST_STORE=postgres.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx"
)

// Env names the PostgreSQL server tests use; StoreEnv the dialect of the
// run's stores.
const (
	Env      = "KILN_TEST_POSTGRES"
	StoreEnv = "KILN_TEST_STORE"
)

// Postgres reports whether this run's stores are PostgreSQL.
func Postgres() bool { return os.Getenv(StoreEnv) == "postgres" }

// HavePostgres reports whether a PostgreSQL server is there to test.
func HavePostgres() bool { return os.Getenv(Env) != "" }

// Database returns a -database setting for a new, empty database, removed
// when the test ends: a SQLite path in the test's temporary directory, or
// in a PostgreSQL run a database of its own (PostgresDatabase).
func Database(t testing.TB) string {
	t.Helper()
	if !Postgres() {
		return filepath.Join(t.TempDir(), "kiln.db")
	}
	return PostgresDatabase(t)
}

// PostgresDatabase returns the URL of a new, empty PostgreSQL database on
// KILN_TEST_POSTGRES's server, dropped when the test ends.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(Env)
	if admin == "" {
		t.Fatalf("%s=postgres but %s names no server (scripts/postgres.sh starts one)", StoreEnv, Env)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("%s: %v", Env, err)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "kiln_test_" + hex.EncodeToString(b[:])
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatalf("%s: %v", Env, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create a test database on %s: %v", u.Redacted(), err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", admin)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a store the test left open must not keep it.
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
