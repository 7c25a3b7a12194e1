package termtext

import (
	"strings"
	"testing"
)

func TestLog(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text\twith a tab", "plain text\twith a tab"},
		{"\x1b[31mred\x1b[0m and \x1b[1;32mbold green", "\x1b[31mred\x1b[0m and \x1b[1;32mbold green\x1b[0m"},
		{"\x1b[38:5:208morange", "\x1b[38:5:208morange\x1b[0m"},
		{"title\x1b]0;pwned\x07 after", "title after"},
		{"osc with st\x1b]8;;http://x\x1b\\link", "osc with stlink"},
		{"clear\x1b[2J\x1b[Hhome", "clearhome"},
		{"private\x1b[?1049h mode", "private mode"},
		{"cursor\x1b[10;10f", "cursor"},
		{"reset\x1bc!", "reset!"},
		{"charset\x1b(Bok", "charsetok"},
		{"dcs\x1bPq#0;2;0;0;0\x1b\\done", "dcsdone"},
		{"unterminated\x1b[31", "unterminated"},
		{"bell\x07 bs\x08 del\x7f", `bell\a bs\b del\x7f`},
		{"rtl \u202eevil\u202c", `rtl \u202eevil\u202c`},
		{"c1 csi \u009b2J", `c1 csi \u009b2J`},
		{"raw byte \x9b2J", `raw byte \x9b2J`},
		{"progress 10%\rprogress 100%", "progress 100%"},
		{"done\r", "done"},
		{"[kiln] fake\r[kiln] forged", "[kiln] forged"},
		{"héllo ✓ 🎉", "héllo ✓ 🎉"},
	} {
		if got := Log(tc.in); got != tc.want {
			t.Errorf("Log(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Nothing Log returns can act on a terminal but SGR.
func FuzzLog(f *testing.F) {
	for _, s := range []string{"\x1b[31mred", "\x1b]0;t\x07", "a\rb", "\u202e", "\x1b[?25l", "\x9b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Log(s)
		rest := out
		for {
			i := strings.IndexByte(rest, 0x1b)
			if i < 0 {
				break
			}
			n, keep := escape(rest[i:])
			if !keep {
				t.Fatalf("Log(%q) = %q: keeps a non-SGR sequence at %d", s, out, i)
			}
			rest = rest[i+n:]
		}
		for _, r := range Visible(out) {
			if r != '\t' && unsafeRune(r) {
				t.Fatalf("Log(%q) = %q: keeps %U", s, out, r)
			}
		}
	})
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"main", "main"},
		{"feature/ünïcode-✓", "feature/ünïcode-✓"},
		{"with space", "with space"},
		{"evil\u202egnp.exe", `"evil\u202egnp.exe"`},
		{"x\x1b]0;pwned\x07", `"x\x1b]0;pwned\a"`},
		{"line\nbreak", `"line\nbreak"`},
		{"tab\t", `"tab\t"`},
		{"zero\u200bwidth", `"zero\u200bwidth"`},
		{"bad\xffutf8", `"bad\xffutf8"`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestVisible(t *testing.T) {
	if got := Visible("\x1b[1m[kiln]\x1b[0m step"); got != "[kiln] step" {
		t.Fatalf("Visible = %q", got)
	}
}

func TestPlain(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                           "plain",
		"\x1b[31mred\x1b[0m text":         "red text",
		"\x1b]0;title\x07after":           "after",
		"progress 10%\rprogress 100%":     "progress 100%",
		"bell\x07 and \u202eoverride":     `bell\a and \u202eoverride`,
		"\x1b[1;38:5:196mbold\x1b[m done": "bold done",
	} {
		if got := Plain(in); got != want {
			t.Errorf("Plain(%q) = %q, want %q", in, got, want)
		}
	}
}
