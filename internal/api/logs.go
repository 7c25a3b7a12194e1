package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/kilnci/kiln/internal/store"
)

// JobLog is one job's stored log in GET /builds/{id}/logs: one page of it.
type JobLog struct {
	JobID   int64           `json:"job_id"`
	Name    string          `json:"name"`
	Status  store.Status    `json:"status"`
	Attempt int             `json:"attempt"`
	Lines   []store.LogLine `json:"lines"`
	// Truncated: the job's log goes on past these lines; ask for the rest
	// with ?job=JobID&after=Next.
	Truncated bool  `json:"truncated"`
	Next      int64 `json:"next,omitempty"`
}

// Log paging: lines per job in one answer, by default and at most.
const (
	DefaultLogPage = 10000
	MaxLogPage     = 10000
)

// buildLogs returns the stored log of every job of a build (latest attempt,
// or ?attempt=N), a page per job: ?after=SEQ (lines with a greater seq),
// ?limit=N (lines per job, at most MaxLogPage), ?job=ID (that job only).
// A job whose log goes on is marked truncated, with the cursor to pass as
// after. Lines carry their seq: a jump in seq is a gap.
func (s *Server) buildLogs(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	attempt := 0
	if v := r.URL.Query().Get("attempt"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "invalid", "attempt: want a positive integer")
			return
		}
		attempt = n
	}
	q := r.URL.Query()
	var after, jobID int64
	limit := DefaultLogPage
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "invalid", "after: want a log line's seq (a non-negative integer)")
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxLogPage {
			writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("limit: want an integer from 1 to %d", MaxLogPage))
			return
		}
		limit = n
	}
	if v := q.Get("job"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "invalid", "job: want a job id")
			return
		}
		jobID = n
	}
	if q.Get("format") == "text" {
		if jobID == 0 {
			writeError(w, http.StatusBadRequest, "invalid", "format=text: pass job too (one job's log at a time)")
			return
		}
		s.rawLog(w, r, b, jobID, attempt)
		return
	}
	if after > 0 && jobID == 0 && len(b.Jobs) > 1 {
		writeError(w, http.StatusBadRequest, "invalid", "after: seqs are per job: pass job too")
		return
	}
	out := []JobLog{}
	for _, j := range b.Jobs {
		if jobID != 0 && j.ID != jobID {
			continue
		}
		a := attempt
		if a == 0 {
			a = j.Attempt
		}
		page, err := s.logPage(r.Context(), b, j.ID, a, after, limit)
		if err != nil {
			s.storeError(w, err)
			return
		}
		page.JobID, page.Name, page.Status = j.ID, j.Name, j.Status
		out = append(out, page)
	}
	if jobID != 0 && len(out) == 0 {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("job %d is not a job of build %d", jobID, id))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// rawLog writes a job attempt's whole log as plain text (the latest
// attempt when attempt is 0), a download: the lines as stored (masked),
// their ANSI colours kept.
func (s *Server) rawLog(w http.ResponseWriter, r *http.Request, b *store.Build, jobID int64, attempt int) {
	var job *store.Job
	for _, j := range b.Jobs {
		if j.ID == jobID {
			job = j
		}
	}
	if job == nil {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("job %d is not a job of build %d", jobID, b.ID))
		return
	}
	if attempt == 0 {
		attempt = job.Attempt
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%d-%s.log"`, safeFileName(b.Project), b.Number, safeFileName(job.Name)))
	bw := bufio.NewWriterSize(w, 64<<10)
	defer bw.Flush()
	var after int64
	for {
		lines, err := s.logs(r.Context(), b, jobID, attempt, after, MaxLogPage)
		if err != nil {
			s.log.Warn("raw log", "build", b.ID, "job", jobID, "err", err)
			return
		}
		for _, l := range lines {
			bw.WriteString(l.Text)
			bw.WriteByte('\n')
			after = l.Seq
		}
		if len(lines) < MaxLogPage {
			return
		}
	}
}

// safeFileName keeps letters, digits, '-', '_' and '.' of name (others
// become '_'), for a download's file name.
func safeFileName(name string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.') {
			return r
		}
		return '_'
	}, name)
}

// logPage reads up to limit lines of a job attempt after a seq, and
// whether more follow.
func (s *Server) logPage(ctx context.Context, b *store.Build, jobID int64, attempt int, after int64, limit int) (JobLog, error) {
	lines, err := s.logs(ctx, b, jobID, attempt, after, limit)
	if err != nil {
		return JobLog{}, err
	}
	page := JobLog{Attempt: attempt, Lines: lines}
	if page.Lines == nil {
		page.Lines = []store.LogLine{}
	}
	if len(lines) == limit {
		last := lines[len(lines)-1].Seq
		more, err := s.logs(ctx, b, jobID, attempt, last, 1)
		if err != nil {
			return JobLog{}, err
		}
		if len(more) > 0 {
			page.Truncated, page.Next = true, last
		}
	}
	return page, nil
}

// logs reads a job attempt's lines after a seq, up to limit, from the
// store or, for a build whose logs are archived, from the log archive.
func (s *Server) logs(ctx context.Context, b *store.Build, jobID int64, attempt int, after int64, limit int) ([]store.LogLine, error) {
	if b.LogsArchivedAt == nil {
		lines, err := s.store.Logs(ctx, jobID, attempt, after, limit)
		if err != nil || len(lines) > 0 || s.cfg.LogArchive == nil || b.FinishedAt == nil {
			return lines, err
		}
		// Archived since b was read? Its lines are gone from the store.
		if b, err = s.store.Build(ctx, b.ID); err != nil || b.LogsArchivedAt == nil {
			return lines, err
		}
	}
	if b.LogsPrunedAt != nil { // log retention deleted the archive too
		return nil, nil
	}
	if s.cfg.LogArchive == nil {
		return nil, fmt.Errorf("build %d: its logs are archived but no log archive is configured", b.ID)
	}
	return s.cfg.LogArchive.Lines(ctx, b.ID, jobID, attempt, after, limit)
}

