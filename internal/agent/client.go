package agent

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
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
)

// ErrStale means the server refused a write because this attempt no longer
// holds the job's lease (it expired, or the job was retried elsewhere).
var ErrStale = errors.New("attempt no longer holds the lease")

// client speaks the agent protocol to the control plane: to one of its
// replicas, bases, moving on to the next when one cannot be reached.
type client struct {
	bases []string
	// cur is the index in bases of the replica requests go to: the same
	// one until it fails (a connection error or a 5xx), then the next.
	// Any replica takes any request (the leases are in the shared
	// database), so a job's heartbeats and reports follow too.
	cur   atomic.Int64
	token string
	http  *http.Client
	log   *slog.Logger
	// proto is the protocol version sent: protocol.Version (tests play
	// agents of other versions against a real server).
	proto string
}

// ServerURLs parses the agent's -server: one control plane URL, or
// several (replicas of one control plane) separated by commas.
func ServerURLs(s string) ([]string, error) {
	var out []string
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("server URL %q: want http(s)://host[:port]", u)
		}
		if slices.Contains(out, u) {
			return nil, fmt.Errorf("server URL %q given twice", u)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no server URL")
	}
	return out, nil
}

func newClient(bases []string, token string, hc *http.Client, log *slog.Logger) *client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &client{bases: bases, token: token, http: hc, log: log, proto: protocol.Version}
}

// server is the URL requests go to now.
func (c *client) server() string { return c.bases[c.cur.Load()] }

// post sends in as JSON and decodes a 200 answer into out. It returns
// (false, nil) on 204. A request that cannot reach the current server,
// or gets a 5xx from it, goes to the next one, and so on, each at most
// once: a caller's backoff is across the whole list. A 4xx is an answer
// (every replica would give it).
func (c *client) post(ctx context.Context, path string, in, out any) (bool, error) {
	return c.postWithin(ctx, path, in, out, 0)
}

// postWithin is post with each server given at most within (0: no bound
// but the HTTP client's), so that one that hangs is failed over in time.
// With one server there is nowhere else to go: a slow answer is better
// than none, and it is not bounded.
func (c *client) postWithin(ctx context.Context, path string, in, out any, within time.Duration) (bool, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return false, err
	}
	for range c.bases {
		i := c.cur.Load()
		var ok bool
		actx, cancel := ctx, context.CancelFunc(func() {})
		if within > 0 && len(c.bases) > 1 {
			actx, cancel = context.WithTimeout(ctx, within)
		}
		ok, err = c.postTo(actx, c.bases[i], path, body, out)
		cancel()
		if err == nil || !failover(err) || ctx.Err() != nil || len(c.bases) == 1 {
			return ok, err
		}
		// Unless another request moved on already.
		next := (i + 1) % int64(len(c.bases))
		if c.cur.CompareAndSwap(i, next) {
			c.log.Warn("server failed; switching to the next", "from", c.bases[i], "to", c.bases[next], "err", err)
		}
	}
	return false, err
}

// failover reports whether a request's error is the server's, not the
// request's: it could not be reached, or answered 5xx.
func failover(err error) bool {
	var he *httpError
	if errors.As(err, &he) {
		return he.status >= 500
	}
	var ve *VersionError
	return !errors.Is(err, ErrStale) && !errors.As(err, &ve)
}

func (c *client) postTo(ctx context.Context, base, path string, body []byte, out any) (bool, error) {
	return c.send(ctx, base, path, "application/json", bytes.NewReader(body), int64(len(body)), out)
}

// postFile posts the file at name as the body (size bytes, of type
// ctype), failing over between servers as post does: each try reads the
// file from its start, so nothing of it is held in memory.
func (c *client) postFile(ctx context.Context, path, ctype, name string, out any) (bool, error) {
	var err error
	for range c.bases {
		i := c.cur.Load()
		var f *os.File
		if f, err = os.Open(name); err != nil {
			return false, err
		}
		var fi os.FileInfo
		if fi, err = f.Stat(); err != nil {
			f.Close()
			return false, err
		}
		var ok bool
		ok, err = c.send(ctx, c.bases[i], path, ctype, f, fi.Size(), out)
		f.Close()
		if err == nil || !failover(err) || ctx.Err() != nil || len(c.bases) == 1 {
			return ok, err
		}
		next := (i + 1) % int64(len(c.bases))
		if c.cur.CompareAndSwap(i, next) {
			c.log.Warn("server failed; switching to the next", "from", c.bases[i], "to", c.bases[next], "err", err)
		}
	}
	return false, err
}

func (c *client) send(ctx context.Context, base, path, ctype string, body io.Reader, size int64, out any) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+protocol.Prefix+path, body)
	if err != nil {
		return false, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set(protocol.Header, c.proto)
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return false, nil
	case resp.StatusCode == http.StatusOK:
		if out == nil {
			return true, nil
		}
		// Not strict: a server one minor newer may send fields this agent
		// does not know (see protocol's package comment).
		return true, json.NewDecoder(resp.Body).Decode(out)
	}
	var e protocol.Error
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(data, &e)
	switch {
	case resp.StatusCode == http.StatusConflict && e.Code == protocol.CodeStaleAttempt,
		resp.StatusCode == http.StatusForbidden && e.Code == protocol.CodeNotYourLease:
		// Either way the attempt is not (or no longer) this agent's.
		return false, fmt.Errorf("%s: %w", e.Error, ErrStale)
	case e.Code == protocol.CodeAgentTooOld || e.Code == protocol.CodeServerTooOld:
		return false, &VersionError{Server: base, Code: e.Code, Msg: e.Error}
	case path == "/register" && resp.StatusCode == http.StatusBadRequest && strings.Contains(e.Error, `unknown field "protocol"`):
		// A server from before the protocol had versions (1.0).
		return false, &VersionError{Server: base, Code: protocol.CodeServerTooOld,
			Msg: fmt.Sprintf("agent speaks protocol %s; the server speaks %s (it predates protocol versions): upgrade the servers first, then the agents", c.proto, protocol.Unversioned)}
	}
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(data))
	}
	return false, &httpError{status: resp.StatusCode, msg: e.Error}
}

