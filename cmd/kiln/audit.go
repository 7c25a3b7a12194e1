package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/store"
)

const auditUsage = "usage: kiln audit [-action build.] [-target build:42] [-actor TOKEN_ID] [-since 24h] [-before TIME] [-limit N] [-json]"

// auditFilter is kiln audit's flags.
type auditFilter struct {
	action, target, actor, since, before string
	limit                                int
}

// query is the GET /api/v1/audit query of f (without the cursor): -since
// and -before take a duration back from now (24h) or an RFC 3339 time.
func (f auditFilter) query(now time.Time) (url.Values, error) {
	q := url.Values{}
	if f.limit <= 0 {
		return nil, fmt.Errorf("-limit %d: want a positive number of events", f.limit)
	}
	for key, v := range map[string]string{"action": f.action, "target": f.target, "actor": f.actor} {
		if v != "" {
			q.Set(key, v)
		}
	}
	if f.actor != "" {
		q.Set("actor_kind", api.ActorAdminToken)
	}
	for key, v := range map[string]string{"since": f.since, "before": f.before} {
		if v == "" {
			continue
		}
		t, err := when(v, now)
		if err != nil {
			return nil, fmt.Errorf("-%s %q: want a duration back from now (24h, 90m) or an RFC 3339 time (2026-01-02T15:04:05Z)", key, v)
		}
		q.Set(key, t.UTC().Format(time.RFC3339Nano))
	}
	return q, nil
}

// when reads a time: a duration before now, or an RFC 3339 time.
func when(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339Nano, v)
}

func runAudit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln audit", flag.ContinueOnError)
	connect := clientFlags(fs)
	var f auditFilter
	fs.StringVar(&f.action, "action", "", "only actions starting with this (build. or build.cancel)")
	fs.StringVar(&f.target, "target", "", "only this target, exactly (build:42, project:web, secret:web/KEY, token:7, pool:linux)")
	fs.StringVar(&f.actor, "actor", "", "only the changes made with this admin token (its id: kiln token ls)")
	fs.StringVar(&f.since, "since", "", "only events since: a duration back from now (24h) or an RFC 3339 time")
	fs.StringVar(&f.before, "before", "", "only events before: a duration back from now or an RFC 3339 time")
	fs.IntVar(&f.limit, "limit", 50, "at most this many events, newest first")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return errors.New(auditUsage)
	}
	q, err := f.query(time.Now())
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var events []api.AuditEventView
	for len(events) < f.limit {
		q.Set("limit", strconv.Itoa(min(f.limit-len(events), store.MaxAuditPage)))
		var page api.AuditPage
		if err := c.do(ctx, "GET", "/audit?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		events = append(events, page.Events...)
		if page.NextCursor == 0 {
			break
		}
		q.Set("cursor", strconv.FormatInt(page.NextCursor, 10))
	}
	if *asJSON {
		return printJSON(events)
	}
	return printAudit(os.Stdout, events)
}

// printAudit prints events as a table. Everything but the id and time
// came from a client (names, targets, detail, the User-Agent) and is
// quoted when it is not printable text.
func printAudit(w io.Writer, events []api.AuditEventView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTOR\tACTION\tTARGET\tFROM\tDETAIL")
	for _, ev := range events {
		actor := ev.Actor.Kind + ":" + ev.Actor.ID
		if ev.Actor.Name != "" {
			actor += " (" + ev.Actor.Name + ")"
		}
		from := ev.RemoteAddr
		if ev.UserAgent != "" {
			from += " " + ev.UserAgent
		}
		detail := strings.TrimSpace(string(ev.Detail))
		if detail == "{}" {
			detail = ""
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.ID, ev.At.Local().Format("2006-01-02 15:04:05"),
			qs(actor), qs(ev.Action), qs(ev.Target), qs(from), qs(detail))
	}
	return tw.Flush()
}
