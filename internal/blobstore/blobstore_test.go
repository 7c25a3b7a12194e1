package blobstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
)

func TestDisk(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		s, err := blobstore.NewDisk(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestS3(t *testing.T) {
	blobstoretest.S3Config(t) // skips without a server
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store { return blobstoretest.S3(t) })
}

// A misconfigured S3 store fails at start with a message that says what
// is wrong.
func TestS3BadConfig(t *testing.T) {
	ctx := context.Background()
	keys := blobstore.S3Config{AccessKey: "a", SecretKey: "b"}
	for _, c := range []struct {
		cfg  blobstore.S3Config
		want string
	}{
		{blobstore.S3Config{Bucket: "b", AccessKey: "a", SecretKey: "b"}, "endpoint: required"},
		{blobstore.S3Config{Endpoint: "127.0.0.1:1", AccessKey: "a", SecretKey: "b"}, "bucket: required"},
		{blobstore.S3Config{Endpoint: "127.0.0.1:1", Bucket: "b"}, "credentials: required"},
		{blobstore.S3Config{Endpoint: "http://127.0.0.1:1", Bucket: "b", AccessKey: "a", SecretKey: "b"}, "plain http"},
		{blobstore.S3Config{Endpoint: "ftp://127.0.0.1:1", Bucket: "b", Insecure: true, AccessKey: "a", SecretKey: "b"}, "scheme"},
		{blobstore.S3Config{Endpoint: "http://127.0.0.1:1/path", Bucket: "b", Insecure: true, AccessKey: "a", SecretKey: "b"}, "no path"},
		{blobstore.S3Config{Endpoint: "127.0.0.1:1", Bucket: "b", Prefix: "../x", AccessKey: "a", SecretKey: "b"}, "prefix"},
		{blobstore.S3Config{Endpoint: "http://127.0.0.1:1", Bucket: "b", Insecure: true, AccessKey: keys.AccessKey, SecretKey: keys.SecretKey}, "cannot reach S3 bucket"},
	} {
		_, err := blobstore.NewS3(ctx, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewS3(%+v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), c.cfg.SecretKey) && c.cfg.SecretKey != "" && len(c.cfg.SecretKey) > 3 {
			t.Errorf("error shows the secret key: %v", err)
		}
	}
}

func TestS3MissingBucketAndBadKeys(t *testing.T) {
	cfg := blobstoretest.S3Config(t)
	ctx := context.Background()
	missing := cfg
	missing.Bucket = "kiln-no-such-bucket"
	if _, err := blobstore.NewS3(ctx, missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket: %v, want \"does not exist\"", err)
	}
	bad := cfg
	bad.SecretKey = "wrong-secret-key-123"
	_, err := blobstore.NewS3(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "cannot reach S3 bucket") {
		t.Errorf("wrong secret key: %v, want \"cannot reach S3 bucket\"", err)
	}
	if err != nil && strings.Contains(err.Error(), bad.SecretKey) {
		t.Errorf("error shows the secret key: %v", err)
	}
}

func TestCredentialsFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	var c blobstore.S3Config
	if err := c.CredentialsFromEnv(env("KILN_S3_ACCESS_KEY", "k", "KILN_S3_SECRET_KEY", "s", "AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "as")); err != nil || c.AccessKey != "k" || c.SecretKey != "s" {
		t.Errorf("KILN_ first: %+v, %v", c, err)
	}
	c = blobstore.S3Config{}
	if err := c.CredentialsFromEnv(env("AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "as", "AWS_SESSION_TOKEN", "st")); err != nil || c.AccessKey != "ak" || c.SessionToken != "st" {
		t.Errorf("AWS_: %+v, %v", c, err)
	}
	if err := c.CredentialsFromEnv(env("KILN_S3_ACCESS_KEY", "k")); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("half a pair: %v", err)
	}
	if err := c.CredentialsFromEnv(env()); err == nil || !strings.Contains(err.Error(), "KILN_S3_ACCESS_KEY") {
		t.Errorf("none: %v", err)
	}
}
