// Package forgestatus sends builds' and jobs' states to their forge as
// commit statuses (GitHub, GitLab, Gitea), or as check runs on GitHub for
// a project connected through a GitHub App installation (checkruns.go),
// from the store's outbox.
//
// The store writes an outbox row in the transaction of every status change
// (see store.syncStatuses), so nothing is lost to a crash; this package
// only reads the rows and delivers them. Per (project, commit, context)
// only the newest undelivered state is sent (older ones are marked
// superseded), and one round at a time, so a context's states reach the
// forge in order. A forge that is down, slow or rate limiting never holds
// a build up: delivery is retried with backoff in the background; a
// refusal (another 4xx) is given up, recorded on the row and logged.
package forgestatus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/store"
)

// Config tunes the sender. Zero fields get the defaults.
type Config struct {
	// PublicURL is the server's base URL; a status links to the build's
	// page there, PublicURL/builds/ID (api.BuildPagePath).
	PublicURL string
	// Poll is how often the outbox is read (default 1s) when no Wake
	// came; after a Wake the next round comes Settle later (default
	// 50ms).
	Poll   time.Duration
	Settle time.Duration
	// Workers is how many statuses are sent at once (default 8).
	Workers int
	// Batch bounds the rows read per round (default 500).
	Batch int
	// Timeout bounds one request (default 15s).
	Timeout time.Duration
	// GiveUpAfter: a status that keeps failing for a reason that passes
	// (5xx, network, rate limits) is given up once it is this old (default
	// 24h): a forge down for hours still gets the newest states when it
	// returns.
	GiveUpAfter time.Duration
	// Backoff is the wait before attempt n+1 after n failed ones (default
	// 2^n seconds, at most 10 minutes).
	Backoff func(attempts int) time.Duration
	// Keep is how long rows done with (delivered, superseded, given up)
	// stay in the outbox (default 7 days); they are pruned hourly.
	Keep time.Duration
	// Now is the clock (tests move it).
	Now func() time.Time
	// Client sends the requests (default: an http.Client with Timeout
	// that follows no redirect). A client given here should not follow
	// redirects either: GitLab's PRIVATE-TOKEN is not a header Go drops on
	// a redirect to another host.
	Client *http.Client
	// App is the server's GitHub App, its clients per installation
	// (shared with the clones' credentials): a project connected through
	// one of its installations gets check runs. Nil: no App.
	App *github.Installations
	// LogLines is how many of a failed step's last log lines its check
	// run shows (default 20; negative: none). They are as stored, secrets
	// masked; whoever can read the repository on GitHub sees them.
	LogLines int
}

func (c *Config) defaults() {
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 50 * time.Millisecond
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Batch <= 0 {
		c.Batch = 500
	}
	if c.Timeout <= 0 {
		c.Timeout = 15 * time.Second
	}
	if c.GiveUpAfter <= 0 {
		c.GiveUpAfter = 24 * time.Hour
	}
	if c.Backoff == nil {
		c.Backoff = func(n int) time.Duration {
			if n > 10 {
				n = 10
			}
			return min(time.Duration(1<<n)*time.Second, 10*time.Minute)
		}
	}
	if c.LogLines == 0 {
		c.LogLines = 20
	}
	if c.Keep <= 0 {
		c.Keep = 7 * 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Client == nil {
		// The token goes to the configured API URL only: a redirect is
		// answered as it came (a 3xx: given up, recorded).
		c.Client = &http.Client{Timeout: c.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
}

// Sender delivers the outbox.
type Sender struct {
	cfg Config
	st  *store.Store
	m   *metrics.Metrics
	log *slog.Logger

	mu sync.Mutex
	// hold: a project whose forge said to wait (a rate limit) gets no
	// request before then. In memory only: after a restart the first
	// request learns it again.
	hold map[int64]time.Time
	// wake: a status was written (Wake); one pending wake-up is enough.
	wake chan struct{}
}

func New(cfg Config, st *store.Store, m *metrics.Metrics, log *slog.Logger) *Sender {
	cfg.defaults()
	return &Sender{cfg: cfg, st: st, m: m, log: log, hold: map[int64]time.Time{}, wake: make(chan struct{}, 1)}
}

// Wake says the outbox has new rows (store.OnForgeStatus): the next round
// comes after Settle rather than at the next poll. Never blocks.
func (s *Sender) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// held reports whether project's forge asked to wait past now.
func (s *Sender) held(project int64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hold[project].After(now)
}

// Run delivers the outbox every Poll until ctx ends.
func (s *Sender) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	var pruned time.Time
	for {
		if now := s.cfg.Now(); now.Sub(pruned) >= time.Hour {
			pruned = now
			if _, err := s.st.PruneForgeStatuses(ctx, now.Add(-s.cfg.Keep)); err != nil && ctx.Err() == nil {
				s.log.Warn("forge statuses: pruning the outbox", "err", err)
			}
			if _, err := s.st.PruneCheckRuns(ctx, now.Add(-s.cfg.Keep)); err != nil && ctx.Err() == nil {
				s.log.Warn("forge statuses: pruning check run ids", "err", err)
			}
		}
		// Rounds follow each other while they send (a backlog drains at
		// once, up to a bound, in case recording outcomes fails); the
		// ticker paces the outbox's reads when idle.
		for range 100 {
			n, err := s.Round(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("forge statuses: reading the outbox", "err", err)
			}
			if n == 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
			// Let the states of one change settle (a build's and its
			// jobs' rows come from a few transactions in a row): they go
			// in one round, and a context changed twice meanwhile is sent
			// once.
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.Settle):
			}
		}
	}
}

