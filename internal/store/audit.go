package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// AuditEvent is one change of state a person made, as the audit log
// keeps it. What is audited, and what its detail says, is the API's
// policy; the store only appends and lists. Nothing updates or deletes
// an event: the store has no method for it.
type AuditEvent struct {
	ID int64
	At time.Time
	// The actor: today an API token (kind "admin_token", its id, its
	// name), later a signed-in user (kind "user").
	ActorKind, ActorID, ActorName string
	// Action is what was done ("build.cancel", "secret.set"); Target
	// what it was done to ("build:42", "project:web").
	Action, Target string
	// Detail is JSON saying what changed; never a secret's value or a
	// token ("{}" when empty).
	Detail string
	// From where: the client's address and its User-Agent.
	RemoteAddr, UserAgent string
}

// AuditFilter narrows ListAudit. Zero fields do not filter.
type AuditFilter struct {
	// ActionPrefix keeps the actions starting with it ("build." or
	// "build.cancel").
	ActionPrefix string
	// Target keeps one target exactly ("build:42").
	Target string
	// ActorKind and ActorID keep one actor's events.
	ActorKind, ActorID string
	// Since keeps events at or after it, Before those before it.
	Since, Before time.Time
	// BeforeID is the cursor: events older than that id (the list is
	// newest first; the last event's id fetches the next page).
	BeforeID int64
	// Limit bounds the events returned (default and most: MaxAuditPage).
	Limit int
}

// MaxAuditPage is the most events ListAudit returns at once.
const MaxAuditPage = 1000

// AppendAudit writes an event to the audit log, on its own: for a change
// made outside a transaction of the store's, written right after it
// succeeded.
func (s *Store) AppendAudit(ctx context.Context, ev *AuditEvent) error {
	return s.wrote(s.appendAudit(ctx, s.db, ev))
}

// appendAudit inserts ev through q (the database or a change's
// transaction) and fills its id and time.
func (s *Store) appendAudit(ctx context.Context, q querier, ev *AuditEvent) error {
	if ev.Action == "" || ev.ActorKind == "" {
		return errors.New("audit event: action and actor kind are required")
	}
	if ev.Detail == "" {
		ev.Detail = "{}"
	}
	if !json.Valid([]byte(ev.Detail)) {
		return fmt.Errorf("audit event %s: detail is not JSON", ev.Action)
	}
	if ev.At.IsZero() {
		ev.At = fromMS(s.nowMS())
	}
	err := q.QueryRowContext(ctx, `INSERT INTO audit_events (at, actor_kind, actor_id, actor_name, action, target, detail, remote_addr, user_agent)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		ms(ev.At), ev.ActorKind, ev.ActorID, ev.ActorName, ev.Action, ev.Target, ev.Detail, ev.RemoteAddr, ev.UserAgent).Scan(&ev.ID)
	if err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return nil
}

// auditTx appends the event audit makes, if any, in a change's
// transaction: the event and the change commit together or not at all.
// audit is called after the change, so the event may name what the
// change made (a new build's id).
func (s *Store) auditTx(ctx context.Context, tx *dbTx, audit func() *AuditEvent) error {
	if audit == nil {
		return nil
	}
	ev := audit()
	if ev == nil {
		return nil
	}
	return s.appendAudit(ctx, tx, ev)
}

// ListAudit returns the audit log's events that f keeps, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]*AuditEvent, error) {
	var where []string
	var args []any
	if f.ActionPrefix != "" {
		// substr, not LIKE: SQLite's LIKE ignores case, and '_' and '%'
		// would need escaping.
		where = append(where, `substr(action, 1, ?) = ?`)
		args = append(args, utf8.RuneCountInString(f.ActionPrefix), f.ActionPrefix)
	}
	if f.Target != "" {
		where, args = append(where, `target = ?`), append(args, f.Target)
	}
	if f.ActorKind != "" {
		where, args = append(where, `actor_kind = ?`), append(args, f.ActorKind)
	}
	if f.ActorID != "" {
		where, args = append(where, `actor_id = ?`), append(args, f.ActorID)
	}
	if !f.Since.IsZero() {
		where, args = append(where, `at >= ?`), append(args, ms(f.Since))
	}
	if !f.Before.IsZero() {
		where, args = append(where, `at < ?`), append(args, ms(f.Before))
	}
	if f.BeforeID > 0 {
		where, args = append(where, `id < ?`), append(args, f.BeforeID)
	}
	q := `SELECT id, at, actor_kind, actor_id, actor_name, action, target, detail, remote_addr, user_agent FROM audit_events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	limit := f.Limit
	if limit <= 0 || limit > MaxAuditPage {
		limit = MaxAuditPage
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	return collect(rows, err, func(row interface{ Scan(...any) error }) (*AuditEvent, error) {
		var ev AuditEvent
		var at int64
		if err := row.Scan(&ev.ID, &at, &ev.ActorKind, &ev.ActorID, &ev.ActorName, &ev.Action, &ev.Target, &ev.Detail, &ev.RemoteAddr, &ev.UserAgent); err != nil {
			return nil, err
		}
		ev.At = fromMS(at)
		return &ev, nil
	})
}

// Audited is the store's changes that run in a transaction of their own,
// each with the audit event the caller gives written in that
// transaction. The exported methods of the same names write none.
type Audited struct {
	s     *Store
	audit func() *AuditEvent
}

// Audited returns the changes that write audit's event with them. audit
// is called inside the change's transaction, after the change.
func (s *Store) Audited(audit func() *AuditEvent) Audited { return Audited{s: s, audit: audit} }

// CreateBuild is Store.CreateBuild, audited.
func (a Audited) CreateBuild(ctx context.Context, b *Build) error {
	return a.s.createBuild(ctx, b, a.audit)
}

// CancelBuild is Store.CancelBuild, audited.
func (a Audited) CancelBuild(ctx context.Context, buildID int64, reason string) error {
	return a.s.cancelBuild(ctx, buildID, reason, a.audit)
}

// ApproveBuild is Store.ApproveBuild, audited.
func (a Audited) ApproveBuild(ctx context.Context, buildID int64, by string) error {
	return a.s.approveBuild(ctx, buildID, by, a.audit)
}

// RejectBuild is Store.RejectBuild, audited.
func (a Audited) RejectBuild(ctx context.Context, buildID int64, by string) error {
	return a.s.rejectBuild(ctx, buildID, by, a.audit)
}

// DeletePool is Store.DeletePool, audited.
func (a Audited) DeletePool(ctx context.Context, name string) ([]int64, error) {
	return a.s.deletePool(ctx, name, a.audit)
}
