package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
)

// ErrStale means the server refused a write because this attempt no longer
// holds the job's lease (it expired, or the job was retried elsewhere).
var ErrStale = errors.New("attempt no longer holds the lease")

// client speaks the agent protocol to the control plane.
type client struct {
	base  string
	token string
	http  *http.Client
}

func newClient(base, token string, hc *http.Client) *client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &client{base: strings.TrimRight(base, "/"), token: token, http: hc}
}

// post sends in as JSON and decodes a 200 answer into out. It returns
// (false, nil) on 204.
func (c *client) post(ctx context.Context, path string, in, out any) (bool, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+protocol.Prefix+path, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
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
		return true, json.NewDecoder(resp.Body).Decode(out)
	}
	var e protocol.Error
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(data, &e)
	if resp.StatusCode == http.StatusConflict && e.Code == protocol.CodeStaleAttempt ||
		resp.StatusCode == http.StatusForbidden && e.Code == protocol.CodeNotYourLease {
		// Either way the attempt is not (or no longer) this agent's.
		return false, fmt.Errorf("%s: %w", e.Error, ErrStale)
	}
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(data))
	}
	return false, &httpError{status: resp.StatusCode, msg: e.Error}
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("server answered %d: %s", e.status, e.msg) }

// permanent reports whether retrying the same request cannot help.
func permanent(err error) bool {
	var he *httpError
	return errors.As(err, &he) && he.status >= 400 && he.status < 500 && he.status != http.StatusTooManyRequests
}

func (c *client) register(ctx context.Context, req protocol.RegisterRequest) (*protocol.RegisterResponse, error) {
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

func (c *client) heartbeat(ctx context.Context, jobID int64, attempt int) (cancel bool, err error) {
	var resp protocol.HeartbeatResponse
	_, err = c.post(ctx, jobPath(jobID, "heartbeat"), protocol.Fence{Attempt: attempt}, &resp)
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

func (c *client) cacheEvent(ctx context.Context, jobID int64, ev protocol.CacheEvent) error {
	_, err := c.post(ctx, jobPath(jobID, "caches"), ev, nil)
	return err
}

// LogSender returns the function through which a job attempt's Batcher
// sends its lines to the server at base: the agent's own, for tests that
// drive a Batcher against a real server.
func LogSender(base, token string, hc *http.Client, jobID int64, attempt int) func(context.Context, []logs.Line) error {
	c := newClient(base, token, hc)
	return func(ctx context.Context, lines []logs.Line) error { return c.sendLogs(ctx, jobID, attempt, lines) }
}
