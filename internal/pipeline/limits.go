package pipeline

import (
	"fmt"
	"strconv"
	"strings"
)

// Exceeds lists the fields of r that ask for more than max allows, by their
// names in the file ("cpus", "memory", "pids", "disk"). A zero field of r asks for
// the agent's default, which never exceeds its maximum; a zero field of max
// sets no maximum.
func (r Resources) Exceeds(max Resources) []string {
	var over []string
	if max.CPUs > 0 && r.CPUs > max.CPUs {
		over = append(over, "cpus")
	}
	if max.MemoryBytes > 0 && r.MemoryBytes > max.MemoryBytes {
		over = append(over, "memory")
	}
	if max.Pids > 0 && r.Pids > max.Pids {
		over = append(over, "pids")
	}
	if max.DiskBytes > 0 && r.DiskBytes > max.DiskBytes {
		over = append(over, "disk")
	}
	return over
}

// Describe renders one field of r the way a file may write it.
func (r Resources) Describe(field string) string {
	switch field {
	case "cpus":
		return strconv.FormatFloat(r.CPUs, 'g', -1, 64)
	case "memory":
		return formatSize(r.MemoryBytes)
	case "pids":
		return strconv.FormatInt(r.Pids, 10)
	case "disk":
		return formatSize(r.DiskBytes)
	}
	return ""
}

// String renders the set fields of r, e.g. "cpus 2, memory 2g, pids 1024".
func (r Resources) String() string {
	var parts []string
	for _, f := range resourcesKeys {
		if v := r.Describe(f); v != "" && v != "0" {
			parts = append(parts, f+" "+v)
		}
	}
	if len(parts) == 0 {
		return "no limits"
	}
	return strings.Join(parts, ", ")
}

// CheckLimits checks every job's resources, as Compile computes them,
// against the maximums of the agents that may run it: maxes(runsOn) lists
// one Resources per such agent. A job fits when one agent's maximums cover
// every field it asks for; a job that fits none gets one located error per
// field over the closest agent's maximum, at the place in the file that set
// the value (the job's resources or the top level's). It returns nil or an
// Errors, sorted by position.
func (p *Pipeline) CheckLimits(filename string, maxes func(runsOn []string) []Resources) error {
	if p == nil {
		return nil
	}
	var errs Errors
	specs := p.Compile()
	for i, spec := range specs {
		cands := maxes(spec.RunsOn)
		var best []string
		var bestMax Resources
		fits := false
		for k, m := range cands {
			over := spec.Resources.Exceeds(m)
			if len(over) == 0 {
				fits = true
				break
			}
			if k == 0 || len(over) < len(best) {
				best, bestMax = over, m
			}
		}
		if fits || len(cands) == 0 {
			continue
		}
		j := p.Jobs[i]
		for _, f := range best {
			at, ok := j.resourcesAt[f]
			if !ok {
				at = p.resourcesAt[f]
			}
			who := "any agent"
			if len(spec.RunsOn) > 0 {
				who = fmt.Sprintf("any agent with labels %s", strings.Join(spec.RunsOn, ", "))
			}
			errs = append(errs, &Error{File: filename, Line: max(at.line, 1), Col: max(at.col, 1), Field: at.field,
				Msg: fmt.Sprintf("asks for %s, more than %s allows (at most %s): ask for less, or raise the agents' limits", spec.Resources.Describe(f), who, bestMax.Describe(f))})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs.normalize()
}

// DefaultLimits are an agent's limits unless it is configured otherwise
// (kiln agent -cpus, -memory, -pids, -disk): a job that asks for nothing
// gets them, and none may ask for more.
var DefaultLimits = Resources{CPUs: 2, MemoryBytes: 2 << 30, Pids: 1024, DiskBytes: 10 << 30}
