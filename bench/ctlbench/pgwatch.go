package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// pgWatch samples, every interval, what the sessions of one database are
// doing (pg_stat_activity): so a phase's time can be told apart into
// waiting for the store's write lock (the advisory lock every store
// transaction takes first, internal/store/dialect.go), running a
// statement, and holding a transaction open while the server's Go code
// works between statements. It is the load generator's: one more
// connection, not the servers'.
type pgWatch struct {
	db   *sql.DB
	name string
	stop func()
	done chan pgSample
}

// pgSample sums the sessions seen in each state over samples.
type pgSample struct {
	samples                             int
	lockWait, otherWait, active, idleTx int
}

func (s pgSample) String() string {
	if s.samples == 0 {
		return "no samples"
	}
	avg := func(n int) float64 { return float64(n) / float64(s.samples) }
	return fmt.Sprintf("on average %.2f sessions waiting for the write lock (advisory), %.2f running a statement, %.2f waiting on something else, %.2f idle in a transaction (the server's Go code between statements, %d samples)",
		avg(s.lockWait), avg(s.active), avg(s.otherWait), avg(s.idleTx), s.samples)
}

// watchPostgres starts sampling the sessions on database (a URL) through
// a connection to it.
func watchPostgres(ctx context.Context, database string, interval time.Duration) (*pgWatch, error) {
	u, err := url.Parse(database)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("pgx", database)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithCancel(ctx)
	w := &pgWatch{db: db, name: strings.TrimPrefix(u.Path, "/"), stop: cancel, done: make(chan pgSample, 1)}
	go w.run(ctx, interval)
	return w, nil
}

func (w *pgWatch) run(ctx context.Context, interval time.Duration) {
	var s pgSample
	defer func() { w.done <- s }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, err := w.db.QueryContext(ctx, `SELECT state, COALESCE(wait_event_type, ''), COALESCE(wait_event, ''), COUNT(*)
			FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend' GROUP BY 1, 2, 3`, w.name)
		if err != nil {
			return
		}
		for rows.Next() {
			var state, waitType, wait string
			var n int
			if rows.Scan(&state, &waitType, &wait, &n) != nil {
				break
			}
			switch {
			case state == "active" && waitType == "Lock" && wait == "advisory":
				s.lockWait += n
			case state == "active" && (waitType == "" || waitType == "IO" || waitType == "LWLock"):
				s.active += n
			case state == "active":
				s.otherWait += n
			case strings.HasPrefix(state, "idle in transaction"):
				s.idleTx += n
			}
		}
		rows.Close()
		s.samples++
	}
}

// end stops sampling and returns the sums.
func (w *pgWatch) end() pgSample {
	w.stop()
	s := <-w.done
	w.db.Close()
	return s
}
