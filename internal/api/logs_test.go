package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/store"
)

// sse is one server-sent event.
type sse struct {
	event, data string
}

// sseStream reads the events of a build's log stream.
type sseStream struct {
	t  *testing.T
	sc *bufio.Scanner
}

// stream opens GET /api/v1/builds/{id}/logs/stream. The request ends with
// the test, or after waitLimit (a safety net against a stream that never
// ends: the read fails then, and so does the test).
func (e *env) stream(id int64) *sseStream {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/v1/builds/%d/logs/stream", e.url, id), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		e.t.Fatalf("stream: HTTP %d, header %v", resp.StatusCode, resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return &sseStream{t: e.t, sc: sc}
}

// next returns the next event, skipping comments (keepalives).
func (s *sseStream) next() sse {
	s.t.Helper()
	var ev sse
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if ev.event != "" {
				return ev
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		default:
			s.t.Fatalf("stream: unexpected line %q", line)
		}
	}
	s.t.Fatalf("stream ended (%v) in the middle of or before an event %+v", s.sc.Err(), ev)
	return ev
}

// until reads events up to the first of the named kind, and returns the
// ones it skipped and that one.
func (s *sseStream) until(event string) (skipped []sse, ev sse) {
	s.t.Helper()
	for {
		ev := s.next()
		if ev.event == event {
			return skipped, ev
		}
		skipped = append(skipped, ev)
	}
}

// lines reads n "line" events, allowing "status" events between them.
func (s *sseStream) lines(n int) []api.StreamLine {
	s.t.Helper()
	var out []api.StreamLine
	for len(out) < n {
		ev := s.next()
		switch ev.event {
		case "status":
		case "line":
			var l api.StreamLine
			if err := json.Unmarshal([]byte(ev.data), &l); err != nil {
				s.t.Fatal(err)
			}
			out = append(out, l)
		default:
			s.t.Fatalf("event %+v while waiting for lines", ev)
		}
	}
	return out
}

// wantEOF checks the server ended the stream.
func (s *sseStream) wantEOF() {
	s.t.Helper()
	for s.sc.Scan() {
		if line := s.sc.Text(); line != "" && !strings.HasPrefix(line, ":") {
			s.t.Fatalf("stream goes on after its end: %q", line)
		}
	}
	if err := s.sc.Err(); err != nil {
		s.t.Fatalf("stream did not end cleanly: %v", err)
	}
}

func decodeBuild(t *testing.T, ev sse) *store.Build {
	t.Helper()
	var b store.Build
	if err := json.Unmarshal([]byte(ev.data), &b); err != nil {
		t.Fatalf("%s event %q: %v", ev.event, ev.data, err)
	}
	return &b
}

func wantLines(t *testing.T, got []api.StreamLine, seqs ...int64) {
	t.Helper()
	if len(got) != len(seqs) {
		t.Fatalf("lines %s, want seqs %v", dump(got), seqs)
	}
	for i, l := range got {
		if l.Job != "test" || l.Seq != seqs[i] || l.Text != fmt.Sprintf("line %d", seqs[i]) || l.Attempt != 1 {
			t.Errorf("line %d: %s, want seq %d", i, dump(l), seqs[i])
		}
	}
}

// TestLogStream: the live log of a build while an agent reports it: the
// build's status, each line as it comes, in order, and the end. A stream
// opened later replays the stored lines first.
func TestLogStream(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()

	live := e.stream(b.ID)
	first := live.next()
	if first.event != "status" {
		t.Fatalf("first event %+v, want status", first)
	}
	if st := decodeBuild(t, first); st.ID != b.ID || st.Status != store.StatusRunning || len(st.Jobs) != 1 {
		t.Errorf("status %s", dump(st))
	}

	e.sendLogs(a.JobID, a.Attempt, 1, 2, 3).want(t, http.StatusNoContent, nil)
	wantLines(t, live.lines(3), 1, 2, 3)
	e.sendLogs(a.JobID, a.Attempt, 4).want(t, http.StatusNoContent, nil)
	e.sendLogs(a.JobID, a.Attempt, 3, 4).want(t, http.StatusNoContent, nil) // sent again: not streamed again
	e.sendLogs(a.JobID, a.Attempt, 5, 6).want(t, http.StatusNoContent, nil)
	wantLines(t, live.lines(3), 4, 5, 6)

	zero := 0
	e.agentAPI(fmt.Sprintf("/jobs/%d/steps", a.JobID), map[string]any{"attempt": 1, "index": 0, "status": "success", "exit_code": zero}).want(t, http.StatusNoContent, nil)
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	skipped, end := live.until("end")
	for _, ev := range skipped {
		if ev.event != "status" {
			t.Errorf("event %+v before the end", ev)
		}
	}
	if st := decodeBuild(t, end); st.Status != store.StatusSuccess || st.Jobs[0].Steps[0].Status != store.StatusSuccess {
		t.Errorf("end %s", dump(st))
	}
	live.wantEOF()

	// Opened after the build finished: everything stored, then the status and the end.
	replay := e.stream(b.ID)
	wantLines(t, replay.lines(6), 1, 2, 3, 4, 5, 6)
	if ev := replay.next(); ev.event != "status" {
		t.Errorf("after the lines: %+v, want status", ev)
	}
	if ev := replay.next(); ev.event != "end" || decodeBuild(t, ev).Status != store.StatusSuccess {
		t.Errorf("last: %+v, want end", ev)
	}
	replay.wantEOF()
}

// TestLogsOfAttempts: the stored log is the latest attempt's unless another
// is asked for; a retried job's new attempt starts a log of its own.
func TestLogsOfAttempts(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	e.sendLogs(a.JobID, 1, 1, 2).want(t, http.StatusNoContent, nil)
	e.agentAPI(fmt.Sprintf("/jobs/%d/finish", a.JobID), map[string]any{"attempt": 1, "status": "error", "error": "engine down"}).want(t, http.StatusNoContent, nil)
	if j := e.build(b.ID).Jobs[0]; j.Status != store.StatusQueued || j.Error != "attempt 1: engine down (retrying)" {
		t.Fatalf("job after an infrastructure error: %s", dump(j))
	}
	a2 := e.mustClaim("a1")
	if a2.Attempt != 2 {
		t.Fatalf("attempt %d", a2.Attempt)
	}
	e.sendLogs(a2.JobID, 2, 1).want(t, http.StatusNoContent, nil)

	check := func(query string, attempt int, want []int64) {
		t.Helper()
		var l []api.JobLog
		e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs%s", b.ID, query), nil).want(t, http.StatusOK, &l)
		if len(l) != 1 || l[0].Attempt != attempt || !slices.Equal(seqs(l[0]), want) {
			t.Errorf("logs%s: %s", query, dump(l))
		}
	}
	check("", 2, []int64{1})
	check("?attempt=1", 1, []int64{1, 2})
	check("?attempt=2", 2, []int64{1})
	check("?attempt=9", 9, []int64{})
	for _, bad := range []string{"0", "-1", "x"} {
		e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?attempt=%s", b.ID, bad), nil).wantError(t, http.StatusBadRequest, "invalid", "attempt: want a positive integer")
	}
	t.Run("trailing garbage", func(t *testing.T) {
		e := e.sub(t)
		for _, bad := range []string{"1abc", "1.5", "1 2"} {
			e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?attempt=%s", b.ID, strings.ReplaceAll(bad, " ", "+")), nil).wantError(t, http.StatusBadRequest, "invalid", "attempt: want a positive integer")
		}
	})
}
