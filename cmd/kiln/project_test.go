package main

import (
	"strings"
	"testing"
)

// A secret piped on stdin is stored whole, a multi-line value (a key
// file) included, less one trailing newline; from a terminal, one line.
func TestReadSecretValue(t *testing.T) {
	key := "-----BEGIN KEY-----\nline two\n-----END KEY-----"
	cases := []struct {
		in   string
		tty  bool
		want string
		err  string
	}{
		{key + "\n", false, key, ""},
		{key + "\r\n", false, key, ""},
		{key, false, key, ""},
		{"two\n\n", false, "two\n", ""},
		{"first line\nsecond line\n", true, "first line", ""},
		{"", false, "", "empty secret value"},
		{"\n", false, "", "empty secret value"},
		{strings.Repeat("x", maxSecretValue+1), false, "", "longer than"},
	}
	for _, c := range cases {
		got, err := readSecretValue(strings.NewReader(c.in), c.tty)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("readSecretValue(%.20q, tty=%v) = %q, %v; want error %q", c.in, c.tty, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("readSecretValue(%.20q, tty=%v) = %q, %v; want %q", c.in, c.tty, got, err, c.want)
		}
	}
}
