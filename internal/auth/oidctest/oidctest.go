// Package oidctest is a real OpenID provider for tests: zitadel's op
// package (discovery, JWKS, the authorization code flow with PKCE,
// signed ID tokens) over its example in-memory storage, on httptest,
// with users and clients the test adds and a plain HTML login form a
// test's HTTP client fills in (SignIn).
package oidctest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is a person the provider knows.
type User struct {
	Subject, Username, Password, Email, Name string
	Groups                                   []string
}

// Provider is a running OpenID provider; URL is its issuer.
type Provider struct {
	URL string

	mu        sync.Mutex
	users     map[string]*User // by subject
	redirects []string
	clients   map[string]*storage.Client
	st        *providerStorage
}

// Start runs a provider until the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	p := &Provider{users: map[string]*User{}, clients: map[string]*storage.Client{}}
	srv := httptest.NewUnstartedServer(nil)
	p.URL = "http://" + srv.Listener.Addr().String()
	p.st = &providerStorage{Storage: storage.NewStorageWithClients(userStore{p}, p.clients), p: p}
	provider, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte("oidctest")), CodeMethodS256: true, AuthMethodPost: true,
		SupportedUILocales: []language.Tag{language.English}}, p.st, op.StaticIssuer(p.URL), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	callback := op.AuthCallbackURL(provider)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/username", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<html><body><form method="post" action="/login/username"><input type="hidden" name="id" value="%s">
<input name="username"><input name="password" type="password"><button>Sign in</button></form></body></html>`, html.EscapeString(r.URL.Query().Get("authRequestID")))
	})
	mux.Handle("POST /login/username", op.NewIssuerInterceptor(provider.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.FormValue("id")
		if err := p.st.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
			http.Error(w, "sign-in refused: "+err.Error(), http.StatusForbidden)
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	}))
	mux.Handle("/", provider)
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// AddClient registers a confidential (web) client; redirect URIs are
// those AllowRedirect allows, for every client.
func (p *Provider) AddClient(id, secret string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[id] = storage.WebClient(id, secret, "http://unused.invalid/")
}

// AllowRedirect adds a redirect URI the clients may use.
func (p *Provider) AllowRedirect(uri string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirects = append(p.redirects, uri)
}

// AddUser adds (or replaces) a user.
func (p *Provider) AddUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[u.Subject] = &u
}

func (p *Provider) user(f func(*User) bool) *User {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.users {
		if f(u) {
			return u
		}
	}
	return nil
}

// userStore is the example storage's view of the users.
type userStore struct{ p *Provider }

func (s userStore) GetUserByID(id string) *storage.User {
	return s.conv(s.p.user(func(u *User) bool { return u.Subject == id }))
}

func (s userStore) GetUserByUsername(name string) *storage.User {
	return s.conv(s.p.user(func(u *User) bool { return u.Username == name }))
}

func (userStore) ExampleClientID() string { return "service" }

func (userStore) conv(u *User) *storage.User {
	if u == nil {
		return nil
	}
	first, last, _ := strings.Cut(u.Name, " ")
	return &storage.User{ID: u.Subject, Username: u.Username, Password: u.Password, FirstName: first, LastName: last,
		Email: u.Email, EmailVerified: true, PreferredLanguage: language.English}
}

// providerStorage is the example storage, with the ID token carrying the
// profile, email and groups claims, and the redirect URIs the test allows.
type providerStorage struct {
	*storage.Storage
	p *Provider
}

func (s *providerStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return client{Client: c, p: s.p}, nil
}

func (s *providerStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, token, scopes); err != nil {
		return err
	}
	if u := s.p.user(func(u *User) bool { return u.Subject == token.GetSubject() }); u != nil && slices.Contains(scopes, "groups") {
		info.AppendClaims("groups", u.Groups)
	}
	return nil
}

type client struct {
	op.Client
	p *Provider
}

func (c client) RedirectURIs() []string {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return slices.Clone(c.p.redirects)
}

func (client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (client) IsScopeAllowed(scope string) bool     { return scope == "groups" }

var formID = regexp.MustCompile(`name="id" value="([^"]*)"`)

// SignIn plays the browser: it GETs start (the relying party's sign-in
// URL) with c, which follows redirects to the provider's login form,
// posts the username and password there, and follows the redirects back
// to the relying party. It returns the last response, its body read
// (and the body's text).
func SignIn(c *http.Client, start, username, password string) (*http.Response, string, error) {
	resp, err := c.Get(start)
	if err != nil {
		return nil, "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := formID.FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		return resp, string(body), errors.New("no login form at " + resp.Request.URL.String() + ": HTTP " + resp.Status + ": " + string(body))
	}
	form := url.Values{"id": {html.UnescapeString(string(m[1]))}, "username": {username}, "password": {password}}
	resp, err = c.PostForm(resp.Request.URL.ResolveReference(&url.URL{Path: "/login/username"}).String(), form)
	if err != nil {
		return nil, "", err
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), nil
}
