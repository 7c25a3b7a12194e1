package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// assignment is the broker's answer (fakegithub.Assignment).
type assignment struct {
	RunnerID   int64  `json:"runner_id"`
	RunnerName string `json:"runner_name"`
	JobID      int64  `json:"job_id"`
	JobName    string `json:"job_name"`
	Conclusion string `json:"conclusion"`
}

var (
	// errRemoved: GitHub no longer has this runner.
	errRemoved = errors.New("the runner was removed from GitHub")
	// errNotFound: the broker answered 404 (the runner is gone).
	errNotFound = errors.New("runner not found")
)

// refusedError is a 4xx from the broker: final, not worth a retry.
type refusedError struct {
	status  int
	message string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("GitHub refused the runner: HTTP %d: %s", e.status, e.message)
}

func (e *refusedError) Is(target error) bool {
	return target == errNotFound && e.status == http.StatusNotFound
}

// broker speaks fakegithub's runner broker (see fakegithub/broker.go).
type broker struct {
	url    string // serverUrl, with or without a trailing slash
	client *http.Client
}

func (b *broker) register(ctx context.Context, encoded string) (assignment, error) {
	return b.call(ctx, "register", map[string]any{"jitconfig": encoded})
}

func (b *broker) acquire(ctx context.Context, id int64) (assignment, error) {
	return b.call(ctx, "acquire", map[string]any{"runner_id": id})
}

func (b *broker) complete(ctx context.Context, id int64, conclusion string) (assignment, error) {
	return b.call(ctx, "complete", map[string]any{"runner_id": id, "conclusion": conclusion})
}

// call POSTs body to /_fake/runner/op. Errors name the operation and the
// broker's answer, never the request (it may hold the configuration).
func (b *broker) call(ctx context.Context, op string, body any) (assignment, error) {
	var a assignment
	data, err := json.Marshal(body)
	if err != nil {
		return a, err
	}
	u := strings.TrimSuffix(b.url, "/") + "/_fake/runner/" + op
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return a, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHubActionsRunner-linux-x64/"+Version)
	resp, err := b.client.Do(req)
	if err != nil {
		return a, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return a, fmt.Errorf("%s: reading the answer: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(raw))
		}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return a, fmt.Errorf("%s: %w", op, &refusedError{status: resp.StatusCode, message: e.Message})
		}
		return a, fmt.Errorf("%s: HTTP %d: %s", op, resp.StatusCode, e.Message)
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	return a, nil
}
