package cachekey

import "strconv"

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokString
	tokLParen
	tokRParen
	tokComma
	tokError // text is the message
)

type token struct {
	kind tokKind
	text string // an identifier, a string's value, or an error message
	pos  int    // byte offset in the template
	raw  string // the source text of the token
}

func (t token) describe() string {
	switch t.kind {
	case tokIdent:
		return "name " + strconv.Quote(t.text)
	case tokString:
		return "string " + t.raw
	case tokEOF:
		return "end of expression"
	}
	return strconv.Quote(t.raw)
}

// lexer reads the tokens of one expression, s[pos:end].
type lexer struct {
	s        string
	pos, end int
	peeked   *token
}

// findClose returns the offset of the "}}" that closes the expression,
// skipping string literals (which may hold "}}"). If there is none, it
// returns -1 and the offset of an unterminated string, or -1.
func (l *lexer) findClose() (end, badQuote int) {
	for i := l.pos; i < len(l.s); i++ {
		switch {
		case l.s[i] == '\'':
			j, ok := stringEnd(l.s, i)
			if !ok {
				return -1, i
			}
			i = j - 1
		case l.s[i] == '}' && i+1 < len(l.s) && l.s[i+1] == '}':
			return i, -1
		}
	}
	return -1, -1
}

// stringEnd returns the offset just past the string literal starting with
// the quote at s[i]; two quotes in a row inside it stand for one.
func stringEnd(s string, i int) (int, bool) {
	for j := i + 1; j < len(s); j++ {
		if s[j] != '\'' {
			continue
		}
		if j+1 < len(s) && s[j+1] == '\'' {
			j++
			continue
		}
		return j + 1, true
	}
	return 0, false
}

func (l *lexer) peek() token {
	if l.peeked == nil {
		t := l.scan()
		l.peeked = &t
	}
	return *l.peeked
}

func (l *lexer) next() token {
	t := l.peek()
	l.peeked = nil
	return t
}

func (l *lexer) scan() token {
	for l.pos < l.end && isSpace(l.s[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start >= l.end {
		return token{kind: tokEOF, pos: l.end}
	}
	tok := func(k tokKind, n int) token {
		l.pos += n
		return token{kind: k, text: l.s[start:l.pos], pos: start, raw: l.s[start:l.pos]}
	}
	switch c := l.s[start]; {
	case c == '(':
		return tok(tokLParen, 1)
	case c == ')':
		return tok(tokRParen, 1)
	case c == ',':
		return tok(tokComma, 1)
	case c == '\'':
		j, ok := stringEnd(l.s[:l.end], start)
		if !ok {
			l.pos = l.end
			return token{kind: tokError, text: "unterminated string", pos: start, raw: l.s[start:l.end]}
		}
		l.pos = j
		raw := l.s[start:j]
		return token{kind: tokString, text: unquote(raw), pos: start, raw: raw}
	case isIdentStart(c):
		n := 1
		for start+n < l.end {
			c := l.s[start+n]
			if isIdentStart(c) || c >= '0' && c <= '9' || c == '-' {
				n++
			} else if c == '.' && start+n+1 < l.end && isIdentStart(l.s[start+n+1]) {
				n += 2
			} else {
				break
			}
		}
		if start+n < l.end && l.s[start+n] >= 0x80 {
			l.pos = start + n + 1
			return token{kind: tokError, text: "unexpected non-ASCII character in a name", pos: start + n, raw: l.s[start : start+n+1]}
		}
		return tok(tokIdent, n)
	case c == '"':
		t := tok(tokError, 1)
		t.text = `strings are single-quoted ('…'), not double-quoted`
		return t
	default:
		t := tok(tokError, 1)
		t.text = "unexpected character " + strconv.QuoteRune(rune(c))
		if c >= 0x80 {
			t.text = "unexpected non-ASCII character"
		}
		return t
	}
}

// unquote turns a literal into its value, undoubling its quotes.
func unquote(raw string) string {
	b := make([]byte, 0, len(raw)-2)
	for i := 1; i < len(raw)-1; i++ {
		b = append(b, raw[i])
		if raw[i] == '\'' {
			i++ // the second quote of ''
		}
	}
	return string(b)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isIdentStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
