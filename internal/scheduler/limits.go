package scheduler

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/store"
)

// checkLimits refuses, with located errors, a pipeline with a job that no
// agent can give the resources it asks for. The agents are every agent the
// store knows (live or not: one may be restarting) that carries the job's
// labels; while there is none, the job is checked against cfg.DefaultMax
// (the agents' default limits), so a file asking for more than a default
// agent allows is refused before any agent registered.
func (s *Scheduler) checkLimits(ctx context.Context, pl *pipeline.Pipeline) error {
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return err
	}
	return pl.CheckLimits(PipelineFile, func(runsOn []string) []pipeline.Resources {
		return s.maxesFor(agents, runsOn)
	})
}

// maxesFor lists the limits of the agents that carry every label of runsOn,
// or cfg.DefaultMax when none does.
func (s *Scheduler) maxesFor(agents []*store.Agent, runsOn []string) []pipeline.Resources {
	var out []pipeline.Resources
	for _, a := range agents {
		if !hasAll(a.Labels, runsOn) {
			continue
		}
		out = append(out, s.agentMax(a.Max))
	}
	if len(out) == 0 {
		out = append(out, s.cfg.DefaultMax)
	}
	return out
}

// agentMax decodes an agent's reported limits; a field it did not report
// is cfg.DefaultMax's.
func (s *Scheduler) agentMax(raw string) pipeline.Resources {
	var m pipeline.Resources
	if raw != "" {
		_ = json.Unmarshal([]byte(raw), &m)
	}
	return s.withDefaults(m)
}

func (s *Scheduler) withDefaults(m pipeline.Resources) pipeline.Resources {
	d := s.cfg.DefaultMax
	if m.CPUs <= 0 {
		m.CPUs = d.CPUs
	}
	if m.MemoryBytes <= 0 {
		m.MemoryBytes = d.MemoryBytes
	}
	if m.Pids <= 0 {
		m.Pids = d.Pids
	}
	if m.DiskBytes <= 0 {
		m.DiskBytes = d.DiskBytes
	}
	return m
}

// CheckResources reports whether some known agent carrying labels can give
// a sandbox r (the planner's rule, for a GitHub Actions pool's resources).
// It returns the limits of the closest agent when none can.
func (s *Scheduler) CheckResources(ctx context.Context, labels []string, r pipeline.Resources) (ok bool, closest pipeline.Resources, over []string, err error) {
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return false, closest, nil, err
	}
	for i, m := range s.maxesFor(agents, labels) {
		o := r.Exceeds(m)
		if len(o) == 0 {
			return true, m, nil, nil
		}
		if i == 0 || len(o) < len(over) {
			closest, over = m, o
		}
	}
	return false, closest, over, nil
}

// fits is the claim's test of a job's resources against an agent's limits.
func (s *Scheduler) fits(max pipeline.Resources) func([]byte) bool {
	max = s.withDefaults(max)
	return func(raw []byte) bool {
		var r pipeline.Resources
		if len(raw) > 0 && json.Unmarshal(raw, &r) != nil {
			return true // not ours to judge: the agent refuses it clearly
		}
		return len(r.Exceeds(max)) == 0
	}
}

func hasAll(have, need []string) bool {
	for _, n := range need {
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}
