package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// JobLog is one job's stored log in GET /builds/{id}/logs.
type JobLog struct {
	JobID   int64           `json:"job_id"`
	Name    string          `json:"name"`
	Status  store.Status    `json:"status"`
	Attempt int             `json:"attempt"`
	Lines   []store.LogLine `json:"lines"`
}

// buildLogs returns the stored log of every job of a build (latest attempt,
// or ?attempt=N). Lines carry their seq: a jump in seq is a gap.
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
	out := []JobLog{}
	for _, j := range b.Jobs {
		a := attempt
		if a == 0 {
			a = j.Attempt
		}
		lines, err := s.store.Logs(r.Context(), j.ID, a, 0, 0)
		if err != nil {
			s.storeError(w, err)
			return
		}
		if lines == nil {
			lines = []store.LogLine{}
		}
		out = append(out, JobLog{JobID: j.ID, Name: j.Name, Status: j.Status, Attempt: a, Lines: lines})
	}
	writeJSON(w, http.StatusOK, out)
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
	if _, err := s.store.Build(r.Context(), id); err != nil {
		s.storeError(w, err)
		return
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
			c := cursors[j.ID]
			if c.attempt != j.Attempt { // a retry starts a new log
				c = cursor{attempt: j.Attempt}
			}
			for {
				lines, err := s.store.Logs(r.Context(), j.ID, c.attempt, c.seq, 1000)
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
		if st, _ := json.Marshal(b); string(st) != lastStatus {
			lastStatus = string(st)
			writeEvent(w, "status", b)
		}
		if b.Status.Terminal() {
			writeEvent(w, "end", b)
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
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.ch[buildID]; ok {
		close(c)
		delete(w.ch, buildID)
	}
}
