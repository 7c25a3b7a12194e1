package store

import "testing"

// Every transaction is counted once, a rollback after a commit not at
// all, and the lock's wait and hold only grow.
func TestTxStats(t *testing.T) {
	s, _ := newStore(t)
	before := s.TxStats()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	tx.Rollback() // deferred in the store's code: nothing to undo
	if tx, err = s.db.BeginTx(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	d := s.TxStats().Sub(before)
	if d.Begun != 2 || d.RolledBack != 1 || d.Wait < 0 || d.Held <= 0 {
		t.Errorf("stats %+v, want 2 begun, 1 rolled back, times not negative", d)
	}
}
