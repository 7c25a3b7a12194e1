package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v92/github"
)

// Error kinds: every error from a Client method that came from GitHub (or
// from failing to reach it) wraps exactly one of these; test with errors.Is.
var (
	ErrNotFound   = errors.New("not found")            // 404, 410
	ErrConflict   = errors.New("conflict")             // 409: a runner of that name exists
	ErrValidation = errors.New("validation failed")    // 400, 422 (e.g. removing a busy runner), bad arguments
	ErrForbidden  = errors.New("forbidden")            // 403 that is not a rate limit: missing permission
	ErrServer     = errors.New("server error")         // 5xx: retryable
	ErrNetwork    = errors.New("GitHub not reachable") // no response at all: retryable
	// ErrRateLimited is a primary (X-RateLimit-Remaining: 0) or secondary
	// (Retry-After) rate limit, on 403 or 429. The error is a
	// *RateLimitError saying how long to wait. Retryable, after that wait.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnauthorized is a 401 (bad or expired token), or a GitHub App
	// that could not get an installation token (bad key, wrong app id,
	// installation gone): a configuration problem, not retryable.
	ErrUnauthorized = errors.New("unauthorized")
)

// Error is a failed call: which one, GitHub's status and message, and the
// kind a caller decides on.
type Error struct {
	Kind       error  // one of the Err* kinds; nil when none fits (say a 418)
	Op         string // what was asked, e.g. "remove runner 7 of org acme"
	StatusCode int    // 0 when no response came
	Message    string // GitHub's "message", when it sent one
	RequestID  string // X-GitHub-Request-Id, for GitHub support
	Err        error  // the underlying error (go-github's, ghinstallation's, net's)
}