// StreamLine is the data of a "line" event of the log stream.
type StreamLine struct {
	Job string `json:"job"`
	store.LogLine
}

// streamBuildLogs serves a build's log as server-sent events: every stored
// line first, then new lines as agents send them, then an "end" event when
// the build is finished. Events: "line" (StreamLine), "status" (the build
// with jobs and steps, whenever it changes), "end" (the final build).
//
// The store is the source of truth: a wake-up from the watcher only means
// "look again", so a slow client or a lost wake-up can delay lines but
// never lose or duplicate them.
func (s *Server) streamBuildLogs(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b0, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	// ?job=ID keeps one job's lines; with it, ?attempt=N&after=SEQ start
	// after lines the client has (from GET …/logs), so a page that read
	// the stored log first does not read it twice.
	q := r.URL.Query()
	var only int64
	var from struct {
		attempt int
		seq     int64
	}
	if v := q.Get("job"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || !slices.ContainsFunc(b0.Jobs, func(j *store.Job) bool { return j.ID == n }) {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("job %s is not a job of build %d", clipLog(v, 32), id))
			return
		}
		only = n
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || only == 0 {
			writeError(w, http.StatusBadRequest, "invalid", "after: want a log line's seq, with job")
			return
		}
		from.seq = n
	}
	if v := q.Get("attempt"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || only == 0 {
			writeError(w, http.StatusBadRequest, "invalid", "attempt: want an attempt number, with job")
			return
		}
		from.attempt = n
	}
	if from.seq > 0 && from.attempt == 0 { // after, of the job's attempt now
		for _, j := range b0.Jobs {
			if j.ID == only {
				from.attempt = j.Attempt
			}
		}
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	type cursor struct {
		attempt int
		seq     int64
	}
	cursors := map[int64]cursor{}
	if only != 0 && from.attempt > 0 {
		cursors[only] = cursor{attempt: from.attempt, seq: from.seq}
	}
	lastStatus := ""
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		wake := s.watch.wait(id)
		b, err := s.store.Build(r.Context(), id)
		if err != nil {
			return
		}
		for _, j := range b.Jobs {
			if only != 0 && j.ID != only {
				continue
			}
			c := cursors[j.ID]
			if c.attempt != j.Attempt { // a retry starts a new log
				c = cursor{attempt: j.Attempt}
			}
			if b.LogsArchivedAt != nil && b.LogsPrunedAt == nil && s.cfg.LogArchive != nil {
				// Finished and archived: the blob read once per job, not
				// once per page.
				err := s.cfg.LogArchive.Each(r.Context(), b.ID, j.ID, c.attempt, c.seq, func(l store.LogLine) error {
					writeEvent(w, "line", StreamLine{Job: j.Name, LogLine: l})
					c.seq = l.Seq
					return nil
				})
				if err != nil {
					s.log.Warn("log stream: archived logs", "build", b.ID, "err", err)
					return
				}
				cursors[j.ID] = c
				continue
			}
			for {
				lines, err := s.logs(r.Context(), b, j.ID, c.attempt, c.seq, 1000)
				if err != nil {
					return
				}
				for _, l := range lines {
					writeEvent(w, "line", StreamLine{Job: j.Name, LogLine: l})
					c.seq = l.Seq
				}
				if len(lines) < 1000 {
					break
				}
			}
			cursors[j.ID] = c
		}
		v := buildView(b)
		if st, _ := json.Marshal(v); string(st) != lastStatus {
			lastStatus = string(st)
			writeEvent(w, "status", v)
		}
		if b.Status.Terminal() {
			writeEvent(w, "end", v)
			flusher.Flush()
			return
		}
		flusher.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-wake:
		case <-poll.C:
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		}
	}
}

func writeEvent(w http.ResponseWriter, event string, v any) {
	data, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
}

// watcher wakes log streams of a build when something of it changed.
type watcher struct {
	mu sync.Mutex
	ch map[int64]chan struct{}
	// publish tells the other servers (Server.PublishBuilds); nil: none.
	publish func(buildID int64)
}

func newWatcher() *watcher { return &watcher{ch: map[int64]chan struct{}{}} }

func (w *watcher) wait(buildID int64) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.ch[buildID]
	if !ok {
		c = make(chan struct{})
		w.ch[buildID] = c
	}
	return c
}

func (w *watcher) notify(buildID int64) {
	w.notifyHere(buildID)
	if w.publish != nil {
		w.publish(buildID)
	}
}

// notifyHere wakes this server's waiters on the build only.
func (w *watcher) notifyHere(buildID int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.ch[buildID]; ok {
		close(c)
		delete(w.ch, buildID)
	}
}

// PublishBuilds makes every change of a build this server sees a hint to
// the other servers too (their log streams wake): f must not block. Set
// before serving.
func (s *Server) PublishBuilds(f func(buildID int64)) { s.watch.publish = f }

// BuildChanged wakes this server's log streams of the build (a hint from
// another server).
func (s *Server) BuildChanged(buildID int64) { s.watch.notifyHere(buildID) }
