package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// The audit log: every change of state an admin makes through the API is
// one event, written with the change (store.Audited, in its transaction)
// or right after it succeeded (record). What is audited, under which
// action and target, and what the detail says is decided here; a refused
// request changed nothing and writes nothing. A detail never holds a
// secret's value or a token: only names, and "set" for a sealed field.

// Actor kinds: an admin token (id: the token's id), or a user signed in
// through single sign-on (id: the provider's subject, name: the email).
const (
	ActorAdminToken = "admin_token"
	ActorAgentToken = "agent_token"
	ActorUser       = "user"
)

// auditEvent is the event of r's change: who (r's token), from where
// (clientAddr, the User-Agent), what (action, target, detail: marshalled
// as JSON; nil is {}).
func (s *Server) auditEvent(r *http.Request, action, target string, detail any) *store.AuditEvent {
	ev := &store.AuditEvent{Action: action, Target: target, RemoteAddr: s.clientAddr(r), UserAgent: clipLog(r.UserAgent(), 512), Detail: "{}"}
	if p := principalOf(r); p != nil && p.user != nil {
		ev.ActorKind, ev.ActorID, ev.ActorName = ActorUser, p.user.Subject, userLabel(p.user)
	} else if tok, _ := r.Context().Value(ctxKey{}).(*store.Token); tok != nil {
		ev.ActorKind, ev.ActorID, ev.ActorName = string(tok.Kind)+"_token", strconv.FormatInt(tok.ID, 10), tok.Name
	} else {
		ev.ActorKind = "anonymous"
	}
	if detail != nil {
		if b, err := json.Marshal(detail); err == nil {
			ev.Detail = string(b)
		}
	}
	return ev
}

// audited is the store's transactional changes writing r's event with
// them; detail is called in the transaction, after the change.
func (s *Server) audited(r *http.Request, action, target string, detail func() any) store.Audited {
	return s.store.Audited(func() *store.AuditEvent {
		var d any
		if detail != nil {
			d = detail()
		}
		return s.auditEvent(r, action, target, d)
	})
}

// record writes r's event for a change made outside a store transaction,
// once it succeeded. The change stands whatever happens here: a failed
// write is logged loudly (the answer still tells the truth about the
// change).
func (s *Server) record(r *http.Request, action, target string, detail any) {
	ev := s.auditEvent(r, action, target, detail)
	// Not canceled with the request: a client gone after its change
	// still leaves the change's event.
	if err := s.store.AppendAudit(context.WithoutCancel(r.Context()), ev); err != nil {
		s.log.Error("audit log: event not written", "action", action, "target", target, "actor", ev.ActorName, "remote_addr", ev.RemoteAddr, "err", err)
	}
}

// clientAddr is where r came from: the TCP peer, or, when the peer is a
// trusted proxy (Config.TrustedProxies), the nearest address in
// X-Forwarded-For that is not one, read from the right (the entries to
// its left were written by whoever the proxy got the request from, and
// may be forged).
func (s *Server) clientAddr(r *http.Request) string {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	addr, err := netip.ParseAddr(peer)
	if err != nil || !s.trusted(addr) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	client := addr
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			break // a hop that is no address: trust nothing left of it
		}
		client = a.Unmap()
		if !s.trusted(client) {
			break
		}
	}
	return client.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseTrustedProxies reads -trusted-proxies: CIDRs (or single
// addresses) separated by commas.
func ParseTrustedProxies(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: want a CIDR (10.0.0.0/8) or an address", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want a CIDR (10.0.0.0/8) or an address", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// AuditEventView is an audit event as GET /api/v1/audit shows it.
type AuditEventView struct {
	ID     int64      `json:"id"`
	At     time.Time  `json:"at"`
	Actor  AuditActor `json:"actor"`
	Action string     `json:"action"`
	Target string     `json:"target"`
	// Detail is what changed, as JSON (never a secret's value or a token).
	Detail     json.RawMessage `json:"detail"`
	RemoteAddr string          `json:"remote_addr"`
	UserAgent  string          `json:"user_agent"`
}

// AuditActor is who made a change: kind admin_token (id: the token's id,
// name: its name) or user (id: the provider's subject, name: the email).
type AuditActor struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// AuditPage is one page of the audit log, newest first; NextCursor, when
// set, is the cursor of the next (older) page.
type AuditPage struct {
	Events     []AuditEventView `json:"events"`
	NextCursor int64            `json:"next_cursor,omitempty"`
}

// listAudit handles GET /api/v1/audit: ?action= (a prefix: build. or
// build.cancel), target= (exact: build:42), actor_kind=, actor= (its id),
// since= and before= (RFC 3339 times), cursor= (an id: older events),
// limit= (at most store.MaxAuditPage, the default 100).
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AuditFilter{ActionPrefix: q.Get("action"), Target: q.Get("target"), ActorKind: q.Get("actor_kind"), ActorID: q.Get("actor"), Limit: 100}
	for key, dst := range map[string]*time.Time{"since": &f.Since, "before": &f.Before} {
		if v := q.Get(key); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("%s %q: want an RFC 3339 time (2026-01-02T15:04:05Z)", key, clipLog(v, 64)))
				return
			}
			*dst = t
		}
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "invalid", "cursor: want a positive integer (an event's id)")
			return
		}
		f.BeforeID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > store.MaxAuditPage {
			writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("limit: want 1 to %d", store.MaxAuditPage))
			return
		}
		f.Limit = n
	}
	evs, err := s.store.ListAudit(r.Context(), f)
	if err != nil {
		s.storeError(w, err)
		return
	}
	page := AuditPage{Events: make([]AuditEventView, 0, len(evs))}
	for _, ev := range evs {
		page.Events = append(page.Events, AuditEventView{ID: ev.ID, At: ev.At, Actor: AuditActor{Kind: ev.ActorKind, ID: ev.ActorID, Name: ev.ActorName},
			Action: ev.Action, Target: ev.Target, Detail: json.RawMessage(ev.Detail), RemoteAddr: ev.RemoteAddr, UserAgent: ev.UserAgent})
	}
	if len(evs) == f.Limit {
		page.NextCursor = evs[len(evs)-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}