// Round reads the outbox once: supersedes older states, sends the newest
// due state of each (commit, context), and records each outcome. It
// returns how many rows it sent (whatever the answer).
func (s *Sender) Round(ctx context.Context) (int, error) {
	superseded, err := s.st.SupersedeForgeStatuses(ctx)
	if err != nil {
		return 0, err
	}
	for p, n := range superseded {
		c, _ := s.st.ProjectForge(ctx, p)
		for range n {
			s.count(c, "superseded")
		}
	}
	now := s.cfg.Now()
	due, conns, err := s.st.PendingForgeStatuses(ctx, now, s.heldProjects(now), s.cfg.Batch)
	if err != nil {
		return 0, err
	}
	work := make(chan *store.ForgeStatus)
	var wg sync.WaitGroup
	for range min(s.cfg.Workers, len(due)) {
		wg.Go(func() {
			for r := range work {
				if s.held(r.ProjectID, s.cfg.Now()) {
					continue // rate limited meanwhile: left for a later round
				}
				s.deliver(ctx, conns[r.ProjectID], r)
			}
		})
	}
	for _, r := range due {
		work <- r
	}
	close(work)
	wg.Wait()
	return len(due), ctx.Err()
}

// heldProjects lists the projects whose forge asked to wait past now.
func (s *Sender) heldProjects(now time.Time) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for p, until := range s.hold {
		if until.After(now) {
			out = append(out, p)
		} else {
			delete(s.hold, p)
		}
	}
	return out
}

func (s *Sender) count(c *store.ForgeConnection, result string) {
	if s.m == nil {
		return
	}
	forge := "none"
	if c != nil {
		forge = c.Forge
	}
	s.m.ForgeStatuses.WithLabelValues(forge, result).Inc()
}

// deliver sends one row and records what came of it.
func (s *Sender) deliver(ctx context.Context, c *store.ForgeConnection, r *store.ForgeStatus) {
	log := s.log.With("build", r.BuildID, "context", r.Context, "state", r.State, "commit", r.Commit)
	var err error
	if c == nil {
		err = &refused{msg: "the project has no forge connection any more"}
	} else {
		err = s.send(ctx, c, r)
	}
	var ref *refused
	var wait *retryAt
	switch {
	case err == nil:
		s.count(c, "delivered")
		if err := s.st.ForgeStatusDelivered(ctx, r.ID, s.cfg.Now()); err != nil {
			log.Warn("forge statuses: recording a delivery", "err", err)
		}
		return
	case ctx.Err() != nil:
		return // shutting down: the row stays to send
	case errors.As(err, &ref) || s.cfg.Now().Sub(r.CreatedAt) >= s.cfg.GiveUpAfter:
		s.count(c, "failed")
		log.Warn("forge statuses: given up", "attempts", r.Attempts+1, "err", err)
		if err := s.st.ForgeStatusFailed(ctx, r.ID, err.Error()); err != nil {
			log.Warn("forge statuses: recording a failure", "err", err)
		}
		return
	}
	next := s.cfg.Now().Add(s.cfg.Backoff(r.Attempts + 1))
	if errors.As(err, &wait) && !wait.at.IsZero() {
		next = wait.at
		s.mu.Lock()
		if next.After(s.hold[r.ProjectID]) {
			s.hold[r.ProjectID] = next
		}
		s.mu.Unlock()
	}
	s.count(c, "retried")
	log.Info("forge statuses: will retry", "attempts", r.Attempts+1, "next", next, "err", err)
	if err := s.st.ForgeStatusRetry(ctx, r.ID, err.Error(), next); err != nil {
		log.Warn("forge statuses: recording a retry", "err", err)
	}
}

// refused is an answer not worth retrying (a 4xx other than 429 and rate
// limits): a bad token, a repository not found, an invalid status.
type refused struct{ msg string }

func (e *refused) Error() string { return e.msg }

