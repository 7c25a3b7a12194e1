package cachekey

import (
	"errors"
	"strings"
	"testing"
)

// FuzzExpand: Expand never panics; it accepts exactly what Validate
// accepts (the workspace is readable, so only the template can fail);
// errors are *Error with an offset inside the template and quote the
// expression as it stands there; text without ${{ is returned as it is.
// The seed corpus is in testdata/fuzz/FuzzExpand.
func FuzzExpand(f *testing.F) {
	ws := workspace(f, map[string]string{
		"go.mod":         "module a\n",
		"go.sum":         "sum\n",
		"a/b/go.mod":     "module b\n",
		"a/.x/c.lock":    "c\n",
		"link":           "->go.sum",
		"out":            "->/etc/passwd",
		"a/loop":         "->..",
		"[weird]/f*?.md": "odd\n",
	})
	c := Context{Workspace: ws, Branch: "main", OS: "linux", Arch: "arm64"}
	f.Fuzz(func(t *testing.T, tmpl string) {
		got, err := Expand(tmpl, c)
		verr := Validate(tmpl)
		if (err == nil) != (verr == nil) {
			t.Fatalf("Expand(%q) = %v but Validate = %v", tmpl, err, verr)
		}
		if err == nil {
			if !strings.Contains(tmpl, "${{") && got != tmpl {
				t.Fatalf("Expand(%q) = %q, want it unchanged", tmpl, got)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("Expand(%q): %T %v, want *Error", tmpl, err, err)
		}
		if !quotedAt(tmpl, e.Expr, e.Offset) {
			t.Fatalf("Expand(%q): offset %d, expression %q out of place", tmpl, e.Offset, e.Expr)
		}
		if verr.Error() != err.Error() {
			t.Fatalf("Expand(%q) = %v but Validate = %v", tmpl, err, verr)
		}
	})
}

// quotedAt reports whether expr stands in tmpl at a place covering offset.
func quotedAt(tmpl, expr string, offset int) bool {
	for i := 0; i <= len(tmpl); i++ {
		j := strings.Index(tmpl[i:], expr)
		if j < 0 {
			return false
		}
		if start := i + j; strings.HasPrefix(expr, "${{") && start <= offset && offset <= start+len(expr) {
			return true
		}
		i += j
	}
	return false
}
