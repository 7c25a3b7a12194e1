package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

// kiln audit's flags become the API's query: -since and -before take a
// duration back from now or a time; bad ones are refused before any
// request.
func TestAuditQuery(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	q, err := auditFilter{action: "build.", target: "build:42", actor: "7", since: "24h", before: "2026-03-04T11:00:00+01:00", limit: 10}.query(now)
	if err != nil {
		t.Fatal(err)
	}
	want := "action=build.&actor=7&actor_kind=admin_token&before=2026-03-04T10%3A00%3A00Z&since=2026-03-03T12%3A00%3A00Z&target=build%3A42"
	if got := q.Encode(); got != want {
		t.Errorf("query\n got %s\nwant %s", got, want)
	}
	if q, err := (auditFilter{limit: 1}).query(now); err != nil || len(q) != 0 {
		t.Errorf("no filters: %v, %v", q, err)
	}
	for _, f := range []auditFilter{{since: "yesterday", limit: 1}, {before: "-5m", limit: 1}, {limit: 0}} {
		if _, err := f.query(now); err == nil {
			t.Errorf("%+v: no error", f)
		}
	}
}

// The table shows what clients sent (names, targets, the User-Agent,
// the detail) quoted when it is not printable: an escape sequence in a
// User-Agent is seen, not obeyed.
func TestPrintAudit(t *testing.T) {
	at := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	evs := []api.AuditEventView{
		{ID: 2, At: at, Actor: api.AuditActor{Kind: "admin_token", ID: "1", Name: "admin"}, Action: "build.cancel", Target: "build:42",
			Detail: json.RawMessage(`{}`), RemoteAddr: "192.0.2.7", UserAgent: "evil\x1b[2J"},
		{ID: 1, At: at, Actor: api.AuditActor{Kind: "admin_token", ID: "1", Name: "ops\nteam"}, Action: "secret.set", Target: "secret:web/KEY",
			Detail: json.RawMessage(`{"k":"v"}`), RemoteAddr: "192.0.2.7"},
	}
	var b strings.Builder
	if err := printAudit(&b, evs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b") || !strings.Contains(out, `"192.0.2.7 evil\x1b[2J"`) || !strings.Contains(out, `"admin_token:1 (ops\nteam)"`) {
		t.Errorf("untrusted text printed as is:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "build.cancel") || !strings.Contains(lines[2], `{"k":"v"}`) {
		t.Errorf("table:\n%s", out)
	}
}

// -trusted-proxies takes CIDRs and addresses; anything else stops the
// server before it starts.
func TestTrustedProxiesFlag(t *testing.T) {
	fs := flag.NewFlagSet("kiln server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := serverFlags(fs)
	if err := fs.Parse([]string{"-trusted-proxies", "10.0.0.0/8, 192.0.2.1"}); err != nil || fmt.Sprint(o.cfg.TrustedProxies) != "[10.0.0.0/8 192.0.2.1/32]" {
		t.Errorf("parsed %v, %v", o.cfg.TrustedProxies, err)
	}
	fs = flag.NewFlagSet("kiln server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	serverFlags(fs)
	if err := fs.Parse([]string{"-trusted-proxies", "lb.example.com"}); err == nil || !strings.Contains(err.Error(), "want a CIDR") {
		t.Errorf("a host name: %v, want a clear error", err)
	}
}
