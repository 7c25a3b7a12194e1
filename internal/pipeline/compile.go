package pipeline

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// Compile turns a validated pipeline into the jobs to run, in file order,
// with the top-level settings applied: a job's image, pull policy, timeout and runs-on
// replace the top level's; its resources override field by field; its env
// is merged over the top level's (the job's value wins). A job with no
// timeout anywhere gets DefaultJobTimeout.
//
// The JobSpecs share no memory with p or with each other.
func (p *Pipeline) Compile() []JobSpec {
	if p == nil {
		return nil
	}
	specs := make([]JobSpec, 0, len(p.Jobs))
	for _, j := range p.Jobs {
		spec := JobSpec{
			Name:           j.Name,
			Image:          cmp.Or(j.Image, p.Image),
			Pull:           cmp.Or(j.Pull, p.Pull, PullIfNotPresent),
			Env:            mergeEnv(p.Env, j.Env),
			Steps:          slices.Clone(j.Steps),
			TimeoutSeconds: timeoutSeconds(cmp.Or(j.Timeout, p.Timeout, DefaultJobTimeout)),
			RunsOn:         slices.Clone(j.RunsOn),
			Resources: Resources{
				CPUs:        cmp.Or(j.Resources.CPUs, p.Resources.CPUs),
				MemoryBytes: cmp.Or(j.Resources.MemoryBytes, p.Resources.MemoryBytes),
				Pids:        cmp.Or(j.Resources.Pids, p.Resources.Pids),
				DiskBytes:   cmp.Or(j.Resources.DiskBytes, p.Resources.DiskBytes),
			},
		}
		if j.RunsOn == nil {
			spec.RunsOn = slices.Clone(p.RunsOn)
		}
		caches := j.Caches
		if caches == nil {
			caches = p.Caches
		}
		for _, c := range caches {
			c.RestoreKeys, c.Paths = slices.Clone(c.RestoreKeys), slices.Clone(c.Paths)
			spec.Caches = append(spec.Caches, c)
		}
		if a := cmp.Or(j.Artifacts, p.Artifacts); a != nil {
			spec.Artifacts = &ArtifactSpec{Paths: slices.Clone(a.Paths), When: cmp.Or(a.When, ArtifactsOnSuccess), ExpireInSeconds: a.ExpireInSeconds}
		}
		specs = append(specs, spec)
	}
	return specs
}

func mergeEnv(base, over map[string]string) map[string]string {
	if len(base)+len(over) == 0 {
		return nil
	}
	env := maps.Clone(base)
	if env == nil {
		env = make(map[string]string, len(over))
	}
	maps.Copy(env, over)
	return env
}

// timeoutSeconds rounds up, so that a sub-second timeout is still > 0.
func timeoutSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
