package pipeline

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one located problem in a pipeline file.
//
// Line and Col are 1-based; Col counts characters, not bytes, as editors do.
// Field is the dotted path of the offending value with [i] for (0-based)
// sequence indexes, e.g. "jobs.test.steps[1].run"; it is empty for a problem
// of the document as a whole (a syntax error, an empty file).
type Error struct {
	File      string
	Line, Col int
	Field     string
	Msg       string
}

// Error renders "FILE:LINE:COL: FIELD: MESSAGE", or "FILE:LINE:COL: MESSAGE"
// when Field is empty, the form editors and CI logs turn into links.
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Col, e.Field, e.Msg)
}

// Errors is every problem found in one file, sorted by line and column.
// Parse returns it (as error) rather than stopping at the first problem, so a
// user fixes a file in one round trip.
type Errors []*Error

// Error renders one problem a line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find an individual *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// normalize sorts the problems by position and drops repeats: a value
// reached through several aliases (say one env mapping shared by ten jobs)
// is reported once, at its first path. Two problems at one position that
// name different fields (a job missing both image and steps) both stay.
func (es Errors) normalize() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Col < es[j].Col
	})
	type key struct {
		line, col int
		leaf, msg string
	}
	seen := make(map[key]bool, len(es))
	out := es[:0]
	for _, e := range es {
		k := key{e.Line, e.Col, leafField(e.Field), e.Msg}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, e)
	}
	return out
}

// leafField is the last element of a field path without its index:
// "jobs.a.steps[2].run" → "run", "jobs.a.steps[2]" → "steps".
func leafField(field string) string {
	field = field[strings.LastIndexByte(field, '.')+1:]
	if i := strings.IndexByte(field, '['); i >= 0 {
		field = field[:i]
	}
	return field
}