// retryAt is a transient failure; at (if set) is when the forge said to
// come back.
type retryAt struct {
	msg string
	at  time.Time
}

func (e *retryAt) Error() string { return e.msg }

// TargetURL is where a status links to.
func (s *Sender) TargetURL(buildID int64) string {
	return strings.TrimRight(s.cfg.PublicURL, "/") + "/builds/" + strconv.FormatInt(buildID, 10)
}

// Request builds the forge's request for one status.
func (s *Sender) Request(ctx context.Context, c *store.ForgeConnection, r *store.ForgeStatus) (*http.Request, error) {
	base := strings.TrimRight(c.APIURL, "/")
	desc := truncate(r.Description, 140)
	target := s.TargetURL(r.BuildID)
	var path string
	var body map[string]string
	switch c.Forge {
	case store.ForgeGitHub:
		path = "/repos/" + c.Repo + "/statuses/" + url.PathEscape(r.Commit)
		body = map[string]string{"state": GitHubState(r.State), "context": r.Context, "target_url": target, "description": desc}
	case store.ForgeGitLab:
		path = "/api/v4/projects/" + url.PathEscape(c.Repo) + "/statuses/" + url.PathEscape(r.Commit)
		body = map[string]string{"state": GitLabState(r.State), "name": r.Context, "target_url": target, "description": desc}
	case store.ForgeGitea:
		path = "/api/v1/repos/" + c.Repo + "/statuses/" + url.PathEscape(r.Commit)
		body = map[string]string{"state": GiteaState(r.State), "context": r.Context, "target_url": target, "description": desc}
	default:
		return nil, &refused{msg: fmt.Sprintf("unknown forge %q", c.Forge)}
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(data))
	if err != nil {
		return nil, &refused{msg: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	switch c.Forge {
	case store.ForgeGitHub:
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		req.Header.Set("Authorization", "Bearer "+c.Token)
	case store.ForgeGitLab:
		req.Header.Set("PRIVATE-TOKEN", c.Token)
	case store.ForgeGitea:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Authorization", "token "+c.Token)
	}
	return req, nil
}

// send delivers one row: a check run for a GitHub App installation, else
// a commit status with the connection's token. Either answers refused or
// retryAt, and deliver decides alike.
func (s *Sender) send(ctx context.Context, c *store.ForgeConnection, r *store.ForgeStatus) error {
	if c.App() {
		return s.sendCheckRun(ctx, c, r)
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := s.Request(rctx, c, r)
	if err != nil {
		return err
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return &retryAt{msg: fmt.Sprintf("%s: %v", c.Forge, err)}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	text := fmt.Sprintf("%s: %s: %s", c.Forge, resp.Status, strings.TrimSpace(strings.ToValidUTF8(string(msg), "?")))
	now := s.cfg.Now()
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return &retryAt{msg: text, at: retryAfter(resp.Header, now)}
	case resp.StatusCode == http.StatusForbidden && (resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.Header.Get("Retry-After") != ""):
		// GitHub's primary rate limit (its reset) or a secondary one
		// (Retry-After), answered 403.
		at := retryAfter(resp.Header, now)
		if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); at.IsZero() && err == nil {
			at = time.Unix(reset, 0)
		}
		return &retryAt{msg: text, at: at}
	case resp.StatusCode >= 500:
		return &retryAt{msg: text}
	}
	return &refused{msg: text}
}

// retryAfter reads Retry-After (seconds or an HTTP date); zero when absent.
func retryAfter(h http.Header, now time.Time) time.Time {
	v := h.Get("Retry-After")
	if v == "" {
		return time.Time{}
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return now.Add(time.Duration(n) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Time{}
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// GitHubState maps Kiln's state to GitHub's (pending, success, failure,
// error): a canceled build is an error, a timed-out one a failure.
func GitHubState(st store.Status) string {
	switch st {
	case store.StatusSuccess:
		return "success"
	case store.StatusFailure, store.StatusTimedOut:
		return "failure"
	case store.StatusError, store.StatusCanceled:
		return "error"
	}
	return "pending"
}

// GitLabState maps Kiln's state to GitLab's (pending, running, success,
// failed, canceled).
func GitLabState(st store.Status) string {
	switch st {
	case store.StatusRunning:
		return "running"
	case store.StatusSuccess:
		return "success"
	case store.StatusFailure, store.StatusTimedOut, store.StatusError:
		return "failed"
	case store.StatusCanceled:
		return "canceled"
	}
	return "pending"
}

// GiteaState maps Kiln's state to Gitea's (pending, success, error,
// failure, warning).
func GiteaState(st store.Status) string {
	switch st {
	case store.StatusSuccess:
		return "success"
	case store.StatusFailure, store.StatusTimedOut:
		return "failure"
	case store.StatusError, store.StatusCanceled:
		return "error"
	}
	return "pending"
}
