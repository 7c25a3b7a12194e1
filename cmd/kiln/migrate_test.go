package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// kiln migrate copies a data dir's SQLite database to PostgreSQL: the
// target's URL from $KILN_DATABASE, the server's key unchanged.
func TestMigrateCommand(t *testing.T) {
	if !storetest.HavePostgres() {
		t.Skipf("no PostgreSQL server (%s)", storetest.Env)
	}
	ctx := context.Background()
	dir := t.TempDir()
	key, err := secretbox.LoadOrCreateKey(filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	box, err := secretbox.New(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kiln.db")
	src, err := store.Open(ctx, path, box)
	if err != nil {
		t.Fatal(err)
	}
	p := &store.Project{Name: "web", CloneURL: "/tmp/web", DefaultBranch: "main", WebhookSecret: "hook"}
	if err := src.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := src.SetSecret(ctx, p.ID, "TOKEN", "sealed-value"); err != nil {
		t.Fatal(err)
	}
	_, admin, err := src.CreateToken(ctx, "admin", store.TokenAdmin)
	if err != nil {
		t.Fatal(err)
	}

	url := storetest.PostgresDatabase(t)
	t.Setenv("KILN_DATABASE", url)
	var out bytes.Buffer
	if err := migrate(ctx, []string{"-from", path}, &out); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("while a store has the file open: %v", err)
	}
	src.Close()

	if err := migrate(ctx, []string{"-from", dir}, &out); err != nil { // a data dir names its kiln.db
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"projects", "secrets", "tokens", "verified", filepath.Join(dir, "secret.key")} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	dst, err := store.Open(ctx, url, box)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if got, err := dst.ProjectByName(ctx, "web"); err != nil || got.WebhookSecret != "hook" {
		t.Fatalf("project: %+v, %v", got, err)
	}
	if s, err := dst.Secrets(ctx, p.ID); err != nil || len(s) != 1 || s[0].Value != "sealed-value" {
		t.Fatalf("secrets: %+v, %v", s, err)
	}
	if _, err := dst.Authenticate(ctx, admin); err != nil {
		t.Fatalf("admin token: %v", err)
	}

	out.Reset()
	if err := migrate(ctx, []string{"-from", path}, &out); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a second copy: %v", err)
	}
	if err := migrate(ctx, []string{"-from", path, "-force"}, &out); err != nil || !strings.Contains(out.String(), "emptied first") {
		t.Fatalf("-force: %v\n%s", err, out.String())
	}
}

// Bad settings are refused before anything is opened, and say why.
func TestMigrateRefusesBadSettings(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "kiln.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KILN_DATABASE", "")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-from", path}, "no PostgreSQL database"},
		{[]string{"-from", path, "-to", filepath.Join(dir, "other.db")}, "not a postgres:// URL"},
		{[]string{"-from", "postgres://db/kiln", "-to", "postgres://db/other"}, "not from PostgreSQL"},
		{[]string{"-from", filepath.Join(dir, "missing.db"), "-to", "postgres://db/kiln"}, "no SQLite database at"},
		{[]string{"-from", path, "-to", "postgres://db/kiln", "extra"}, "unexpected arguments"},
	}
	for _, c := range cases {
		err := migrate(ctx, c.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kiln migrate %q: %v; want %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !os.IsNotExist(err) {
		t.Errorf("a missing -from was created: %v", err)
	}
}

// A password in a URL stays out of errors, a failed connection's too.
func TestMigrateRedactsPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-from", "postgres://kiln:hunter2@db/kiln", "-to", "postgres://kiln:hunter2@db/other"},
		{"-from", path, "-to", "postgres://kiln:hunter2@127.0.0.1:1/kiln?connect_timeout=5"},
	} {
		err := migrate(context.Background(), args, &bytes.Buffer{})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("kiln migrate %q: error %v", args[1], err)
		}
	}
}
