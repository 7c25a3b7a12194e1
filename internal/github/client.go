// Package github is Kiln's client for the few GitHub REST endpoints that
// ephemeral Actions runners need: just-in-time runner configurations, the
// runners list, and queued workflow jobs; and for check runs (checks.go),
// which report builds to a GitHub App's installations. It wraps google/go-github and, for
// a GitHub App, bradleyfalzon/ghinstallation.
//
// Every method makes a bounded number of requests and never retries or
// sleeps: a failure comes back as an error of a typed kind (ErrNotFound,
// ErrRateLimited, ...) and the caller decides, with Retryable and Backoff,
// whether and when to try again. That keeps the one place that loops (the
// reconciler, a pool) in charge of pacing against GitHub's rate limit.
//
// The client is safe for concurrent use.
package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v92/github"
)

// DefaultBaseURL is github.com's REST API.
const DefaultBaseURL = "https://api.github.com/"

// Config says where GitHub is and how Kiln authenticates: either as a
// GitHub App installation (AppID, PrivateKeyPEM, InstallationID) or with a
// token (a fine-grained or classic personal access token), never both.
type Config struct {
	// BaseURL is the REST API root: "" means https://api.github.com/; GitHub
	// Enterprise Server is https://HOST/api/v3/. It is used as given (no
	// path is added), so a test can point it at a fake.
	BaseURL string

	AppID          int64
	PrivateKeyPEM  []byte // the App's RSA private key (PKCS#1 or PKCS#8 PEM)
	InstallationID int64

	// Token is used instead of an App.
	Token string

	// HTTPClient carries the requests; nil means a client with a 30s
	// timeout. Its Transport is wrapped, never modified.
	HTTPClient *http.Client

	// Now is the clock used to turn X-RateLimit-Reset into a RetryAfter.
	// Nil means time.Now. (Token expiry is judged by ghinstallation on the
	// real clock.)
	Now func() time.Time
}

// Validate reports every invalid field, one error per field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("github config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("BaseURL", "must be an absolute http(s) URL, got %q", c.BaseURL)
		case u.RawQuery != "" || u.Fragment != "":
			bad("BaseURL", "must not have a query or fragment, got %q", c.BaseURL)
		}
	}
	app := c.AppID != 0 || len(c.PrivateKeyPEM) > 0 || c.InstallationID != 0
	switch {
	case app && c.Token != "":
		bad("Token", "set either a GitHub App (AppID, PrivateKeyPEM, InstallationID) or a Token, not both")
	case app:
		if c.AppID <= 0 {
			bad("AppID", "must be positive, got %d", c.AppID)
		}
		if c.InstallationID <= 0 {
			bad("InstallationID", "must be positive, got %d", c.InstallationID)
		}
		if len(c.PrivateKeyPEM) == 0 {
			bad("PrivateKeyPEM", "required for a GitHub App")
		} else if _, err := ghinstallation.NewAppsTransport(http.DefaultTransport, 1, c.PrivateKeyPEM); err != nil {
			bad("PrivateKeyPEM", "not an RSA private key in PEM: %v", err)
		}
	case c.Token == "":
		bad("Token", "required: set a GitHub App (AppID, PrivateKeyPEM, InstallationID) or a Token")
	case strings.ContainsAny(c.Token, " \t\r\n"):
		bad("Token", "must not contain whitespace")
	}
	return errors.Join(errs...)
}

// Scope is where runners live: a repository, or an organization when Repo
// is "".
type Scope struct{ Owner, Repo string }

func (s Scope) String() string {
	if s.Repo == "" {
		return "org " + s.Owner
	}
	return s.Owner + "/" + s.Repo
}

func (s Scope) validate() error {
	if s.Owner == "" || strings.Contains(s.Owner, "/") || strings.Contains(s.Repo, "/") {
		return &Error{Kind: ErrValidation, Op: "scope", Message: fmt.Sprintf("invalid scope %q/%q", s.Owner, s.Repo)}
	}
	return nil
}

// Client talks to one GitHub (or GHES) as one App installation or token.
type Client struct {
	gh  *gh.Client
	itr *ghinstallation.Transport // nil with a token
	now func() time.Time

	mu        sync.Mutex
	remaining int // -1 until a response carried rate-limit headers
	reset     time.Time
}

