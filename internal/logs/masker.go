package logs

import (
	"bytes"
	"io"
	"sort"
	"strings"
)

// MinSecretLen is the shortest secret the Masker replaces. Masking a
// one-letter value ("a", "1") would destroy the log and protect nothing.
const MinSecretLen = 4

// mask replaces every secret in the output.
const mask = "***"

// keepCap is the largest scratch buffer a Masker keeps between writes.
const keepCap = 64 << 10

// Masker is a streaming writer that replaces secrets with "***".
//
// The output equals the one-shot replacement of everything written, scanning
// left to right and taking, at each position, the longest secret that
// starts there (so matches do not overlap; the earliest wins). To get that
// right across Write calls, the Masker holds back only what it cannot decide
// on yet: the longest tail of its input that is a proper prefix of some
// secret, and so may still turn out to be one. Nothing else is delayed: a
// log without secrets passes through as written, and what is held back is
// always shorter than the longest secret.
//
// A Masker is for one goroutine at a time. After the underlying writer
// fails, every call returns that error.
type Masker struct {
	w       io.Writer
	byFirst [256][][]byte // secrets by first byte, longest first
	maxLen  int
	held    []byte // undecided tail of the input
	out     []byte // scratch output buffer, reused
	err     error
}

// NewMasker returns a writer that replaces every occurrence of any of
// secrets with "***" before writing to w, including a secret split across
// several Write calls. Secrets shorter than MinSecretLen are ignored, and
// so are duplicates. A multi-line secret is masked whole, and each of its
// lines (without "\r") on its own too, so a line that reaches the log
// apart from the others (through another stream, or re-indented) is
// caught. Call Flush at the end of the stream (the end of a step) to write
// out what is held back.
func NewMasker(w io.Writer, secrets []string) *Masker {
	m := &Masker{w: w}
	seen := make(map[string]bool, len(secrets))
	for _, s := range expandSecrets(secrets) {
		if len(s) < MinSecretLen || seen[s] {
			continue
		}
		seen[s] = true
		m.byFirst[s[0]] = append(m.byFirst[s[0]], []byte(s))
		m.maxLen = max(m.maxLen, len(s))
	}
	for i := range m.byFirst {
		c := m.byFirst[i]
		sort.SliceStable(c, func(a, b int) bool { return len(c[a]) > len(c[b]) })
	}
	return m
}

// expandSecrets returns secrets and, for each multi-line one, each of its
// lines (split at "\n" and "\r"), as it is and trimmed of spaces.
func expandSecrets(secrets []string) []string {
	var all []string
	for _, s := range secrets {
		all = append(all, s)
		if strings.ContainsAny(s, "\r\n") {
			for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
				all = append(all, l, strings.TrimSpace(l))
			}
		}
	}
	return all
}

// Write masks p and writes what can be decided to the underlying writer.
// It returns len(p) unless the underlying writer fails.
func (m *Masker) Write(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if m.maxLen == 0 {
		return m.write(p, len(p))
	}
	buf := p
	if len(m.held) > 0 {
		m.held = append(m.held, p...)
		buf = m.held
	}
	n := m.scan(buf, false)
	if err := m.flushOut(); err != nil {
		return 0, err
	}
	// Keep the undecided tail. copy handles the overlap when buf is m.held.
	// The tail is shorter than the longest secret; a buffer grown by a
	// large write is not kept.
	rest := buf[n:]
	if cap(m.held) < len(rest) || cap(m.held) > keepCap {
		m.held = make([]byte, 0, m.maxLen)
	}
	m.held = m.held[:copy(m.held[:cap(m.held)], rest)]
	return len(p), nil
}

// Flush writes out what is held back, masked as if the stream ended here.
func (m *Masker) Flush() error {
	if m.err != nil {
		return m.err
	}
	if len(m.held) == 0 {
		return nil
	}
	m.scan(m.held, true)
	m.held = m.held[:0]
	return m.flushOut()
}

// scan appends the masked form of buf to m.out as far as it can be decided
// and returns how many bytes of buf it consumed. With final set, all of buf
// is decided.
func (m *Masker) scan(buf []byte, final bool) int {
	i, plain := 0, 0 // plain: start of the run of bytes copied as they are
	for i < len(buf) {
		cands := m.byFirst[buf[i]]
		if len(cands) == 0 {
			i++
			continue
		}
		rest := buf[i:]
		if !final && len(rest) < m.maxLen && undecided(cands, rest) {
			break
		}
		if n := longestMatch(cands, rest); n > 0 {
			m.out = append(m.out, buf[plain:i]...)
			m.out = append(m.out, mask...)
			i += n
			plain = i
			continue
		}
		i++
	}
	m.out = append(m.out, buf[plain:i]...)
	return i
}

// undecided reports whether rest is a proper prefix of a secret, so more
// input could still change what happens at its start.
func undecided(cands [][]byte, rest []byte) bool {
	for _, s := range cands {
		if len(s) > len(rest) && bytes.HasPrefix(s, rest) {
			return true
		}
	}
	return false
}

// longestMatch returns the length of the longest of cands (sorted longest
// first) that rest starts with, or 0.
func longestMatch(cands [][]byte, rest []byte) int {
	for _, s := range cands {
		if bytes.HasPrefix(rest, s) {
			return len(s)
		}
	}
	return 0
}

func (m *Masker) flushOut() error {
	if len(m.out) == 0 {
		return nil
	}
	_, err := m.write(m.out, 0)
	m.out = m.out[:0]
	if cap(m.out) > keepCap {
		m.out = nil
	}
	return err
}

// write writes p to the underlying writer and returns n on success.
func (m *Masker) write(p []byte, n int) (int, error) {
	if len(p) == 0 {
		return n, nil
	}
	if _, err := m.w.Write(p); err != nil {
		m.err = err
		return 0, err
	}
	return n, nil
}
