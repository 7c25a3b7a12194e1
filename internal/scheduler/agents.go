package scheduler

import (
	"context"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

// Agent states under the broken-agent policy.
const (
	AgentOK          = "ok"
	AgentQuarantined = "quarantined" // gets no jobs until its window passes
	AgentProbing     = "probing"     // may take one job; its end decides
)

// AgentState applies the broken-agent policy to what the store recorded
// about an agent: after QuarantineAfter consecutive attempts ended in
// error (infrastructure), it is quarantined for QuarantineFor from its
// last error, doubled for each further error up to QuarantineMax. Once
// the window has passed it is probing: it may run one job at a time; an
// attempt that runs to a verdict (success, failure, timeout) ends the
// streak, another error quarantines it again for twice as long. until is
// the end of the window (nil when the agent is ok).
func (s *Scheduler) AgentState(a store.Agent, now time.Time) (state string, until *time.Time) {
	after := s.cfg.QuarantineAfter
	if after <= 0 || a.ErrorStreak < after || a.LastErrorAt == nil {
		return AgentOK, nil
	}
	window := s.cfg.QuarantineFor
	for i := after; i < a.ErrorStreak && window < s.cfg.QuarantineMax; i++ {
		window *= 2
	}
	window = min(window, max(s.cfg.QuarantineMax, s.cfg.QuarantineFor))
	end := a.LastErrorAt.Add(window)
	if now.Before(end) {
		return AgentQuarantined, &end
	}
	return AgentProbing, &end
}

// mayClaim says whether the agent may be given a job now: not while it is
// quarantined, and only one at a time while it is probing.
func (s *Scheduler) mayClaim(ctx context.Context, agentID string) (bool, error) {
	r, err := s.store.AgentRecord(ctx, agentID)
	if err != nil {
		return false, err
	}
	switch state, _ := s.AgentState(r.Agent, time.Now()); state {
	case AgentQuarantined:
		return false, nil
	case AgentProbing:
		return r.Running == 0, nil
	}
	return true, nil
}

// retryElsewhere is the claim's RetryElsewhere: the configured wait while
// another live agent that is not quarantined exists (one that may take a
// job this agent's last attempt failed), else 0 so that a lone agent is
// never kept from a job.
func (s *Scheduler) retryElsewhere(ctx context.Context, agentID string, aliveWithin time.Duration) (time.Duration, error) {
	if s.cfg.RetryElsewhere <= 0 {
		return 0, nil
	}
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	for _, a := range agents {
		if a.ID == agentID || now.Sub(a.LastSeen) > aliveWithin {
			continue
		}
		if state, _ := s.AgentState(*a, now); state != AgentQuarantined {
			return s.cfg.RetryElsewhere, nil
		}
	}
	return 0, nil
}

// AgentStates counts registered agents by state, for the kiln_agents gauge.
func (s *Scheduler) AgentStates(ctx context.Context) (map[string]int, error) {
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int{AgentOK: 0, AgentQuarantined: 0, AgentProbing: 0}
	now := time.Now()
	for _, a := range agents {
		state, _ := s.AgentState(*a, now)
		out[state]++
	}
	return out, nil
}

// AgentAttemptEnded logs an agent's entry into quarantine after one of its
// attempts ended (called by the agent protocol and the reaper).
func (s *Scheduler) AgentAttemptEnded(ctx context.Context, agentID string) {
	if agentID == "" {
		return
	}
	r, err := s.store.AgentRecord(ctx, agentID)
	if err != nil {
		return
	}
	if state, until := s.AgentState(r.Agent, time.Now()); state == AgentQuarantined {
		s.metrics.AgentsQuarantined.Inc()
		s.log.Warn("agent quarantined: its attempts keep ending in infrastructure errors; it gets no jobs until the window passes, then one job as a probe",
			"agent", agentID, "consecutive_errors", r.ErrorStreak, "until", until.UTC().Format(time.RFC3339))
	}
}
