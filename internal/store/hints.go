package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
)

// Hints carry wake-ups between the servers sharing a PostgreSQL database:
// a claim waiting on one server wakes when another queues a job, a log
// stream when another server appends the build's lines, the leader's
// status sender when a follower writes the outbox. They are only hints,
// as in one process: every loop also polls the store, so a hint lost (a
// listener reconnecting, a full queue) delays, never loses. On SQLite
// (one process) they are not sent: the process's own wake-ups suffice.

// Kinds of hint.
const (
	HintJobs   = "jobs"   // jobs became claimable (or claimed, canceled)
	HintBuild  = "build"  // a build's state or logs changed; ID is the build
	HintOutbox = "outbox" // rows were written to the forge status outbox
)

// hintChannel is PostgreSQL's channel for the hints.
const hintChannel = "kiln_hints"

// Hint is one wake-up from another server.
type Hint struct {
	Kind string
	ID   int64
}

// Publish sends a hint to the other servers on the database (on
// PostgreSQL; nothing on SQLite). A failure is returned for the caller to
// log or drop: a hint is never worth failing a request for.
func (s *Store) Publish(ctx context.Context, kind string, id int64) error {
	if s.db.d != dialectPostgres {
		return nil
	}
	_, err := s.db.sql.ExecContext(ctx, `SELECT pg_notify($1, $2)`, hintChannel, s.origin()+" "+kind+" "+strconv.FormatInt(id, 10))
	return err
}

// Subscribe calls fn with every hint another server publishes, until ctx
// ends; on SQLite it returns at once. A lost connection is reopened with
// backoff (hints sent meanwhile are lost: polls cover them). fn runs on
// the listener's goroutine and must not block.
func (s *Store) Subscribe(ctx context.Context, fn func(Hint), logf func(msg string, args ...any)) {
	if s.db.d != dialectPostgres {
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listen(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		logf("hints: listening failed; polls cover until it is back", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// listen holds one connection of the pool for LISTEN until ctx ends or
// the connection fails.
func (s *Store) listen(ctx context.Context, fn func(Hint)) error {
	conn, err := s.db.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return errors.New("hints: not a pgx connection")
		}
		pc := c.Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+hintChannel); err != nil {
			return err
		}
		// Unlisten before the connection goes back to the pool.
		defer pc.Exec(context.WithoutCancel(ctx), "UNLISTEN "+hintChannel)
		self := s.origin()
		for {
			n, err := pc.WaitForNotification(ctx)
			if err != nil {
				return err
			}
			origin, rest, _ := strings.Cut(n.Payload, " ")
			if origin == self {
				continue // this server's own: it woke itself already
			}
			kind, id, _ := strings.Cut(rest, " ")
			v, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				continue
			}
			fn(Hint{Kind: kind, ID: v})
		}
	})
}

// origin names this store (this server) in the hints it publishes.
func (s *Store) origin() string {
	s.originOnce.Do(func() {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic(fmt.Sprintf("store: random origin: %v", err))
		}
		s.originID = hex.EncodeToString(b[:])
	})
	return s.originID
}