// VersionError is a server's refusal of this agent's protocol version:
// the agent cannot work with it, and stops.
type VersionError struct {
	Server string // the URL that refused
	Code   string // protocol.CodeAgentTooOld or protocol.CodeServerTooOld
	Msg    string // the server's explanation, saying what to upgrade
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("server %s refused this agent (%s): %s", e.Server, e.Code, e.Msg)
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("server answered %d: %s", e.status, e.msg) }

// permanent reports whether retrying the same request cannot help.
func permanent(err error) bool {
	var he *httpError
	var ve *VersionError
	return errors.As(err, &he) && he.status >= 400 && he.status < 500 && he.status != http.StatusTooManyRequests || errors.As(err, &ve)
}

func (c *client) register(ctx context.Context, req protocol.RegisterRequest) (*protocol.RegisterResponse, error) {
	req.Protocol = c.proto
	var resp protocol.RegisterResponse
	_, err := c.post(ctx, "/register", req, &resp)
	return &resp, err
}

func (c *client) claim(ctx context.Context, req protocol.ClaimRequest) (*protocol.Assignment, error) {
	var a protocol.Assignment
	ok, err := c.post(ctx, "/claim", req, &a)
	if err != nil || !ok {
		return nil, err
	}
	return &a, nil
}

func jobPath(id int64, what string) string { return fmt.Sprintf("/jobs/%d/%s", id, what) }

// heartbeat renews the attempt's lease, giving each of several servers at
// most within: a hung one must not hold the renewal until the lease expires.
func (c *client) heartbeat(ctx context.Context, jobID int64, attempt int, within time.Duration) (cancel bool, err error) {
	var resp protocol.HeartbeatResponse
	_, err = c.postWithin(ctx, jobPath(jobID, "heartbeat"), protocol.Fence{Attempt: attempt}, &resp, within)
	return resp.Cancel, err
}

// retry repeats a job write until it succeeds, is refused for good, or ctx
// ends. Job writes are idempotent on the server, so repeating is safe.
func retry(ctx context.Context, f func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil || errors.Is(err, ErrStale) || permanent(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *client) step(ctx context.Context, jobID int64, u protocol.StepUpdate) error {
	return retry(ctx, func(ctx context.Context) error {
		_, err := c.post(ctx, jobPath(jobID, "steps"), u, nil)
		return err
	})
}

func (c *client) sendLogs(ctx context.Context, jobID int64, attempt int, lines []logs.Line) error {
	_, err := c.post(ctx, jobPath(jobID, "logs"), protocol.LogBatch{Attempt: attempt, Lines: lines}, nil)
	if errors.Is(err, ErrStale) {
		// The attempt is over: nobody will ever accept these lines.
		return nil
	}
	var he *httpError
	if errors.As(err, &he) && (he.status == http.StatusRequestEntityTooLarge || he.status == http.StatusBadRequest) {
		// Too large or invalid: the batcher splits the batch and, down to
		// one line, replaces it with a marker line, so nothing goes
		// without a trace.
		return fmt.Errorf("%w: %w", logs.ErrRefused, err)
	}
	if permanent(err) {
		return nil // not ours to write (the job is gone): retrying cannot help
	}
	return err
}

func (c *client) finish(ctx context.Context, jobID int64, f protocol.FinishRequest) error {
	return retry(ctx, func(ctx context.Context) error {
		_, err := c.post(ctx, jobPath(jobID, "finish"), f, nil)
		return err
	})
}

// uploadArtifacts uploads a job attempt's artifacts archive, the file at
// name, holding files files.
func (c *client) uploadArtifacts(ctx context.Context, jobID int64, attempt, files int, name string) (*protocol.ArtifactUploaded, error) {
	var resp protocol.ArtifactUploaded
	path := fmt.Sprintf("/jobs/%d%s?attempt=%d&files=%d", jobID, protocol.ArtifactsPath, attempt, files)
	// A few tries, not retry's until ctx ends: a blob store that refuses
	// the bytes is not going to take them in the next minutes, and the
	// job, which holds its slot meanwhile, should end in error (retried,
	// perhaps where the network is better) instead.
	backoff := 200 * time.Millisecond
	for try := 1; ; try++ {
		_, err := c.postFile(ctx, path, "application/zstd", name, &resp)
		if err == nil || errors.Is(err, ErrStale) || permanent(err) || try == uploadTries {
			return &resp, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// uploadTries is how many times an artifacts upload is tried.
const uploadTries = 4

func (c *client) cacheEvent(ctx context.Context, jobID int64, ev protocol.CacheEvent) error {
	_, err := c.post(ctx, jobPath(jobID, "caches"), ev, nil)
	return err
}

// LogSender returns the function through which a job attempt's Batcher
// sends its lines to the server at base: the agent's own, for tests that
// drive a Batcher against a real server.
func LogSender(base, token string, hc *http.Client, jobID int64, attempt int) func(context.Context, []logs.Line) error {
	c := newClient([]string{strings.TrimRight(base, "/")}, token, hc, slog.New(slog.DiscardHandler))
	return func(ctx context.Context, lines []logs.Line) error { return c.sendLogs(ctx, jobID, attempt, lines) }
}
