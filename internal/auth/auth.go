// Package auth is Kiln's side of OpenID Connect sign-in: the provider's
// discovery, the authorization code flow with PKCE (S256), and the ID
// token's verification (signature by the provider's keys, issuer,
// audience, expiry, nonce) through go-oidc, into an Identity. What the
// identity may do is internal/authz's; sessions are the store's; the
// HTTP endpoints are the API's (internal/api/sso.go).
package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Config is the provider Kiln signs users in with.
type Config struct {
	// Issuer is the provider's issuer URL (discovery is at
	// Issuer/.well-known/openid-configuration).
	Issuer string
	// ClientID and ClientSecret are Kiln's client at the provider.
	ClientID, ClientSecret string
	// RedirectURL is PUBLIC_URL/auth/callback, registered at the provider.
	RedirectURL string
	// GroupsClaim is the ID token's claim listing the user's groups
	// (default "groups"; "" in a claim's place: none).
	GroupsClaim string
	// Scopes asked for besides openid (default: email, profile). Some
	// providers give the groups claim only for a scope of its own (Dex:
	// groups); others refuse a scope they do not know (Google, GitLab).
	Scopes []string
}

// Enabled says whether sign-in is configured.
func (c Config) Enabled() bool { return c.Issuer != "" }

// Identity is the user an ID token names.
type Identity struct {
	Subject string
	// Email is empty when the provider says it is not verified: a
	// binding by email must not match an address the user only typed.
	Email  string
	Name   string
	Groups []string
}

// Provider signs users in at one OpenID provider.
type Provider struct {
	cfg      Config
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
}

// New discovers the provider (its endpoints and keys' URL) and checks
// the configuration.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("oidc: a client id is required (-oidc-client-id)")
	}
	if cfg.ClientSecret == "" {
		return nil, errors.New("oidc: a client secret is required ($KILN_OIDC_CLIENT_SECRET or -oidc-client-secret-file)")
	}
	if cfg.RedirectURL == "" {
		return nil, errors.New("oidc: a redirect URL is required (-public-url)")
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.Scopes == nil {
		cfg.Scopes = []string{"email", "profile"}
	}
	p, err := oidc.NewProvider(ctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc: discovery at %s: %w", cfg.Issuer, err)
	}
	scopes := []string{oidc.ScopeOpenID}
	for _, s := range cfg.Scopes {
		if s != oidc.ScopeOpenID && s != "" {
			scopes = append(scopes, s)
		}
	}
	return &Provider{
		cfg:      cfg,
		oauth:    oauth2.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: cfg.RedirectURL, Endpoint: p.Endpoint(), Scopes: scopes},
		verifier: p.Verifier(&oidc.Config{ClientID: cfg.ClientID}),
	}, nil
}

// Attempt is one sign-in's secrets, kept by Kiln between the redirect to
// the provider and the callback: the state the callback must bring
// back, the nonce the ID token must carry, and PKCE's verifier.
type Attempt struct {
	State, Nonce, Verifier string
}

// NewAttempt makes a sign-in's random secrets.
func NewAttempt() Attempt {
	return Attempt{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier()}
}

// AuthURL is where the browser goes to sign in for a.
func (p *Provider) AuthURL(a Attempt) string {
	return p.oauth.AuthCodeURL(a.State, oauth2.S256ChallengeOption(a.Verifier), oidc.Nonce(a.Nonce))
}

// Exchange trades the callback's code for the tokens (with a's PKCE
// verifier) and returns the verified ID token's identity.
func (p *Provider) Exchange(ctx context.Context, code string, a Attempt) (*Identity, error) {
	tok, err := p.oauth.Exchange(ctx, code, oauth2.VerifierOption(a.Verifier))
	if err != nil {
		return nil, fmt.Errorf("oidc: code exchange refused: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("oidc: the provider's token response has no id_token")
	}
	return p.Verify(ctx, raw, a.Nonce)
}

// Verify checks an ID token (signature, issuer, audience, expiry) and
// that it carries nonce, and reads its identity.
func (p *Provider) Verify(ctx context.Context, raw, nonce string) (*Identity, error) {
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("oidc: ID token refused: %w", err)
	}
	if nonce == "" || idt.Nonce != nonce {
		return nil, errors.New("oidc: ID token refused: its nonce is not this sign-in's")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("oidc: ID token's claims: %w", err)
	}
	id := &Identity{Subject: idt.Subject, Groups: []string{}}
	if email, _ := claims["email"].(string); email != "" {
		// Absent email_verified is taken as verified: some providers
		// only give addresses they verified and say nothing.
		if v, ok := claims["email_verified"].(bool); !ok || v {
			id.Email = email
		}
	}
	id.Name, _ = claims["name"].(string)
	if id.Name == "" {
		id.Name, _ = claims["preferred_username"].(string)
	}
	switch g := claims[p.cfg.GroupsClaim].(type) {
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok && s != "" {
				id.Groups = append(id.Groups, s)
			}
		}
	case string:
		for _, s := range strings.Fields(strings.ReplaceAll(g, ",", " ")) {
			id.Groups = append(id.Groups, s)
		}
	}
	return id, nil
}
