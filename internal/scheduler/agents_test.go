package scheduler

import (
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// The broken-agent policy: quarantined after QuarantineAfter errors in a
// row, for a window that doubles per further error up to QuarantineMax,
// then probing once the window has passed.
func TestAgentState(t *testing.T) {
	s := &Scheduler{cfg: Config{QuarantineAfter: 3, QuarantineFor: time.Minute, QuarantineMax: 5 * time.Minute}}
	last := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		streak int
		at     time.Duration // after the last error
		state  string
		window time.Duration
	}{
		{0, 0, AgentOK, 0},
		{2, 0, AgentOK, 0},
		{3, 30 * time.Second, AgentQuarantined, time.Minute},
		{3, 61 * time.Second, AgentProbing, time.Minute},
		{4, 90 * time.Second, AgentQuarantined, 2 * time.Minute},
		{5, 3 * time.Minute, AgentQuarantined, 4 * time.Minute},
		{6, 4*time.Minute + time.Second, AgentQuarantined, 5 * time.Minute}, // capped
		{40, 5*time.Minute + time.Second, AgentProbing, 5 * time.Minute},
	}
	for _, c := range cases {
		a := store.Agent{ID: "a", ErrorStreak: c.streak, LastErrorAt: &last}
		state, until := s.AgentState(a, last.Add(c.at))
		if state != c.state {
			t.Errorf("streak %d, %s after: %s, want %s", c.streak, c.at, state, c.state)
		}
		if c.window == 0 {
			if until != nil {
				t.Errorf("streak %d: until %s, want none", c.streak, until)
			}
		} else if until == nil || !until.Equal(last.Add(c.window)) {
			t.Errorf("streak %d: until %v, want %s", c.streak, until, last.Add(c.window))
		}
	}
	// Off: never quarantined.
	off := &Scheduler{cfg: Config{}}
	if state, _ := off.AgentState(store.Agent{ErrorStreak: 100, LastErrorAt: &last}, last); state != AgentOK {
		t.Errorf("quarantine off: %s", state)
	}
}