func (e *Error) Error() string {
	s := "github: " + e.Op + ": "
	if e.StatusCode != 0 {
		s += strconv.Itoa(e.StatusCode) + " "
	}
	switch {
	case e.Message != "":
		s += e.Message
	case e.Kind != nil:
		s += e.Kind.Error()
	case e.Err != nil:
		s += e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// RateLimitError is an ErrRateLimited error with the wait GitHub asked for.
type RateLimitError struct {
	Err *Error // Kind is ErrRateLimited
	// RetryAfter is how long to wait before the next request: Retry-After
	// when GitHub sent it, else the time until X-RateLimit-Reset (plus a
	// second, as the header is rounded down), else a minute, as GitHub's
	// documentation asks. Always positive.
	RetryAfter time.Duration
	Reset      time.Time // X-RateLimit-Reset; zero when not sent
	Secondary  bool      // a secondary (abuse) limit rather than the hourly quota
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%s (retry after %v)", e.Err.Error(), e.RetryAfter)
}

func (e *RateLimitError) Unwrap() error { return e.Err }

// Retryable reports whether the same call may succeed later without any
// change: a 5xx, a rate limit, or no response. A caller that retries waits
// Backoff(err, attempt) first.
func Retryable(err error) bool {
	return errors.Is(err, ErrServer) || errors.Is(err, ErrRateLimited) || errors.Is(err, ErrNetwork)
}

const (
	backoffBase = time.Second
	backoffCap  = 5 * time.Minute
)

// Backoff is how long to wait before attempt number attempt+1 (attempt
// counts failures so far, from 0). A rate limit's RetryAfter is honoured
// (with up to a second of jitter on top, never less); anything else gets a
// capped exponential backoff with jitter: a random duration in [d/2, d)
// with d = 1s·2^attempt, at most 5 minutes. It does not judge whether err
// is worth retrying: ask Retryable.
func Backoff(err error, attempt int) time.Duration {
	if rl, ok := errors.AsType[*RateLimitError](err); ok && rl.RetryAfter > 0 {
		return rl.RetryAfter + rand.N(time.Second)
	}
	d := backoffCap
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 20 {
		d = min(backoffBase<<attempt, backoffCap)
	}
	return d/2 + rand.N(d/2)
}

// secondaryDefault is the wait GitHub documents for a rate limit that came
// without Retry-After or X-RateLimit-Reset.
const secondaryDefault = time.Minute

// classify turns what go-github or ghinstallation returned into an error of
// one of the package's kinds.
func classify(op string, err error, now time.Time) error {
	if _, ok := errors.AsType[*Error](err); ok {
		return err
	}
	// The caller's context ended: go-github returns ctx.Err() itself. (An
	// http.Client timeout is a *url.Error instead, and counts as ErrNetwork.)
	if err == context.Canceled || err == context.DeadlineExceeded { //nolint:errorlint // exactly ctx.Err()
		return fmt.Errorf("github: %s: %w", op, err)
	}
	// ghinstallation's failure to get an installation token comes wrapped
	// in the *url.Error of the API call it was for: look for it first, so
	// that a 404 for the installation never reads as "runner not found".
	if he, ok := errors.AsType[*ghinstallation.HTTPError](err); ok {
		return tokenError(op, he, now)
	}
	if rl, ok := errors.AsType[*gh.RateLimitError](err); ok {
		e := fromResponse(op, rl.Response, rl.Message, err)
		e.Kind = ErrRateLimited
		return rateLimited(e, rl.Response, rl.Rate.Reset.Time, false, now)
	}
	if ab, ok := errors.AsType[*gh.AbuseRateLimitError](err); ok {
		e := fromResponse(op, ab.Response, ab.Message, err)
		e.Kind = ErrRateLimited
		rle := rateLimited(e, ab.Response, time.Time{}, true, now)
		if ab.RetryAfter != nil && *ab.RetryAfter > 0 && rle.RetryAfter == secondaryDefault {
			rle.RetryAfter = *ab.RetryAfter
		}
		return rle
	}
	if er, ok := errors.AsType[*gh.ErrorResponse](err); ok {
		return fromStatus(fromResponse(op, er.Response, er.Message, err), er.Response, now)
	}
	if tf, ok := errors.AsType[*gh.TwoFactorAuthError](err); ok {
		e := fromResponse(op, tf.Response, tf.Message, err)
		e.Kind = ErrUnauthorized
		return e
	}
	if _, ok := errors.AsType[*url.Error](err); ok {
		return &Error{Kind: ErrNetwork, Op: op, Err: err}
	}
	return &Error{Op: op, Err: err}
}

func fromResponse(op string, resp *http.Response, msg string, err error) *Error {
	e := &Error{Op: op, Message: msg, Err: err}
	if resp != nil {
		e.StatusCode = resp.StatusCode
		e.RequestID = resp.Header.Get(gh.HeaderRequestID)
	}
	return e
}

// fromStatus sets e's kind from the status code; a 403 or 429 that carries
// rate-limit headers becomes a *RateLimitError.
func fromStatus(e *Error, resp *http.Response, now time.Time) error {
	code := e.StatusCode
	if resp != nil && (code == http.StatusForbidden || code == http.StatusTooManyRequests) {
		h := resp.Header
		if code == http.StatusTooManyRequests || h.Get("Retry-After") != "" || h.Get(gh.HeaderRateRemaining) == "0" {
			// GitHub's documented order: Retry-After; else, if the quota
			// is spent, X-RateLimit-Reset; else at least a minute.
			e.Kind = ErrRateLimited
			exhausted := h.Get(gh.HeaderRateRemaining) == "0"
			var reset time.Time
			if v, err := strconv.ParseInt(h.Get(gh.HeaderRateReset), 10, 64); err == nil && v > 0 && exhausted {
				reset = time.Unix(v, 0)
			}
			return rateLimited(e, resp, reset, !exhausted, now)
		}
	}
	switch {
	case code == http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
	case code == http.StatusForbidden:
		e.Kind = ErrForbidden
	case code == http.StatusNotFound || code == http.StatusGone:
		e.Kind = ErrNotFound
	case code == http.StatusConflict:
		e.Kind = ErrConflict
	case code == http.StatusBadRequest || code == http.StatusUnprocessableEntity:
		e.Kind = ErrValidation
	case code >= 500:
		e.Kind = ErrServer
	}
	return e
}

func rateLimited(e *Error, resp *http.Response, reset time.Time, secondary bool, now time.Time) *RateLimitError {
	rl := &RateLimitError{Err: e, Reset: reset, Secondary: secondary}
	if resp != nil {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			rl.RetryAfter = time.Duration(s) * time.Second
			return rl
		}
	}
	if !reset.IsZero() {
		rl.RetryAfter = max(reset.Sub(now)+time.Second, time.Second)
		return rl
	}
	rl.RetryAfter = secondaryDefault
	return rl
}

// tokenError classifies a failure to exchange the App's JWT for an
// installation token. Whatever GitHub answered short of a 5xx or a rate
// limit means this App cannot act for this installation.
func tokenError(op string, he *ghinstallation.HTTPError, now time.Time) error {
	resp := he.Response
	if resp == nil {
		return &Error{Kind: ErrNetwork, Op: op, Message: "installation token: " + he.Message, Err: he}
	}
	// ghinstallation leaves the body of a failed token response open for
	// the caller: read GitHub's message and close it.
	var msg struct {
		Message string `json:"message"`
	}
	if resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		_ = json.Unmarshal(body, &msg)
	}
	e := fromResponse(op, resp, "installation token: "+http.StatusText(resp.StatusCode), he)
	if msg.Message != "" {
		e.Message = "installation token: " + msg.Message
	}
	if err := fromStatus(e, resp, now); errors.Is(err, ErrRateLimited) || errors.Is(err, ErrServer) {
		return err
	}
	e.Kind = ErrUnauthorized
	return e
}
