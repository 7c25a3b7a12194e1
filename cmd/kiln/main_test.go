package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every command's flag set parses -h: a flag defined twice (kiln up
// combines the server's and the agent's flags) panics here rather than on
// a user's machine.
func TestEveryCommandParsesHelp(t *testing.T) {
	stderr := os.Stderr
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	os.Stderr = devnull // usage text
	defer func() { os.Stderr = stderr }()
	for _, c := range commands {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("kiln %s -h: panic: %v", c.name, r)
				}
			}()
			err := c.run(context.Background(), []string{"-h"})
			if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.Is(err, io.EOF) {
				t.Logf("kiln %s -h: %v", c.name, err)
			}
		}()
	}
}

// The cache's S3 credentials come from the environment only: no flag
// takes them, and a configured store without them is refused before start.
func TestCacheS3CredentialsFromEnv(t *testing.T) {
	for _, k := range []string{"KILN_S3_ACCESS_KEY", "KILN_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "KILN_S3_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
	parse := func(args ...string) (*serverOptions, error) {
		fs := flag.NewFlagSet("kiln server", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o := serverFlags(fs)
		return o, fs.Parse(args)
	}
	o, err := parse("-cache-s3-endpoint", "s3.example.test", "-cache-s3-bucket", "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.config(); err == nil || !strings.Contains(err.Error(), "cache-s3: ") || !strings.Contains(err.Error(), "KILN_S3_ACCESS_KEY") {
		t.Fatalf("no credentials: %v", err)
	}
	t.Setenv("KILN_S3_ACCESS_KEY", "ak")
	t.Setenv("KILN_S3_SECRET_KEY", "sk")
	cfg, err := o.config()
	if err != nil || cfg.CacheS3.AccessKey != "ak" || cfg.CacheS3.SecretKey != "sk" || cfg.CacheS3.Prefix != "kiln-cache" {
		t.Fatalf("%+v %v", cfg.CacheS3, err)
	}
	if _, err := parse("-cache-s3-secret-key", "x"); err == nil {
		t.Fatal("a flag takes the secret key")
	}
	// Without S3, none are needed.
	o, _ = parse()
	if _, err := o.config(); err != nil {
		t.Fatal(err)
	}
}

// The OIDC client secret comes from the environment or a file, never a
// flag; sign-in without one is refused before start.
func TestOIDCClientSecretNotInArgv(t *testing.T) {
	t.Setenv("KILN_OIDC_CLIENT_SECRET", "")
	parse := func(args ...string) (*serverOptions, error) {
		fs := flag.NewFlagSet("kiln server", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o := serverFlags(fs)
		return o, fs.Parse(args)
	}
	if _, err := parse("-oidc-client-secret", "x"); err == nil {
		t.Fatal("a flag takes the client secret")
	}
	o, err := parse("-oidc-issuer", "https://id.example", "-oidc-client-id", "kiln", "-oidc-scopes", "email, groups")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.config(); err == nil || !strings.Contains(err.Error(), "KILN_OIDC_CLIENT_SECRET") {
		t.Fatalf("no secret: %v", err)
	}
	t.Setenv("KILN_OIDC_CLIENT_SECRET", "from-env")
	cfg, err := o.config()
	if err != nil || cfg.OIDC.ClientSecret != "from-env" || strings.Join(cfg.OIDC.Scopes, " ") != "email groups" || cfg.OIDC.GroupsClaim != "groups" || cfg.SessionTTL != 12*time.Hour {
		t.Fatalf("%+v %v", cfg.OIDC, err)
	}
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _ = parse("-oidc-issuer", "https://id.example", "-oidc-client-id", "kiln", "-oidc-client-secret-file", file)
	if cfg, err := o.config(); err != nil || cfg.OIDC.ClientSecret != "from-file" {
		t.Fatalf("%+v %v", cfg.OIDC, err)
	}
}
