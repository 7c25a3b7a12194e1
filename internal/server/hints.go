package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// hintPublisher sends this server's wake-ups to the other servers on the
// database (store.Publish: PostgreSQL's NOTIFY), off the request's path:
// Publish only queues, one goroutine sends, and a burst of the same hint
// (a build's log lines, batch after batch) goes once. A full queue drops
// hints: they are hints, the other servers' polls cover what is lost.
type hintPublisher struct {
	st  *store.Store
	log *slog.Logger
	q   chan store.Hint
}

func newHintPublisher(st *store.Store, log *slog.Logger) *hintPublisher {
	return &hintPublisher{st: st, log: log, q: make(chan store.Hint, 1024)}
}

// Publish queues a hint; it never blocks.
func (p *hintPublisher) Publish(kind string, id int64) {
	select {
	case p.q <- store.Hint{Kind: kind, ID: id}:
	default:
	}
}

// run sends the queued hints until ctx ends, each distinct hint of what
// is queued at once only once.
func (p *hintPublisher) run(ctx context.Context) {
	for {
		var first store.Hint
		select {
		case <-ctx.Done():
			return
		case first = <-p.q:
		}
		batch := map[store.Hint]bool{first: true}
	more:
		for len(batch) < 256 {
			select {
			case h := <-p.q:
				batch[h] = true
			default:
				break more
			}
		}
		for h := range batch {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := p.st.Publish(sctx, h.Kind, h.ID); err != nil && ctx.Err() == nil {
				p.log.Debug("hints: publish", "kind", h.Kind, "err", err)
			}
			cancel()
		}
	}
}

// hints wires the servers' wake-ups across the database: what wakes
// waiters here is published, and what another server publishes wakes
// waiters here. On SQLite (one server) it does nothing.
func (s *Server) hints(ctx context.Context) {
	if s.Store.Dialect() != "postgres" {
		return
	}
	go s.hintPub.run(ctx)
	s.Store.Subscribe(ctx, func(h store.Hint) {
		switch h.Kind {
		case store.HintJobs:
			s.Sched.JobsChangedHere()
		case store.HintBuild:
			s.API.BuildChanged(h.ID)
		case store.HintOutbox:
			s.Statuses.Wake() // the sender runs on the leader only
		}
	}, func(msg string, args ...any) { s.log.Warn(msg, args...) })
}
