package github_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

var org = github.Scope{Owner: "acme"}

func TestConfigValidate(t *testing.T) {
	good := pemOf(keys()[0])
	for _, tc := range []struct {
		name   string
		cfg    github.Config
		fields []string // every field the error must name; none: valid
	}{
		{"token", github.Config{Token: pat}, nil},
		{"app", github.Config{AppID: 1, PrivateKeyPEM: good, InstallationID: 2}, nil},
		{"GHES", github.Config{BaseURL: "https://ghe.example.com/api/v3/", Token: pat}, nil},
		{"nothing", github.Config{}, []string{"Token"}},
		{"both", github.Config{AppID: 1, PrivateKeyPEM: good, InstallationID: 2, Token: pat}, []string{"Token"}},
		{"app without installation or key", github.Config{AppID: 1}, []string{"InstallationID", "PrivateKeyPEM"}},
		{"bad key", github.Config{AppID: 1, PrivateKeyPEM: []byte("not a key"), InstallationID: 2}, []string{"PrivateKeyPEM"}},
		{"negative app id", github.Config{AppID: -1, PrivateKeyPEM: good, InstallationID: 2}, []string{"AppID"}},
		{"relative URL", github.Config{BaseURL: "ghe.example.com/api/v3", Token: pat}, []string{"BaseURL"}},
		{"URL with query", github.Config{BaseURL: "https://ghe.example.com/?x=1", Token: pat}, []string{"BaseURL"}},
		{"token with newline", github.Config{Token: "abc\n"}, []string{"Token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: no error")
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), ": "+f+": ") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
			if _, err := github.New(tc.cfg); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

// The fake verifies the App's RS256 JWT; the installation token is fetched
// once and reused while it is good for more than a minute.
func TestAppTokenCached(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	for range 5 {
		if _, err := c.ListRunners(context.Background(), org); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.TokensIssued(); n != 1 {
		t.Errorf("tokens issued for 5 calls: %d, want 1", n)
	}
	if got := s.Calls(fakegithub.EndpointListRunners); got != 5 {
		t.Errorf("list-runners calls: %d, want 5", got)
	}
	if exp := c.TokenExpiry(); time.Until(exp) < 50*time.Minute {
		t.Errorf("token expiry %v: want about an hour ahead", exp)
	}
}

// Concurrent first requests share one token exchange.
func TestAppTokenConcurrent(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			_, err := c.ListRunners(context.Background(), org)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := s.TokensIssued(); n != 1 {
		t.Errorf("tokens issued for 10 concurrent calls: %d, want 1", n)
	}
}

// A token that expires within ghinstallation's one-minute margin is
// replaced before the next request; the new, long-lived one is then reused.
// No sleeping: the fake issues the first token with a 30s lifetime, which
// is already inside the margin.
func TestAppTokenRefreshedBeforeExpiry(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	s.SetTokenTTL(30 * time.Second)
	if _, err := c.ListRunners(ctx, org); err != nil {
		t.Fatal(err)
	}
	first := c.TokenExpiry()
	if n := s.TokensIssued(); n != 1 {
		t.Fatalf("tokens: %d, want 1", n)
	}
	s.SetTokenTTL(time.Hour)
	for range 3 {
		if _, err := c.ListRunners(ctx, org); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.TokensIssued(); n != 2 {
		t.Errorf("tokens after refresh: %d, want 2 (one refresh, then cached)", n)
	}
	if !c.TokenExpiry().After(first) {
		t.Errorf("expiry %v not after the first token's %v", c.TokenExpiry(), first)
	}
}

// A token GitHub no longer takes (expired by the server's clock) is a 401:
// ErrUnauthorized, not worth retrying as is.
func TestExpiredTokenRejected(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	if _, err := c.ListRunners(ctx, org); err != nil {
		t.Fatal(err)
	}
	s.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	_, err := c.ListRunners(ctx, org)
	if !errors.Is(err, github.ErrUnauthorized) || github.Retryable(err) {
		t.Fatalf("err = %v, want ErrUnauthorized, not retryable", err)
	}
}

// An App that cannot get a token is ErrUnauthorized whatever GitHub
// answered, and never reads as the runner's 404: RemoveRunner must fail.
func TestAppTokenRefused(t *testing.T) {
	s := newFake(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  func(github.Config) github.Config
		msg  string
	}{
		{"wrong key", func(c github.Config) github.Config { c.PrivateKeyPEM = pemOf(keys()[1]); return c }, "Signature"},
		{"unknown app", func(c github.Config) github.Config { c.AppID = 999; return c }, "iss"},
		{"unknown installation", func(c github.Config) github.Config { c.InstallationID = 404; return c }, "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.cfg(appConfig(s)))
			err := c.RemoveRunner(ctx, org, 1)
			if !errors.Is(err, github.ErrUnauthorized) || errors.Is(err, github.ErrNotFound) || github.Retryable(err) {
				t.Fatalf("RemoveRunner: %v, want ErrUnauthorized only", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q lacks GitHub's message %q", err, tc.msg)
			}
		})
	}
	if n := s.Calls(fakegithub.EndpointDeleteRunner); n != 0 {
		t.Errorf("delete-runner reached %d times without a token", n)
	}
}

// A 5xx from the token exchange is retryable, and the next call gets a token.
func TestAppTokenExchangeServerError(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	s.FailNext(fakegithub.EndpointAccessTokens, http.StatusBadGateway, 1)
	_, err := c.ListRunners(ctx, org)
	if !errors.Is(err, github.ErrServer) || !github.Retryable(err) {
		t.Fatalf("err = %v, want retryable ErrServer", err)
	}
	if _, err := c.ListRunners(ctx, org); err != nil {
		t.Fatalf("after the fault: %v", err)
	}
}

func TestTokenAuth(t *testing.T) {
	s := newFake(t)
	ctx := context.Background()
	if _, err := tokenClient(t, s).ListRunners(ctx, org); err != nil {
		t.Fatal(err)
	}
	if n := s.TokensIssued(); n != 0 {
		t.Errorf("token auth exchanged %d installation tokens", n)
	}
	bad := newClient(t, github.Config{BaseURL: s.URL(), Token: "ghp_wrong"})
	if _, err := bad.ListRunners(ctx, org); !errors.Is(err, github.ErrUnauthorized) {
		t.Fatalf("wrong token: %v, want ErrUnauthorized", err)
	}
}

// GitHub Enterprise Server serves the API below /api/v3/; the base URL is
// used as given, for App and token auth alike.
func TestGHESBaseURL(t *testing.T) {
	s := newFake(t, fakegithub.WithPathPrefix("/api/v3"))
	if !strings.HasSuffix(s.URL(), "/api/v3/") {
		t.Fatalf("fake URL %q", s.URL())
	}
	ctx := context.Background()
	for name, c := range map[string]*github.Client{"app": appClient(t, s), "token": tokenClient(t, s)} {
		jit, err := c.GenerateJITConfig(ctx, github.Scope{Owner: "acme", Repo: "w"}, "r-"+name, []string{"kiln"}, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := c.GetRunner(ctx, github.Scope{Owner: "acme", Repo: "w"}, jit.RunnerID); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Without the path, nothing is there.
	root := strings.TrimSuffix(s.URL(), "api/v3/")
	c := newClient(t, github.Config{BaseURL: root, Token: pat})
	if _, err := c.ListRunners(ctx, org); !errors.Is(err, github.ErrNotFound) {
		t.Fatalf("API at the host root: %v, want ErrNotFound", err)
	}
}
