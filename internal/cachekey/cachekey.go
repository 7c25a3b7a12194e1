// Package cachekey expands the key templates of keyed caches in .kiln.yml:
//
//	key: "go-${{ hashFiles('go.sum', '**/go.mod') }}-${{ os }}-${{ arch }}"
//
// A template is text with ${{ … }} expressions. An expression is one of
//
//   - hashFiles('glob', …): a hash of the files under the workspace that the
//     globs match (hashfiles.go), or "" when none does, as on GitHub;
//   - branch (alias github.ref_name), os (alias runner.os) and arch (alias
//     runner.arch): the job's branch and the agent's OS and architecture,
//     exactly as the agent names them in Context;
//   - a string literal, 'text', in which a doubled single quote stands for
//     one quote character.
//
// As in GitHub Actions expressions, names are case-insensitive and strings
// are single-quoted. Anything else is an error (*Error) naming the
// expression and the byte offset of the problem in the template, so that the
// linter (Validate) and the agent (Expand) reject the same templates.
package cachekey

import (
	"fmt"
	"strings"
)

// Context is what templates can refer to.
type Context struct {
	// Workspace is the host directory of the checkout; hashFiles globs are
	// relative to it and never reach outside it.
	Workspace string
	// Branch, OS and Arch are substituted verbatim.
	Branch, OS, Arch string
}

// Error is a template error: a syntax error, an unknown name or function,
// a bad glob, or a failure reading the workspace.
type Error struct {
	Template string
	Offset   int    // byte offset of the problem in Template
	Expr     string // the whole ${{ … }} expression, or the rest of the template when it is unclosed
	Msg      string
	Err      error // the underlying I/O error, if any
}

func (e *Error) Error() string {
	return fmt.Sprintf("cache key %q: offset %d: %s: %s", e.Template, e.Offset, e.Expr, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Expand evaluates the ${{ … }} expressions of tmpl in c.
func Expand(tmpl string, c Context) (string, error) {
	exprs, err := parse(tmpl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	last := 0
	for _, x := range exprs {
		b.WriteString(tmpl[last:x.start])
		last = x.end
		v, err := x.eval(c)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	b.WriteString(tmpl[last:])
	return b.String(), nil
}

// Validate checks tmpl statically, for the pipeline linter: its syntax,
// that every name and function is known, and that hashFiles globs are
// well-formed, relative and free of "..". It reads no file.
func Validate(tmpl string) error {
	_, err := parse(tmpl)
	return err
}

// expr is one parsed ${{ … }} expression.
type expr struct {
	tmpl       string
	start, end int    // tmpl[start:end] is the whole ${{ … }}
	kind       string // "name", "string" or "hashFiles"
	name       string // canonical name: branch, os or arch
	value      string // a string literal's value
	globs      []glob // hashFiles arguments
}

func (x expr) errorf(offset int, err error, format string, args ...any) *Error {
	return &Error{Template: x.tmpl, Offset: offset, Expr: x.tmpl[x.start:x.end], Msg: fmt.Sprintf(format, args...), Err: err}
}

func (x expr) eval(c Context) (string, error) {
	switch x.kind {
	case "string":
		return x.value, nil
	case "hashFiles":
		return hashFiles(x, c.Workspace)
	}
	switch x.name {
	case "branch":
		return c.Branch, nil
	case "os":
		return c.OS, nil
	default: // arch
		return c.Arch, nil
	}
}

// names maps every accepted name, lower-cased, to its canonical form.
var names = map[string]string{
	"branch": "branch", "github.ref_name": "branch",
	"os": "os", "runner.os": "os",
	"arch": "arch", "runner.arch": "arch",
}

const (
	openDelim  = "${{"
	closeDelim = "}}"
)

// parse finds and parses every expression of tmpl.
func parse(tmpl string) ([]expr, error) {
	var out []expr
	for i := 0; ; {
		j := strings.Index(tmpl[i:], openDelim)
		if j < 0 {
			return out, nil
		}
		x, err := parseExpr(tmpl, i+j)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
		i = x.end
	}
}

// parseExpr parses the expression whose "${{" is at tmpl[start].
func parseExpr(tmpl string, start int) (expr, error) {
	x := expr{tmpl: tmpl, start: start, end: len(tmpl)}
	p := &lexer{s: tmpl, pos: start + len(openDelim)}
	// Find the end first (a "}}" outside a string), so that every later
	// error can quote the whole expression.
	end, badQuote := p.findClose()
	if badQuote >= 0 {
		return x, x.errorf(badQuote, nil, "unterminated string (a quote inside a string is written '')")
	}
	if end < 0 {
		return x, x.errorf(start, nil, "unclosed %s: want %s after the expression", openDelim, closeDelim)
	}
	x.end = end + len(closeDelim)
	p.end = end

	t := p.next()
	switch t.kind {
	case tokEOF:
		return x, x.errorf(t.pos, nil, "empty expression")
	case tokString:
		x.kind, x.value = "string", t.text
	case tokIdent:
		if p.peek().kind == tokLParen {
			if err := x.parseCall(t, p); err != nil {
				return x, err
			}
			break
		}
		canon, known := names[strings.ToLower(t.text)]
		if !known {
			return x, x.errorf(t.pos, nil, "unknown name %q: want branch, os, arch (or github.ref_name, runner.os, runner.arch), hashFiles('glob', …) or a 'string'", t.text)
		}
		x.kind, x.name = "name", canon
	case tokError:
		return x, x.errorf(t.pos, nil, "%s", t.text)
	default:
		return x, x.errorf(t.pos, nil, "unexpected %s at the start of the expression", t.describe())
	}
	if t := p.next(); t.kind != tokEOF {
		if t.kind == tokError {
			return x, x.errorf(t.pos, nil, "%s", t.text)
		}
		return x, x.errorf(t.pos, nil, "unexpected %s: only one name, function call or string per expression (operators are not supported)", t.describe())
	}
	return x, nil
}

// parseCall parses fn( 'arg', … ); fn must be hashFiles.
func (x *expr) parseCall(fn token, p *lexer) error {
	if !strings.EqualFold(fn.text, "hashFiles") {
		return x.errorf(fn.pos, nil, "unknown function %q: only hashFiles('glob', …) is supported", fn.text)
	}
	p.next() // (
	x.kind = "hashFiles"
	for {
		t := p.next()
		switch {
		case t.kind == tokRParen && len(x.globs) == 0:
			return x.errorf(t.pos, nil, "hashFiles needs at least one glob")
		case t.kind == tokString:
			g, msg := parseGlob(t.text)
			if msg != "" {
				return x.errorf(t.pos, nil, "hashFiles glob %q: %s", t.text, msg)
			}
			x.globs = append(x.globs, g)
		case t.kind == tokError:
			return x.errorf(t.pos, nil, "%s", t.text)
		case t.kind == tokEOF:
			return x.errorf(t.pos, nil, "hashFiles( is not closed: want )")
		default:
			return x.errorf(t.pos, nil, "unexpected %s in hashFiles: want a 'quoted glob'", t.describe())
		}
		switch t := p.next(); t.kind {
		case tokRParen:
			return nil
		case tokComma:
		case tokError:
			return x.errorf(t.pos, nil, "%s", t.text)
		case tokEOF:
			return x.errorf(t.pos, nil, "hashFiles( is not closed: want )")
		default:
			return x.errorf(t.pos, nil, "unexpected %s in hashFiles: want , or )", t.describe())
		}
	}
}
