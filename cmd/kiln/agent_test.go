package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// -server takes one URL or several: comma-separated, the flag repeated,
// or both; the first given replaces $KILN_SERVER, the rest add to it. A
// bad URL is refused with what is wrong.
func TestAgentServerFlag(t *testing.T) {
	t.Setenv("KILN_SERVER", "http://from-env:8080")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "http://from-env:8080"},
		{[]string{"-server", "http://a:8080"}, "http://a:8080"},
		{[]string{"-server", "http://a:8080,http://b:8080"}, "http://a:8080,http://b:8080"},
		{[]string{"-server", "http://a:8080", "-server", "https://b", "-server", "http://c,http://d"}, "http://a:8080,https://b,http://c,http://d"},
	} {
		fs := flag.NewFlagSet("kiln agent", flag.ContinueOnError)
		o := agentFlags(fs, false)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if o.cfg.Server != tc.want {
			t.Errorf("%v: server %q, want %q", tc.args, o.cfg.Server, tc.want)
		}
	}
	for args, want := range map[string]string{
		"-server kiln:8080":                   `server URL "kiln:8080": want http(s)://host[:port]`,
		"-server http://a,ftp://b":            `server URL "ftp://b"`,
		"-server http://a,http://b,http://b/": `server URL "http://b" given twice`,
		"-server http://a -server http://a/":  `server URL "http://a" given twice`,
		"-server ,":                           "no server URL",
	} {
		fs := flag.NewFlagSet("kiln agent", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		agentFlags(fs, false)
		if err := fs.Parse(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}
