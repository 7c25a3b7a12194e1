package pipeline

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func jobsFile(n int) []byte {
	var b strings.Builder
	b.WriteString("image: alpine\njobs:\n")
	for i := range n {
		fmt.Fprintf(&b, "  j%d:\n    steps: [make]\n", i)
	}
	return []byte(b.String())
}

// A file with more jobs than the limit gets one located error, at the
// first job past it; the default limit is DefaultMaxJobs.
func TestMaxJobs(t *testing.T) {
	if _, err := ParseLimits(".kiln.yml", jobsFile(3), Limits{MaxJobs: 3}); err != nil {
		t.Fatalf("3 jobs at a limit of 3: %v", err)
	}
	_, err := ParseLimits(".kiln.yml", jobsFile(5), Limits{MaxJobs: 3})
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("5 jobs at a limit of 3: %v", err)
	}
	want := ".kiln.yml:9:3: jobs.j3: job 4 of 5: a pipeline may define at most 3 jobs (the server's -max-jobs-per-build); split the work into fewer, larger jobs"
	if es[0].Error() != want {
		t.Fatalf("error\n%s\nwant\n%s", es[0], want)
	}
	p, err := Parse(".kiln.yml", jobsFile(DefaultMaxJobs))
	if err != nil || len(p.Compile()) != DefaultMaxJobs {
		t.Fatalf("%d jobs by default: %v", DefaultMaxJobs, err)
	}
	if _, err := Parse(".kiln.yml", jobsFile(DefaultMaxJobs+1)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("jobs.j%d: job %d of %d", DefaultMaxJobs, DefaultMaxJobs+1, DefaultMaxJobs+1)) {
		t.Fatalf("%d jobs by default: %v", DefaultMaxJobs+1, err)
	}
}
