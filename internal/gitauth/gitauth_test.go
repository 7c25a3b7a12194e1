package gitauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/store"
)

// Each forge's convention, and a token only ever for its forge's host,
// over https when the forge's API is https, and never over a clone URL's
// own credentials.
func TestFor(t *testing.T) {
	gh := &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: "https://api.github.com", Token: "ghp_tok"}
	ghes := &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: "https://ghe.example.com/api/v3", Token: "ghp_ent"}
	gl := &store.ForgeConnection{Forge: "gitlab", Repo: "group/sub/web", APIURL: "https://gitlab.example.com", Token: "glpat-tok"}
	gt := &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: "https://gitea.example.com:3000", Token: "gitea-tok"}
	local := &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: "http://127.0.0.1:3000", Token: "gitea-tok"}
	for _, c := range []struct {
		url  string
		conn *store.ForgeConnection
		want *gitmirror.Credentials // nil: none
	}{
		{"https://github.com/acme/web.git", gh, &gitmirror.Credentials{Username: "x-access-token", Password: "ghp_tok"}},
		{"https://GitHub.com:443/acme/web", gh, &gitmirror.Credentials{Username: "x-access-token", Password: "ghp_tok"}},
		{"https://ghe.example.com/acme/web.git", ghes, &gitmirror.Credentials{Username: "x-access-token", Password: "ghp_ent"}},
		{"https://gitlab.example.com/group/sub/web.git", gl, &gitmirror.Credentials{Username: "oauth2", Password: "glpat-tok"}},
		{"https://gitea.example.com:3000/acme/web.git", gt, &gitmirror.Credentials{Username: "oauth2", Password: "gitea-tok"}},
		{"http://127.0.0.1:3000/acme/web.git", local, &gitmirror.Credentials{Username: "oauth2", Password: "gitea-tok"}},
		// Never to another host, a look-alike, another port, or over
		// plain http when the forge is https.
		{"https://evil.example.com/acme/web.git", gh, nil},
		{"https://github.com.evil.example.com/acme/web.git", gh, nil},
		{"https://api.github.com/acme/web.git", gh, nil},
		{"http://github.com/acme/web.git", gh, nil},
		{"https://gitlab.example.com:8443/group/web.git", gl, nil},
		{"https://gitea.example.com/acme/web.git", gt, nil},
		{"http://127.0.0.2:3000/acme/web.git", local, nil},
		// Not http(s), or with the URL's own credentials, or no connection.
		{"git@github.com:acme/web.git", gh, nil},
		{"ssh://git@github.com/acme/web.git", gh, nil},
		{"/srv/git/web", gh, nil},
		{"https://x-access-token:own@github.com/acme/web.git", gh, nil},
		{"https://own@github.com/acme/web.git", gh, nil},
		{"https://github.com/acme/web.git", nil, nil},
	} {
		got, err := New(nil).For(context.Background(), c.url, c.conn)
		if err != nil {
			t.Errorf("For(%s): %v", c.url, err)
			continue
		}
		if (got == nil) != (c.want == nil) || (got != nil && *got != *c.want) {
			t.Errorf("For(%s, %v) = %v, want %v", c.url, c.conn, creds(got), creds(c.want))
		}
		if c.want == nil {
			if d := Describe(c.url, c.conn); d == "" || (c.conn != nil && strings.Contains(d, c.conn.Token)) {
				t.Errorf("Describe(%s) = %q", c.url, d)
			}
		}
	}
}

func creds(c *gitmirror.Credentials) string {
	if c == nil {
		return "none"
	}
	return c.Username + ":" + c.Password
}

// An App installation's token comes from the App, at the connection's API
// URL; without an App on the server it is an error that says so.
func TestForInstallation(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fake := fakegithub.New()
	defer fake.Close()
	fake.RegisterApp(7, &key.PublicKey, 99)
	conn := &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(fake.URL(), "/"), InstallationID: 99}
	url := fake.GitRemote("acme", "web")
	if _, err := New(nil).For(context.Background(), url, conn); err == nil || !strings.Contains(err.Error(), "no GitHub App") {
		t.Errorf("For without an App: %v", err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	src := New(github.NewInstallations(github.Config{AppID: 7, PrivateKeyPEM: pemKey}))
	c, err := src.For(context.Background(), url, conn)
	if err != nil || c == nil || c.Username != "x-access-token" || !strings.HasPrefix(c.Password, "ghs_") {
		t.Fatalf("For = %v, %v", creds(c), err)
	}
	if fake.TokensIssued() != 1 {
		t.Errorf("tokens issued: %d", fake.TokensIssued())
	}
	// Never minted for another host.
	if c, err := src.For(context.Background(), "https://elsewhere.example.com/acme/web.git", conn); c != nil || err != nil || fake.TokensIssued() != 1 {
		t.Errorf("For another host = %v, %v; issued %d", creds(c), err, fake.TokensIssued())
	}
	conn.InstallationID = 100 // not the App's
	if _, err := src.For(context.Background(), url, conn); err == nil || !strings.Contains(err.Error(), "installation 100") {
		t.Errorf("For an unknown installation: %v", err)
	}
}
