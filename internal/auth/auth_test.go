package auth

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/auth/oidctest"
	"golang.org/x/oauth2"
)

const redirect = "http://127.0.0.1:1/auth/callback" // never dialed: the browser stops there

func provider(t *testing.T) *oidctest.Provider {
	op := oidctest.Start(t)
	op.AddClient("kiln", "kiln-secret")
	op.AddClient("other", "other-secret")
	op.AllowRedirect(redirect)
	op.AddUser(oidctest.User{Subject: "sub-ann", Username: "ann", Password: "pw", Email: "ann@example.com", Name: "Ann Example", Groups: []string{"ops", "release"}})
	return op
}

func newProvider(t *testing.T, op *oidctest.Provider, client, secret string) *Provider {
	p, err := New(context.Background(), Config{Issuer: op.URL, ClientID: client, ClientSecret: secret, RedirectURL: redirect, Scopes: []string{"email", "profile", "groups"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// signIn plays the browser through the provider's form and returns the
// callback's query (code and state), where the browser stops.
func signIn(t *testing.T, p *Provider, a Attempt) url.Values {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	var got url.Values
	c := &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), redirect) {
			got = r.URL.Query()
			return http.ErrUseLastResponse
		}
		return nil
	}}
	if _, body, err := oidctest.SignIn(c, p.AuthURL(a), "ann", "pw"); err != nil || got == nil {
		t.Fatalf("sign-in: %v, %s", err, body)
	}
	return got
}

func TestSignIn(t *testing.T) {
	op := provider(t)
	p := newProvider(t, op, "kiln", "kiln-secret")
	a := NewAttempt()
	q := signIn(t, p, a)
	if q.Get("state") != a.State {
		t.Fatalf("state %q, want %q", q.Get("state"), a.State)
	}
	id, err := p.Exchange(context.Background(), q.Get("code"), a)
	if err != nil {
		t.Fatal(err)
	}
	want := &Identity{Subject: "sub-ann", Email: "ann@example.com", Name: "Ann Example", Groups: []string{"ops", "release"}}
	if !reflect.DeepEqual(id, want) {
		t.Fatalf("identity %+v, want %+v", id, want)
	}
	// A code is good once.
	if _, err := p.Exchange(context.Background(), q.Get("code"), a); err == nil {
		t.Fatal("a code exchanged twice")
	}
}

// The PKCE verifier must be the one the sign-in started with.
func TestWrongVerifierRefused(t *testing.T) {
	p := newProvider(t, provider(t), "kiln", "kiln-secret")
	a := NewAttempt()
	q := signIn(t, p, a)
	b := a
	b.Verifier = oauth2.GenerateVerifier()
	if _, err := p.Exchange(context.Background(), q.Get("code"), b); err == nil {
		t.Fatal("a code exchanged with another verifier")
	}
}

// rawIDToken is an ID token the provider signed for p's client.
func rawIDToken(t *testing.T, p *Provider, a Attempt) string {
	t.Helper()
	q := signIn(t, p, a)
	tok, err := p.oauth.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(a.Verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Extra("id_token").(string)
}

func TestWrongNonceRefused(t *testing.T) {
	p := newProvider(t, provider(t), "kiln", "kiln-secret")
	a := NewAttempt()
	raw := rawIDToken(t, p, a)
	if _, err := p.Verify(context.Background(), raw, a.Nonce); err != nil {
		t.Fatalf("the right nonce: %v", err)
	}
	for _, nonce := range []string{"", "another"} {
		if _, err := p.Verify(context.Background(), raw, nonce); err == nil || !strings.Contains(err.Error(), "nonce") {
			t.Errorf("nonce %q: %v", nonce, err)
		}
	}
}

func TestWrongAudienceRefused(t *testing.T) {
	op := provider(t)
	kiln, other := newProvider(t, op, "kiln", "kiln-secret"), newProvider(t, op, "other", "other-secret")
	a := NewAttempt()
	raw := rawIDToken(t, other, a)
	if _, err := kiln.Verify(context.Background(), raw, a.Nonce); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("another client's ID token: %v", err)
	}
	// A forged token (its signature broken) is refused too.
	parts := strings.Split(raw, ".")
	parts[2] = strings.Repeat("A", len(parts[2]))
	if _, err := other.Verify(context.Background(), strings.Join(parts, "."), a.Nonce); err == nil {
		t.Fatal("a token of a bad signature verified")
	}
}

func TestConfigRefused(t *testing.T) {
	op := provider(t)
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Issuer: op.URL, ClientSecret: "s", RedirectURL: redirect}, "client id"},
		{Config{Issuer: op.URL, ClientID: "kiln", RedirectURL: redirect}, "client secret"},
		{Config{Issuer: op.URL, ClientID: "kiln", ClientSecret: "s"}, "redirect URL"},
		{Config{Issuer: op.URL + "/nope", ClientID: "kiln", ClientSecret: "s", RedirectURL: redirect}, "discovery"},
	} {
		if _, err := New(context.Background(), c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// Without the scope the provider ties the groups claim to, the identity
// has no groups (and the claim named by GroupsClaim is the one read).
func TestGroupsClaim(t *testing.T) {
	op := provider(t)
	p, err := New(context.Background(), Config{Issuer: op.URL, ClientID: "kiln", ClientSecret: "kiln-secret", RedirectURL: redirect})
	if err != nil {
		t.Fatal(err)
	}
	a := NewAttempt()
	id, err := p.Exchange(context.Background(), signIn(t, p, a).Get("code"), a)
	if err != nil || len(id.Groups) != 0 || id.Email != "ann@example.com" {
		t.Fatalf("default scopes: %+v, %v", id, err)
	}
	p, err = New(context.Background(), Config{Issuer: op.URL, ClientID: "kiln", ClientSecret: "kiln-secret", RedirectURL: redirect, GroupsClaim: "teams", Scopes: []string{"groups"}})
	if err != nil {
		t.Fatal(err)
	}
	a = NewAttempt()
	if id, err := p.Exchange(context.Background(), signIn(t, p, a).Get("code"), a); err != nil || len(id.Groups) != 0 || id.Email != "" {
		t.Fatalf("claim teams, scope groups only: %+v, %v", id, err)
	}
}
