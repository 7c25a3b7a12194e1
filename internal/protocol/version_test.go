package protocol_test

import (
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/protocol"
)

// A server accepts its own minor and the one before, of its own major;
// older agents are told to upgrade themselves, newer ones that the server
// must be upgraded first.
func TestCheck(t *testing.T) {
	v := func(s string) protocol.ProtoVersion {
		t.Helper()
		p, err := protocol.ParseVersion(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		server, agent string
		code          string
		msg           string
	}{
		{"1.4", "1.4", "", ""},
		{"1.4", "1.3", "", ""},
		{"1.0", "1.0", "", ""},
		{"1.4", "1.2", protocol.CodeAgentTooOld, "agent speaks protocol 1.2; this server needs 1.3 or newer: upgrade the agent to"},
		{"2.0", "1.9", protocol.CodeAgentTooOld, "agent speaks protocol 1.9; this server needs 2.0 or newer"},
		{"1.4", "0.9", protocol.CodeAgentTooOld, "this server needs 1.3 or newer"},
		{"1.4", "1.5", protocol.CodeServerTooOld, "agent speaks protocol 1.5; this server (kiln dev) speaks 1.4: upgrade the servers first, then the agents"},
		{"1.4", "2.0", protocol.CodeServerTooOld, "speaks 1.4: upgrade the servers first"},
	} {
		err := protocol.Check(v(tc.server), v(tc.agent))
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("server %s, agent %s: refused: %v", tc.server, tc.agent, err)
		case tc.code != "" && err == nil:
			t.Errorf("server %s, agent %s: accepted, want %s", tc.server, tc.agent, tc.code)
		case tc.code != "" && (err.Code != tc.code || !strings.Contains(err.Error(), tc.msg)):
			t.Errorf("server %s, agent %s: %s %q, want %s %q", tc.server, tc.agent, err.Code, err, tc.code, tc.msg)
		}
	}
}

// The advice names the server's kiln release when it has one.
func TestCheckNamesRelease(t *testing.T) {
	defer func(v string) { protocol.KilnVersion = v }(protocol.KilnVersion)
	protocol.KilnVersion = "v1.7.0"
	err := protocol.Check(protocol.ProtoVersion{Major: 1, Minor: 4}, protocol.ProtoVersion{Major: 1, Minor: 1})
	if want := "upgrade the agent to kiln v1.7.0 or later"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("refusal %v, want it to end %q", err, want)
	}
	protocol.KilnVersion = "dev"
	err = protocol.Check(protocol.ProtoVersion{Major: 1, Minor: 4}, protocol.ProtoVersion{Major: 1, Minor: 1})
	if want := "upgrade the agent to the kiln this server runs or later"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("refusal %v, want it to end %q", err, want)
	}
}

func TestParseVersion(t *testing.T) {
	if v, err := protocol.ParseVersion(protocol.Version); err != nil || v != protocol.Current {
		t.Errorf("ParseVersion(%q) = %v, %v", protocol.Version, v, err)
	}
	for _, bad := range []string{"", "1", "1.", ".1", "1.x", "v1.1", "1.-1", "1.1.1"} {
		if _, err := protocol.ParseVersion(bad); err == nil || !strings.Contains(err.Error(), "want major.minor") {
			t.Errorf("ParseVersion(%q): %v, want an error", bad, err)
		}
	}
}
