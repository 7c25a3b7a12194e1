// Package logs carries a job's output from the sandbox to the people
// watching it.
//
// On the agent a step's output goes through a Masker (secrets replaced by
// "***", also when split across writes), a LineWriter (bytes to lines) and a
// Batcher (numbered lines sent in batches, retried). On the server a Hub fans
// live lines out to subscribers; the durable store is separate, and a
// subscriber that falls behind re-reads from it.
package logs

import (
	"bytes"
	"time"
	"unicode/utf8"
)

// Line is one log line. Seq numbers are per job attempt, start at 1 and are
// consecutive; the server stores lines idempotently by (job, attempt, seq),
// so a retried batch is not duplicated and a gap is visible.
type Line struct {
	Seq  int64     `json:"seq"`
	Step int       `json:"step"` // 0-based step index; -1 for Kiln's own lines about the job (setup, cleanup)
	Time time.Time `json:"time"`
	Text string    `json:"text"` // without the trailing newline
}

// MaxLineBytes is the longest Line.Text a LineWriter emits; a longer line is
// cut into several.
const MaxLineBytes = 64 << 10

// LineWriter splits a byte stream into lines. A line ends at "\n"; a "\r"
// right before it is dropped. A line longer than MaxLineBytes is emitted in
// pieces of at most MaxLineBytes, cut before a UTF-8 character where one
// starts within the last 3 bytes of the piece. The lines emitted do not
// depend on how the input is split into Write calls.
//
// A LineWriter is for one goroutine at a time.
type LineWriter struct {
	emit    func(text string)
	partial []byte // the current line, without its end
}

// NewLineWriter returns a writer that calls emit for each line of its input.
func NewLineWriter(emit func(text string)) *LineWriter {
	return &LineWriter{emit: emit}
}

// Write emits every line that p completes. It always returns len(p), nil.
func (lw *LineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			lw.partial = append(lw.partial, p...)
			lw.cutLong()
			break
		}
		line := p[:i]
		if len(lw.partial) > 0 {
			lw.partial = append(lw.partial, line...)
			line = lw.partial
		}
		lw.emitLine(line)
		lw.partial = lw.partial[:0]
		p = p[i+1:]
	}
	if cap(lw.partial) > 2*MaxLineBytes && len(lw.partial) < MaxLineBytes {
		lw.partial = append([]byte(nil), lw.partial...)
	}
	return n, nil
}

// Flush emits the pending partial line, if any, as if it ended here.
func (lw *LineWriter) Flush() error {
	if len(lw.partial) > 0 {
		lw.emitLine(lw.partial)
		lw.partial = lw.partial[:0]
	}
	return nil
}

// emitLine emits a complete line (its "\n" already removed).
func (lw *LineWriter) emitLine(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	for len(line) > MaxLineBytes {
		n := cutAt(line)
		lw.emit(string(line[:n]))
		line = line[n:]
	}
	lw.emit(string(line))
}

// cutLong emits the leading pieces of the partial line that are certain to
// be cut whatever comes next: its text (without a final "\r") is already
// longer than MaxLineBytes.
func (lw *LineWriter) cutLong() {
	p := lw.partial
	for len(p) > MaxLineBytes+1 || len(p) == MaxLineBytes+1 && p[MaxLineBytes] != '\r' {
		n := cutAt(p)
		lw.emit(string(p[:n]))
		p = p[n:]
	}
	if len(p) < len(lw.partial) {
		lw.partial = lw.partial[:copy(lw.partial, p)]
	}
}

// cutAt returns where to cut a line longer than MaxLineBytes: at
// MaxLineBytes, or up to 3 bytes earlier so as not to split a UTF-8
// character.
func cutAt(line []byte) int {
	for n := MaxLineBytes; n > MaxLineBytes-utf8.UTFMax; n-- {
		if utf8.RuneStart(line[n]) {
			return n
		}
	}
	return MaxLineBytes
}

// Stream is one output stream's path to the log: a Masker, then a
// LineWriter. A step's stdout and stderr each get their own, so a secret
// or a line of one is never cut by the other's output.
type Stream struct {
	m  *Masker
	lw *LineWriter
}

// NewStream returns a writer that masks secrets in its input and calls
// emit for each line. Call Flush at the end of the stream.
func NewStream(secrets []string, emit func(text string)) *Stream {
	lw := NewLineWriter(emit)
	return &Stream{m: NewMasker(lw, secrets), lw: lw}
}

// Write masks p and emits the lines it completes.
func (s *Stream) Write(p []byte) (int, error) { return s.m.Write(p) }

// Flush emits what is held back, as if the stream ended here.
func (s *Stream) Flush() error {
	err := s.m.Flush()
	if ferr := s.lw.Flush(); err == nil {
		err = ferr
	}
	return err
}
