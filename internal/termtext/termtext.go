// Package termtext makes text from users and from builds safe to print on a
// terminal.
//
// A log line comes from a build's step: it may carry escape sequences that
// change the terminal's title, clear the screen, move the cursor, or
// rewrite what was printed before (a "\r" back to the line's start, over
// the CLI's own "[job]" prefix). Log keeps colours (SGR sequences) and
// neutralises everything else. Names (branches, commit messages, projects,
// steps) are never meant to hold control characters: Quote shows any in
// escaped form, so an RTL override or an escape sequence in a branch name
// is seen, not obeyed.
package termtext

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Log returns a log line fit for a terminal: SGR sequences (colours and
// text attributes: ESC [ digits and ';' or ':' then 'm') are kept, with a
// reset at the end of the line if any was kept, so colours do not bleed into
// the next line; every other escape sequence (CSI, OSC, DCS and the like,
// two-byte ESC sequences) is removed; a "\r" ends what a terminal would
// show of the text before it, so only the text after the last one (that is
// not empty) is kept; a tab stays; every other control character, C1
// controls, bidirectional and other invisible format characters and
// invalid UTF-8 are shown escaped (\x1b, \u202e).
func Log(s string) string {
	if i := strings.LastIndexByte(strings.TrimRight(s, "\r"), '\r'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimRight(s, "\r")
	if plain(s) {
		return s
	}
	var b strings.Builder
	sgr := false
	for i := 0; i < len(s); {
		c := s[i]
		if c == 0x1b {
			n, keep := escape(s[i:])
			if keep {
				b.WriteString(s[i : i+n])
				sgr = true
			}
			i += n
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x` + strconv.FormatUint(uint64(c), 16))
		case r == '\t' || !unsafeRune(r):
			b.WriteString(s[i : i+size])
		default:
			b.WriteString(escapeRune(r))
		}
		i += size
	}
	if sgr {
		b.WriteString("\x1b[0m")
	}
	return b.String()
}

// plain reports whether s has nothing Log changes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c >= 0x7f {
			return plainUTF8(s[i:])
		}
	}
	return true
}

func plainUTF8(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		}
		if r != '\t' && unsafeRune(r) {
			return false
		}
	}
	return true
}

// unsafeRune reports whether r must not reach a terminal as it is: a
// control character (C0, DEL, C1) or an invisible format character (Cf:
// bidirectional overrides and isolates, zero-width characters, …), or a
// line or paragraph separator.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}

func escapeRune(r rune) string {
	q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e'
	return q[1 : len(q)-1]
}

// escape measures the escape sequence at the start of s (s[0] is ESC) and
// reports whether it is an SGR sequence, to keep. An unterminated sequence
// runs to the end of s.
func escape(s string) (n int, keep bool) {
	if len(s) < 2 {
		return len(s), false
	}
	switch s[1] {
	case '[': // CSI: parameter bytes 0x30-0x3f, intermediates 0x20-0x2f, a final 0x40-0x7e
		i := 2
		params := true
		for i < len(s) {
			c := s[i]
			switch {
			case c >= 0x40 && c <= 0x7e:
				seq := s[2:i]
				return i + 1, c == 'm' && params && sgrParams(seq)
			case c >= 0x20 && c <= 0x3f:
				i++
			default:
				return i, false // not a CSI byte: the sequence ends, unfinished
			}
		}
		return i, false
	case ']', 'P', 'X', '^', '_': // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1, false
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2, false
			}
		}
		return len(s), false
	}
	// ESC, intermediates, a final byte (ESC c resets the terminal, ESC ( B …).
	i := 1
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i, false
}

// sgrParams reports whether p is a list of SGR parameters: digits, ';'
// and ':' only.
func sgrParams(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; (c < '0' || c > '9') && c != ';' && c != ':' {
			return false
		}
	}
	return true
}

// Quote returns s as it is if every character in it is printable (letters,
// marks, numbers, punctuation, symbols, spaces); otherwise s quoted with Go
// escapes (strconv.QuoteToGraphic), so that control, bidirectional and
// other invisible characters are seen, not obeyed, and the quoting shows
// that the name was escaped.
func Quote(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsGraphic(r) {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

// Visible returns what of a log line a reader sees: Log's result with
// SGR sequences removed. The CLI uses it to tell a step's line that
// looks like one of Kiln's own.
func Visible(s string) string {
	s = Log(s)
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == 0x1b {
			n, _ := escape(s[i:])
			i += n
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// sgr matches the SGR sequences Log keeps.
var sgr = regexp.MustCompile("\x1b\\[[0-9;:]*m")

// Plain is Log without the colours: text for a page that is not a
// terminal (a forge's check run), with no escape sequence at all.
func Plain(s string) string {
	s = Log(s)
	if strings.IndexByte(s, 0x1b) < 0 {
		return s
	}
	return sgr.ReplaceAllString(s, "")
}
