package pipeline

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// yaml.v3 reports a syntax error only as text, "yaml: line N: PROBLEM" or
// "yaml: PROBLEM", with no column. This file turns that text into a located
// Error, and repairs what the text gets wrong:
//
//   - The parser (as opposed to the scanner) reports a 0-based line: it
//     prints its mark without the +1 the scanner's errors get. parserProblems
//     lists the parser's messages so their line can be shifted.
//   - A problem on the first line carries no line at all (yaml omits line 0).
//   - Reader errors (bad UTF-8, control characters) and an unknown alias
//     carry no position; it is found here from the bytes.
var yamlErrorText = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected key":              true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found duplicate %TAG directive":         true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

var readerProblems = map[string]bool{
	"invalid leading UTF-8 octet":        true,
	"invalid trailing UTF-8 octet":       true,
	"incomplete UTF-8 octet sequence":    true,
	"control characters are not allowed": true,
}

// syntaxError records the error yaml returned for data.
func (c *checker) syntaxError(err error, data []byte) {
	m := yamlErrorText.FindStringSubmatch(err.Error())
	if m == nil {
		c.errorAt(1, 1, "", "invalid YAML: "+err.Error())
		return
	}
	problem := m[2]
	line, col := 1, 1
	if m[1] != "" {
		line, _ = strconv.Atoi(m[1])
		if parserProblems[problem] {
			line++
		}
	}
	switch {
	case readerProblems[problem]:
		if off := firstBadChar(data); off >= 0 {
			line, col = position(data, off)
		}
		if problem == "control characters are not allowed" {
			problem = "control characters are not allowed (only tab, CR and LF are)"
		}
	case strings.HasPrefix(problem, "unknown anchor '"):
		name := strings.TrimSuffix(strings.TrimPrefix(problem, "unknown anchor '"), "' referenced")
		if off := findAlias(data, name); off >= 0 {
			line, col = position(data, off)
		}
		problem = "alias *" + name + " refers to no anchor &" + name + " defined before it"
	}
	line = min(line, bytes.Count(data, []byte("\n"))+1)
	if tabIndented(data, line) {
		problem += " (a tab cannot indent YAML; use spaces)"
	}
	c.errorAt(line, col, "", "invalid YAML: "+problem)
}

// position converts a byte offset into a 1-based line and a 1-based column
// counted in characters, breaking lines at LF, CRLF and lone CR as YAML does.
func position(data []byte, off int) (line, col int) {
	line, start := 1, 0
	for i := 0; i < off; i++ {
		switch data[i] {
		case '\n':
			line, start = line+1, i+1
		case '\r':
			if i+1 >= len(data) || data[i+1] != '\n' {
				line, start = line+1, i+1
			}
		}
	}
	return line, utf8.RuneCount(data[start:off]) + 1
}

// firstBadChar is the offset of the first byte YAML refuses to read: an
// invalid UTF-8 sequence or a character outside YAML's printable set.
func firstBadChar(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 || !yamlPrintable(r) {
			return i
		}
		i += size
	}
	return -1
}

// yamlPrintable is YAML 1.1's c-printable, as yaml.v3's reader checks it.
func yamlPrintable(r rune) bool {
	switch {
	case r == '\t', r == '\n', r == '\r', r == 0x85:
		return true
	case r >= 0x20 && r <= 0x7E, r >= 0xA0 && r <= 0xD7FF,
		r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

// findAlias is the offset of the first "*name" in data that is a whole
// alias (not the prefix of a longer name), or -1.
func findAlias(data []byte, name string) int {
	needle := []byte("*" + name)
	for base := 0; ; {
		i := bytes.Index(data[base:], needle)
		if i < 0 {
			return -1
		}
		end := base + i + len(needle)
		if end == len(data) || !isAnchorChar(data[end]) {
			return base + i
		}
		base = end
	}
}

func isAnchorChar(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_' || b == '-'
}

// tabIndented reports whether the 1-based line starts with whitespace that
// holds a tab, the most common YAML mistake from an editor's settings.
func tabIndented(data []byte, line int) bool {
	lines := bytes.SplitN(data, []byte("\n"), line+1)
	if line < 1 || line > len(lines) {
		return false
	}
	l := lines[line-1]
	indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
	return bytes.IndexByte(indent, '\t') >= 0
}
