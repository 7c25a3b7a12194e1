package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
)

// allLogs reads a build's whole log through apiclient.BuildLogs, and how
// many pages it took.
func (e *env) allLogs(id int64) (lines []string, seqs []int64, pages int) {
	e.t.Helper()
	c := apiclient.Client{URL: e.url, Token: e.admin, HTTP: e.http}
	err := c.BuildLogs(context.Background(), id, 0, func(j api.JobLog) error {
		pages++
		for _, l := range j.Lines {
			lines = append(lines, l.Text)
			seqs = append(seqs, l.Seq)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return lines, seqs, pages
}

// A batch of lines whose JSON is far over the server's 8 MiB request limit
// (lines of characters that JSON escapes six times over) arrives whole,
// through the agent's own sender and the real handler: the Batcher cuts
// batches by encoded bytes.
func TestLogBatchOverTheRequestLimitArrivesWhole(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	b2 := logs.NewBatcher(agent.LogSender(e.url, e.agent, e.http, a.JobID, a.Attempt), logs.Options{MaxBatchBytes: logs.MaxBatchBytes(protocol.MaxLogBatchBytes)})
	const n = 400
	var want []string
	for i := range n {
		text := fmt.Sprintf("%d %s", i, strings.Repeat(`<"&`, 10<<10)) // 30 KiB, ~140 KiB encoded
		want = append(want, text)
		b2.Add(0, text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := b2.DroppedLines(); d != (logs.Dropped{}) {
		t.Fatalf("dropped %+v", d)
	}
	got, seqs, _ := e.allLogs(b.ID)
	if len(got) != n {
		t.Fatalf("%d lines stored, want %d", len(got), n)
	}
	for i := range got {
		if got[i] != want[i] || seqs[i] != int64(i+1) {
			t.Fatalf("line %d (seq %d) differs", i, seqs[i])
		}
	}
}

// A request over the limit is answered 413 too_large (the agent's sender
// then splits the batch), not a 400 that reads like bad input.
func TestLogBatchTooLargeIs413(t *testing.T) {
	e := newEnv(t)
	_, a := e.runningJob()
	batch := protocol.LogBatch{Attempt: a.Attempt}
	for i := range 200 {
		batch.Lines = append(batch.Lines, logs.Line{Seq: int64(i + 1), Time: time.Now(), Text: strings.Repeat("x", 64<<10)})
	}
	e.agentAPI(fmt.Sprintf("/jobs/%d/logs", a.JobID), batch).wantError(t, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge)
}

// A job's log longer than a page: each answer says it is truncated and
// where to go on; apiclient.BuildLogs (what `kiln logs` prints) returns
// every line.
func TestLogPaging(t *testing.T) {
	e := newEnv(t)
	b, a := e.runningJob()
	const n = 2*api.MaxLogPage + 7
	for first := int64(1); first <= n; first += 5000 {
		var s []int64
		for q := first; q < first+5000 && q <= n; q++ {
			s = append(s, q)
		}
		e.sendLogs(a.JobID, a.Attempt, s...).want(t, http.StatusNoContent, nil)
	}

	var page []api.JobLog
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs", b.ID), nil).want(t, http.StatusOK, &page)
	if len(page) != 1 || len(page[0].Lines) != api.MaxLogPage || !page[0].Truncated || page[0].Next != api.MaxLogPage {
		t.Fatalf("first page: %d jobs, %d lines, truncated %v, next %d", len(page), len(page[0].Lines), page[0].Truncated, page[0].Next)
	}
	page = nil
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?job=%d&after=%d&limit=5", b.ID, a.JobID, n-5), nil).want(t, http.StatusOK, &page)
	if len(page) != 1 || len(page[0].Lines) != 5 || page[0].Truncated || page[0].Next != 0 || page[0].Lines[0].Seq != n-4 {
		t.Fatalf("last page (exactly the limit, nothing after): %s", dump(page))
	}
	page = nil
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?job=%d&after=%d&limit=5", b.ID, a.JobID, n-6), nil).want(t, http.StatusOK, &page)
	if !page[0].Truncated || page[0].Next != n-1 {
		t.Fatalf("one line after the page: %s", dump(page))
	}

	got, seqs, pages := e.allLogs(b.ID)
	if len(got) != n || pages != 3 {
		t.Fatalf("BuildLogs: %d lines in %d pages, want %d in 3", len(got), pages, n)
	}
	for i, s := range seqs {
		if s != int64(i+1) || got[i] != fmt.Sprintf("line %d", s) {
			t.Fatalf("line %d: seq %d %q", i, s, got[i])
		}
	}

	for _, bad := range []struct{ query, msg string }{
		{"limit=0", "limit: want an integer from 1 to 10000"},
		{"limit=10001", "limit: want an integer from 1 to 10000"},
		{"after=-1", "after: want a log line's seq"},
		{"after=x", "after: want a log line's seq"},
		{"job=0", "job: want a job id"},
	} {
		e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?%s", b.ID, bad.query), nil).wantError(t, http.StatusBadRequest, "invalid", bad.msg)
	}
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?job=%d", b.ID, a.JobID+1000), nil).wantError(t, http.StatusNotFound, "not_found")
}
