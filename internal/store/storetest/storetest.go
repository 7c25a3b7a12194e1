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
	"fmt"
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	database, drop, err := NewPostgresDatabase(ctx, admin, "kiln_test_")
	if err != nil {
		t.Fatalf("%s: %v", Env, err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Log(err)
		}
	})
	return database
}

// NewPostgresDatabase creates a new, empty database named prefix and
// random hex on the server the URL admin names (a role that may create
// databases), and returns its URL and the function that drops it (with
// FORCE: a store left open must not keep it). The benchmarks use it too.
func NewPostgresDatabase(ctx context.Context, admin, prefix string) (database string, drop func() error, err error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	name := prefix + hex.EncodeToString(b[:])
	db, err := sql.Open("pgx", admin)
	if err != nil {
		return "", nil, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		return "", nil, fmt.Errorf("create database %s on %s: %w", name, u.Redacted(), err)
	}
	drop = func() error {
		db, err := sql.Open("pgx", admin)
		if err != nil {
			return err
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
