package github_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

// Each status GitHub may answer maps to the kind a caller decides on.
func TestFaultKinds(t *testing.T) {
	for _, tc := range []struct {
		status    int
		kind      error
		retryable bool
	}{
		{http.StatusBadRequest, github.ErrValidation, false},
		{http.StatusUnauthorized, github.ErrUnauthorized, false},
		{http.StatusForbidden, github.ErrForbidden, false},
		{http.StatusNotFound, github.ErrNotFound, false},
		{http.StatusConflict, github.ErrConflict, false},
		{http.StatusUnprocessableEntity, github.ErrValidation, false},
		{http.StatusTooManyRequests, github.ErrRateLimited, true}, // without headers: wait a minute
		{http.StatusInternalServerError, github.ErrServer, true},
		{http.StatusBadGateway, github.ErrServer, true},
		{http.StatusServiceUnavailable, github.ErrServer, true},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			s := newFake(t)
			c := appClient(t, s)
			s.FailNext(fakegithub.EndpointGetJob, tc.status, 1)
			_, err := c.GetJob(context.Background(), "acme", "widgets", 1)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			for _, other := range []error{github.ErrNotFound, github.ErrConflict, github.ErrValidation, github.ErrForbidden, github.ErrRateLimited, github.ErrServer, github.ErrUnauthorized, github.ErrNetwork} {
				if other != tc.kind && errors.Is(err, other) {
					t.Errorf("err is also %v", other)
				}
			}
			if got := github.Retryable(err); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
			var e *github.Error
			if !errors.As(err, &e) || e.StatusCode != tc.status || e.Message == "" {
				t.Errorf("error %#v: want status %d and GitHub's message", e, tc.status)
			}
			if tc.status == http.StatusTooManyRequests {
				if rl, ok := errors.AsType[*github.RateLimitError](err); !ok || rl.RetryAfter != time.Minute {
					t.Errorf("bare 429: %v, want RetryAfter 1m", err)
				}
			}
			// The fault was one-shot: the same call now reaches the handler.
			if _, err := c.GetJob(context.Background(), "acme", "widgets", 1); !errors.Is(err, github.ErrNotFound) {
				t.Errorf("second call: %v, want the handler's 404", err)
			}
		})
	}
}

// The primary rate limit: 403 with X-RateLimit-Remaining: 0. The wait runs
// to X-RateLimit-Reset, and go-github refuses further calls until then
// without sending them: no hot loop reaches GitHub.
func TestPrimaryRateLimit(t *testing.T) {
	s := newFake(t)
	now := time.Now().Truncate(time.Second)
	cfg := appConfig(s)
	cfg.Now = func() time.Time { return now }
	c := newClient(t, cfg)
	ctx := context.Background()
	if _, err := c.ListRunners(ctx, org); err != nil { // fetches the token
		t.Fatal(err)
	}
	if rem, reset := c.RateLimit(); rem != fakegithub.RateLimitPerHour-1 || !reset.After(now) {
		t.Errorf("RateLimit() = %d, %v", rem, reset)
	}
	reset := now.Add(30 * time.Second)
	s.RateLimit(1, reset)
	_, err := c.ListRunners(ctx, org)
	rl, ok := errors.AsType[*github.RateLimitError](err)
	if !ok || !errors.Is(err, github.ErrRateLimited) || !github.Retryable(err) {
		t.Fatalf("err = %v, want a retryable *RateLimitError", err)
	}
	if rl.Secondary || !rl.Reset.Equal(reset) || rl.RetryAfter != 31*time.Second || rl.Err.StatusCode != http.StatusForbidden {
		t.Errorf("RateLimitError %+v: want reset %v, RetryAfter 31s, 403", rl, reset)
	}
	for attempt := range 3 {
		if d := github.Backoff(err, attempt); d < 31*time.Second || d >= 32*time.Second {
			t.Errorf("Backoff(attempt %d) = %v, want [31s, 32s)", attempt, d)
		}
	}
	if rem, got := c.RateLimit(); rem != 0 || !got.Equal(reset) {
		t.Errorf("RateLimit() = %d, %v; want 0, %v", rem, got, reset)
	}

	calls := s.Calls(fakegithub.EndpointListRunners)
	if _, err := c.ListRunners(ctx, org); !errors.Is(err, github.ErrRateLimited) {
		t.Fatalf("call before the reset: %v, want ErrRateLimited", err)
	}
	if n := s.Calls(fakegithub.EndpointListRunners); n != calls {
		t.Errorf("a call before the reset reached GitHub")
	}
}

// The secondary rate limit: 403 or 429 with Retry-After.
func TestSecondaryRateLimit(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			s := newFake(t)
			c := tokenClient(t, s)
			ctx := context.Background()
			s.SecondaryRateLimit(1, status, 17*time.Second)
			_, err := c.GenerateJITConfig(ctx, org, "r", []string{"kiln"}, 1)
			rl, ok := errors.AsType[*github.RateLimitError](err)
			if !ok || !rl.Secondary || rl.RetryAfter != 17*time.Second || rl.Err.StatusCode != status || !github.Retryable(err) {
				t.Fatalf("err = %v (%+v), want secondary, retry after 17s", err, rl)
			}
			if d := github.Backoff(err, 5); d < 17*time.Second || d >= 18*time.Second {
				t.Errorf("Backoff = %v, want [17s, 18s)", d)
			}
			// go-github holds further calls back until Retry-After passes.
			if _, err := c.GenerateJITConfig(ctx, org, "r", []string{"kiln"}, 1); !errors.Is(err, github.ErrRateLimited) {
				t.Errorf("call within Retry-After: %v, want ErrRateLimited", err)
			}
			if n := s.Calls(fakegithub.EndpointGenerateJITConfig); n != 1 {
				t.Errorf("%d calls reached GitHub, want 1", n)
			}
			if len(s.Runners()) != 0 {
				t.Error("a rate-limited call created a runner")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	if github.Retryable(nil) || github.Retryable(errors.New("other")) {
		t.Error("Retryable of nil or a foreign error")
	}
	err := &github.Error{Kind: github.ErrServer}
	for _, tc := range []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{-1, 500 * time.Millisecond, time.Second},
		{0, 500 * time.Millisecond, time.Second},
		{1, time.Second, 2 * time.Second},
		{4, 8 * time.Second, 16 * time.Second},
		{8, 128 * time.Second, 256 * time.Second},
		{9, 150 * time.Second, 300 * time.Second}, // capped at 5 minutes
		{1000, 150 * time.Second, 300 * time.Second},
	} {
		for range 50 {
			if d := github.Backoff(err, tc.attempt); d < tc.lo || d >= tc.hi {
				t.Fatalf("Backoff(attempt %d) = %v, want [%v, %v)", tc.attempt, d, tc.lo, tc.hi)
			}
		}
	}
}

func TestNetworkError(t *testing.T) {
	s := fakegithub.New()
	c := newClient(t, github.Config{BaseURL: s.URL(), Token: pat})
	s.Close()
	_, err := c.ListRunners(context.Background(), org)
	if !errors.Is(err, github.ErrNetwork) || !github.Retryable(err) {
		t.Fatalf("err = %v, want retryable ErrNetwork", err)
	}
	if rem, _ := c.RateLimit(); rem != -1 {
		t.Errorf("RateLimit() remaining %d before any response, want -1", rem)
	}
}

func TestContextCanceled(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.ListRunners(ctx, org)
	if !errors.Is(err, context.Canceled) || github.Retryable(err) {
		t.Fatalf("err = %v, want context.Canceled, not retryable", err)
	}
}
