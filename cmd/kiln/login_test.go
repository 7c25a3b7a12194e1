package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/auth"
	"github.com/kilnci/kiln/internal/auth/oidctest"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// kiln login end to end, in process: a real server signing users in at a
// real OpenID provider; the browser (an HTTP client with cookies) signs
// in at the provider's form and is sent back to the CLI's loopback
// listener with the one-time code, which the CLI trades for a session
// and saves; kiln role, whoami and logout use it.
func TestLoginLoopback(t *testing.T) {
	home := t.TempDir()
	t.Setenv("KILN_HOME", home)
	t.Setenv("KILN_TOKEN", "")
	op := oidctest.Start(t)
	op.AddClient("kiln", "kiln-client-secret")
	op.AddUser(oidctest.User{Subject: "sub-ann", Username: "ann", Password: "pw", Email: "ann@example.com", Name: "Ann", Groups: []string{"ops"}})

	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Database, cfg.Listen = t.TempDir(), storetest.Database(t), "127.0.0.1:0"
	cfg.OIDC = auth.Config{Issuer: op.URL, ClientID: "kiln", ClientSecret: "kiln-client-secret", Scopes: []string{"email", "profile", "groups"}}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	base := "http://" + ln.Addr().String()
	op.AllowRedirect(base + "/auth/callback")
	admin, _, err := srv.EnsureAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(home, "admin-token")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := runRole(ctx, []string{"set", "*", "-user", "ann@example.com", "maintainer", "-server", base, "-token", admin}); err != nil {
		t.Fatal(err)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	out, err := cliLogin(ctx, &http.Client{}, base, func(loginURL string) {
		u, err := url.Parse(loginURL)
		if err != nil {
			t.Error(err)
			return
		}
		redirect, err := url.Parse(u.Query().Get("cli_redirect"))
		if err != nil || redirect.Hostname() != "127.0.0.1" {
			t.Errorf("cli_redirect %q", u.Query().Get("cli_redirect"))
			return
		}
		// A stray request to the loopback (not the sign-in's state) is
		// refused, and the CLI keeps waiting.
		if resp, err := http.Get(redirect.String() + "?code=forged&state=forged"); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a forged code at the loopback: %v, %v", resp, err)
		} else {
			resp.Body.Close()
		}
		resp, body, err := oidctest.SignIn(browser, loginURL, "ann", "pw")
		if err != nil || resp.StatusCode != http.StatusOK || resp.Request.URL.Host != redirect.Host || !strings.Contains(body, "Signed in") {
			t.Errorf("the browser's sign-in: %v, %v: %s", err, resp, body)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.Token, store.SessionPrefix) || out.User == nil || out.User.Email != "ann@example.com" {
		t.Fatalf("exchange: %+v", out)
	}
	// The browser got no session of its own: the code was for the CLI.
	for _, c := range jar.Cookies(&url.URL{Scheme: "http", Host: ln.Addr().String(), Path: "/"}) {
		if c.Name == api.SessionCookie {
			t.Error("the CLI's sign-in left a session cookie in the browser")
		}
	}
	if err := saveSession(savedSession{Server: base, Token: out.Token, ExpiresAt: out.ExpiresAt}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sessionFile()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v, %v", fi, err)
	}

	// Precedence: the flag (or $KILN_TOKEN), then the saved session (for
	// its server only), then the admin token file.
	if tok, err := clientToken("", base); err != nil || tok != out.Token {
		t.Fatalf("saved session: %q, %v", tok, err)
	}
	if tok, _ := clientToken("kiln_admin_given", base); tok != "kiln_admin_given" {
		t.Fatalf("the flag's token lost to %q", tok)
	}
	if _, err := clientToken("", "http://other.example:8080"); err == nil {
		t.Fatal("another server got the saved session")
	}

	var who api.SessionView
	c := apiclient.Client{URL: base, Token: out.Token}
	if err := c.Do(ctx, "GET", "/auth/session", nil, &who); err != nil || who.User == nil || who.User.Subject != "sub-ann" || who.Roles["*"] != "maintainer" {
		t.Fatalf("whoami: %+v, %v", who, err)
	}
	if err := runWhoami(ctx, []string{"-server", base}); err != nil {
		t.Fatal(err)
	}
	// A maintainer may not manage roles.
	if err := runRole(ctx, []string{"ls", "-server", base}); err == nil || !strings.Contains(err.Error(), "global admin") {
		t.Fatalf("kiln role ls as a maintainer: %v", err)
	}

	if err := runLogout(ctx, []string{"-server", base}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sessionFile()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the session file after logout: %v", err)
	}
	if _, _, err := srv.Store.SessionByToken(ctx, out.Token); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the session after logout: %v", err)
	}
	// Its token is dead on the server, not only forgotten here.
	if err := c.Do(ctx, "GET", "/auth/session", nil, nil); err == nil {
		t.Fatal("the ended session still authenticates")
	}
}

// kiln role's bad usage is refused before any request.
func TestRoleUsage(t *testing.T) {
	t.Setenv("KILN_HOME", t.TempDir())
	for _, args := range [][]string{{}, {"grant"}, {"set", "web", "viewer"}, {"set", "web", "-user", "a", "-group", "g", "viewer"}, {"rm", "web"}, {"set", "web"}, {"list", "extra"}} {
		err := runRole(context.Background(), append(args, "-server", "http://127.0.0.1:1"))
		if err == nil || !(strings.Contains(err.Error(), "usage: kiln role") || strings.Contains(err.Error(), "one of -user and -group")) {
			t.Errorf("kiln role %q: %v", args, err)
		}
	}
}