// New checks cfg and builds a client. It makes no request: a bad key or
// installation shows on the first call, as ErrUnauthorized.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	tr := hc.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	// Every request, the installation token's too, says what GitHub's
	// documentation asks for (go-github and ghinstallation still send
	// the older v3 media type).
	tr = apiHeaders{next: tr}
	withHeaders := *hc
	withHeaders.Transport = tr
	hc = &withHeaders
	c := &Client{now: cfg.Now, remaining: -1}
	if c.now == nil {
		c.now = time.Now
	}
	opts := []gh.ClientOptionsFunc{gh.WithURLs(&base, &base), gh.WithUserAgent("kiln")}
	if cfg.Token != "" {
		opts = append(opts, gh.WithHTTPClient(hc), gh.WithAuthToken(cfg.Token))
	} else {
		itr, err := ghinstallation.New(tr, cfg.AppID, cfg.InstallationID, cfg.PrivateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("github config: PrivateKeyPEM: %w", err)
		}
		// ghinstallation wants the API root without the trailing slash and
		// appends /app/installations/{id}/access_tokens. The token request
		// gets the same timeout as every other request.
		itr.BaseURL = strings.TrimSuffix(base, "/")
		itr.Client = &http.Client{Transport: tr, Timeout: hc.Timeout}
		c.itr = itr
		withApp := *hc
		withApp.Transport = itr
		opts = append(opts, gh.WithHTTPClient(&withApp))
	}
	client, err := gh.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	c.gh = client
	return c, nil
}

// MediaType and APIVersion are the Accept and X-GitHub-Api-Version that
// GitHub's REST documentation tells clients to send.
const (
	MediaType  = "application/vnd.github+json"
	APIVersion = "2022-11-28"
)

// apiHeaders sets Accept to MediaType where a library asks for the
// generic v3 media type (or none, or a preview that has graduated), and
// X-GitHub-Api-Version when missing; any other media type (raw contents)
// is left as asked.
type apiHeaders struct{ next http.RoundTripper }

// graduated are previews now part of the API that go-github still asks
// for: the checks API (antiope), documented with MediaType.
var graduated = map[string]bool{"application/vnd.github.antiope-preview+json": true}

func (a apiHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	generic := true
	for _, v := range r.Header.Values("Accept") {
		if v != "" && v != "application/vnd.github.v3+json" && v != MediaType && !graduated[v] {
			generic = false
		}
	}
	if generic || r.Header.Get("X-GitHub-Api-Version") == "" {
		r = r.Clone(r.Context()) // a RoundTripper must not change its request
		if generic {
			r.Header.Set("Accept", MediaType)
		}
		if r.Header.Get("X-GitHub-Api-Version") == "" {
			r.Header.Set("X-GitHub-Api-Version", APIVersion)
		}
	}
	return a.next.RoundTrip(r)
}

// RateLimit returns the X-RateLimit-Remaining and X-RateLimit-Reset of the
// last response that carried them; remaining is -1 before the first one
// (and stays so against a GHES with rate limiting off).
func (c *Client) RateLimit() (remaining int, reset time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remaining, c.reset
}

// TokenExpiry is when the cached installation token expires (zero before
// the first request, and always with a token instead of an App).
// ghinstallation fetches a new token once less than a minute is left.
func (c *Client) TokenExpiry() time.Time {
	if c.itr == nil {
		return time.Time{}
	}
	exp, _, err := c.itr.Expiry()
	if err != nil {
		return time.Time{}
	}
	return exp
}

// done records the response's rate-limit headers and turns err into one of
// the package's kinds.
func (c *Client) done(op string, resp *gh.Response, err error) error {
	if resp != nil && resp.Response != nil && resp.Header.Get(gh.HeaderRateRemaining) != "" {
		c.mu.Lock()
		c.remaining, c.reset = resp.Rate.Remaining, resp.Rate.Reset.Time
		c.mu.Unlock()
	}
	if err == nil {
		return nil
	}
	return classify(op, err, c.now())
}

// Paced marks ctx's calls as made by a caller that holds back on
// ErrRateLimited by its own clock: go-github's own hold (until the reset
// or Retry-After it last saw, on the real clock, answered without a
// request) is skipped, so that the caller's is the one policy.
func Paced(ctx context.Context) context.Context {
	return context.WithValue(ctx, gh.BypassRateLimitCheck, true)
}
