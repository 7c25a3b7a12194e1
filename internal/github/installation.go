package github

import (
	"context"
	"strings"
	"sync"
	"time"
)

// InstallationToken returns a token of the client's App installation and
// when it expires, minting one when none is cached or the cached one has
// less than a minute left (ghinstallation's rule). It is what git over
// HTTPS takes as the password of user x-access-token. A client with a
// token instead of an App has none: ErrValidation.
func (c *Client) InstallationToken(ctx context.Context) (string, time.Time, error) {
	const op = "installation token"
	if c.itr == nil {
		return "", time.Time{}, &Error{Kind: ErrValidation, Op: op, Message: "the client authenticates with a token, not as a GitHub App installation"}
	}
	tok, err := c.itr.Token(ctx)
	if err != nil {
		return "", time.Time{}, classify(op, err, c.now())
	}
	exp, _, _ := c.itr.Expiry()
	return tok, exp, nil
}

// Installations are the clients of one GitHub App, one per API root and
// installation, made on first use and kept (each caches its installation
// token until it nears expiry). Safe for concurrent use.
type Installations struct {
	app Config // AppID, PrivateKeyPEM, HTTPClient, Now

	mu      sync.Mutex
	clients map[installationKey]*Client
}

type installationKey struct {
	base string
	id   int64
}

// NewInstallations serves the App of app (its AppID, PrivateKeyPEM,
// HTTPClient and Now; BaseURL and InstallationID are given per call).
func NewInstallations(app Config) *Installations {
	return &Installations{app: app, clients: map[installationKey]*Client{}}
}

// Configured reports whether there is an App to mint tokens with.
func (i *Installations) Configured() bool {
	return i != nil && i.app.AppID != 0 && len(i.app.PrivateKeyPEM) > 0
}

// Client returns the client of installation id on the GitHub whose REST
// API root is base ("" is api.github.com).
func (i *Installations) Client(base string, id int64) (*Client, error) {
	if !i.Configured() {
		return nil, &Error{Kind: ErrValidation, Op: "installation client", Message: "this server has no GitHub App (-github-app-id, -github-app-key)"}
	}
	if base == "" {
		base = DefaultBaseURL
	}
	key := installationKey{strings.TrimSuffix(base, "/"), id}
	i.mu.Lock()
	defer i.mu.Unlock()
	if c, ok := i.clients[key]; ok {
		return c, nil
	}
	cfg := Config{BaseURL: base, AppID: i.app.AppID, PrivateKeyPEM: i.app.PrivateKeyPEM, InstallationID: id, HTTPClient: i.app.HTTPClient, Now: i.app.Now}
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	i.clients[key] = c
	return c, nil
}

// Token is Client(base, id).InstallationToken(ctx).
func (i *Installations) Token(ctx context.Context, base string, id int64) (string, time.Time, error) {
	c, err := i.Client(base, id)
	if err != nil {
		return "", time.Time{}, err
	}
	return c.InstallationToken(ctx)
}
