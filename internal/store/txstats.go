package store

import (
	"sync/atomic"
	"time"
)

// TxStats counts the store's transactions since it was opened, and the
// time they spent getting the write lock and holding it: on SQLite the
// immediate BEGIN, on PostgreSQL BEGIN and the advisory lock every store
// transaction takes first (writeLock), both after waiting for a
// connection of the pool. The write lock makes transactions run one at
// a time, so Held over a stretch of wall time is how busy the lock was
// (1: always). For benchmarks: see bench/ctlbench.
type TxStats struct {
	Begun, RolledBack int64
	// Wait is the time from BeginTx to the write lock held, summed;
	// Held, from then to the commit or rollback.
	Wait, Held time.Duration
	// PoolWait is the time spent waiting for a connection of the pool
	// (database/sql's WaitDuration), transactions or not.
	PoolWait time.Duration
}

// Sub is s minus an earlier reading.
func (s TxStats) Sub(t TxStats) TxStats {
	return TxStats{Begun: s.Begun - t.Begun, RolledBack: s.RolledBack - t.RolledBack, Wait: s.Wait - t.Wait, Held: s.Held - t.Held, PoolWait: s.PoolWait - t.PoolWait}
}

// TxStats reads the counters.
func (s *Store) TxStats() TxStats {
	c := &s.db.stats
	return TxStats{Begun: c.n.Load(), RolledBack: c.rolledBack.Load(), Wait: time.Duration(c.wait.Load()), Held: time.Duration(c.held.Load()),
		PoolWait: s.db.sql.Stats().WaitDuration}
}

type txCounters struct{ n, rolledBack, wait, held atomic.Int64 }

func (c *txCounters) begun(wait time.Duration) {
	c.n.Add(1)
	c.wait.Add(int64(wait))
}

func (c *txCounters) ended(held time.Duration, rolledBack bool) {
	c.held.Add(int64(held))
	if rolledBack {
		c.rolledBack.Add(1)
	}
}
