// Package apiclient calls Kiln's REST API: one JSON request with a bearer
// token, its answer decoded, an error answer turned into an error. The CLI
// and the benchmarks use it.
package apiclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/kilnci/kiln/internal/api"
)

// Client calls the API at URL (the server's base URL) with Token.
type Client struct {
	URL, Token string
	HTTP       *http.Client // nil: http.DefaultClient
	// UserAgent, when set, names the client to the server (whose audit
	// log records it).
	UserAgent string
}

// Do sends in (nil: no body) as JSON to URL+path and decodes a successful
// answer into out (nil, or a 204: ignored). An HTTP status of 300 or more
// is an error carrying the answer's "error" field (or its body).
func (c Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach Kiln at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return fmt.Errorf("%s %s: %s (HTTP %d)", method, path, e.Error, resp.StatusCode)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// BuildLogs reads a build's whole stored log (attempt 0: each job's latest
// attempt), one page at a time, and calls page for each page in order: a
// job's pages follow one another, jobs in the build's order. The server
// cuts each job's log into pages (api.MaxLogPage lines); BuildLogs follows
// every job's cursor to its end, so nothing is left out.
func (c Client) BuildLogs(ctx context.Context, buildID int64, attempt int, page func(api.JobLog) error) error {
	base := fmt.Sprintf("/api/v1/builds/%d/logs", buildID)
	q := url.Values{}
	if attempt > 0 {
		q.Set("attempt", strconv.Itoa(attempt))
	}
	var jobs []api.JobLog
	if err := c.Do(ctx, "GET", base+"?"+q.Encode(), nil, &jobs); err != nil {
		return err
	}
	for _, j := range jobs {
		for {
			if err := page(j); err != nil {
				return err
			}
			if !j.Truncated {
				break
			}
			q := url.Values{}
			q.Set("attempt", strconv.Itoa(j.Attempt))
			q.Set("job", strconv.FormatInt(j.JobID, 10))
			q.Set("after", strconv.FormatInt(j.Next, 10))
			var next []api.JobLog
			if err := c.Do(ctx, "GET", base+"?"+q.Encode(), nil, &next); err != nil {
				return err
			}
			if len(next) != 1 || next[0].JobID != j.JobID {
				return fmt.Errorf("GET %s: want one page of job %d, got %d", base, j.JobID, len(next))
			}
			if next[0].Truncated && next[0].Next <= j.Next {
				return fmt.Errorf("GET %s: job %d's log cursor does not advance (%d)", base, j.JobID, next[0].Next)
			}
			j = next[0]
		}
	}
	return nil
}

// FollowLogs follows a build's live log (the SSE stream): line is called
// with each line as it comes, and the build is returned once it ends. A
// stream that ends before the build does is an error.
func (c Client) FollowLogs(ctx context.Context, buildID int64, line func(api.StreamLine)) (*api.BuildView, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/v1/builds/%d/logs/stream", strings.TrimRight(c.URL, "/"), buildID), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "text/event-stream")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Kiln at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return nil, fmt.Errorf("log stream: %s (HTTP %d)", e.Error, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var event string
	for sc.Scan() {
		text := sc.Text()
		if e, ok := strings.CutPrefix(text, "event: "); ok {
			event = e
			continue
		}
		data, ok := strings.CutPrefix(text, "data: ")
		if !ok {
			continue
		}
		switch event {
		case "line":
			var l api.StreamLine
			if json.Unmarshal([]byte(data), &l) == nil && line != nil {
				line(l)
			}
		case "end":
			var b api.BuildView
			if err := json.Unmarshal([]byte(data), &b); err != nil {
				return nil, fmt.Errorf("log stream: the build: %w", err)
			}
			return &b, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("log stream: %w", err)
	}
	return nil, fmt.Errorf("log stream ended before build %d finished", buildID)
}

// Download is an artifacts archive being downloaded.
type Download struct {
	io.ReadCloser
	// SHA256 is the archive's, as the server recorded it (hex).
	SHA256 string
	// Redirected: the server sent the client to the blob store (a
	// presigned URL), which the bytes come from.
	Redirected bool
}

// Artifact opens the download of a build's job's artifacts. A redirect
// is followed by hand, without the bearer token: a presigned URL carries
// its own authority (and S3 refuses a request with two), and the token
// is not the blob store's to see.
func (c Client) Artifact(ctx context.Context, buildID int64, job string) (*Download, error) {
	path := fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", buildID, url.PathEscape(job))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if c.HTTP != nil {
		hc.Transport, hc.Timeout = c.HTTP.Transport, c.HTTP.Timeout
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Kiln at %s: %w", c.URL, err)
	}
	d := &Download{SHA256: resp.Header.Get("X-Kiln-Artifact-Sha256")}
	if resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther || resp.StatusCode == http.StatusTemporaryRedirect {
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			return nil, fmt.Errorf("GET %s: a redirect without a usable Location: %w", path, err)
		}
		d.Redirected = true
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
		if err != nil {
			return nil, err
		}
		if resp, err = hc.Do(req); err != nil {
			// The URL is presigned: it is not shown.
			return nil, fmt.Errorf("GET %s: the blob store it redirected to (%s) cannot be reached: %w", path, loc.Host, errors.Unwrap(err))
		}
		if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: the blob store (%s) answered %d: %s", path, loc.Host, resp.StatusCode, strings.TrimSpace(string(data)))
		}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct{ Error string }
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return nil, fmt.Errorf("GET %s: %s (HTTP %d)", path, e.Error, resp.StatusCode)
	}
	d.ReadCloser = resp.Body
	return d, nil
}
