package pipeline

import (
	"errors"
	"strings"
	"testing"
)

// A job asking for more than any agent allows is refused with an error at
// the value that asked: the job's own, or the top level's it inherited.
func TestCheckLimits(t *testing.T) {
	const file = `image: alpine
resources:
  memory: 1t
  pids: 4194304
jobs:
  small:
    resources: {memory: 64m, pids: 64}
    steps: [{run: "true"}]
  big:
    resources:
      cpus: 64
    steps: [{run: "true"}]
  gpu:
    runs-on: [gpu]
    resources: {memory: 64m, pids: 64, cpus: 4}
    steps: [{run: "true"}]
`
	p, err := Parse(".kiln.yml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	maxes := func(runsOn []string) []Resources {
		if len(runsOn) > 0 { // two gpu agents, neither allowing 4 CPUs with 64m
			return []Resources{{CPUs: 8, MemoryBytes: 32 << 20, Pids: 100}, {CPUs: 2, MemoryBytes: 1 << 30, Pids: 100}}
		}
		return []Resources{DefaultLimits}
	}
	err = p.CheckLimits(".kiln.yml", maxes)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %v, want Errors", err)
	}
	got := err.Error()
	want := []string{
		".kiln.yml:3:11: resources.memory: asks for 1t, more than any agent allows (at most 2g)",
		".kiln.yml:4:9: resources.pids: asks for 4194304, more than any agent allows (at most 1024)",
		".kiln.yml:11:13: jobs.big.resources.cpus: asks for 64, more than any agent allows (at most 2)",
		".kiln.yml:15:25: jobs.gpu.resources.memory: asks for 64m, more than any agent with labels gpu allows (at most 32m)",
	}
	lines := strings.Split(got, "\n")
	if len(lines) != len(want) {
		t.Fatalf("got:\n%s", got)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %s\nwant %s…", i, lines[i], w)
		}
	}

	// Within the limits: nothing to say.
	ok, err := Parse(".kiln.yml", []byte("image: alpine\nresources: {memory: 512m, cpus: 0.5}\nsteps: [{run: \"true\"}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ok.CheckLimits(".kiln.yml", maxes); err != nil {
		t.Errorf("within the limits: %v", err)
	}
}
