package main

import (
	"bytes"
	"strings"
	"testing"
)

// makeRepo's commits are distinct, one after the other on main, each
// with the pipeline file: every delivery pushes a commit of its own that
// the planner can read.
func TestMakeRepo(t *testing.T) {
	r, err := makeRepo(t.TempDir(), 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range r.commits {
		if len(c) != 40 || seen[c] {
			t.Fatalf("commits %v: want 5 distinct ids", r.commits)
		}
		seen[c] = true
	}
	var out bytes.Buffer
	if err := git(r.dir, nil, &out, "rev-list", "--reverse", "main"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(out.String()); len(got) != 6 || strings.Join(got[1:], " ") != strings.Join(r.commits, " ") {
		t.Fatalf("main is %v, want the first commit then %v", got, r.commits)
	}
	out.Reset()
	if err := git(r.dir, nil, &out, "show", r.commits[4]+":.kiln.yml"); err != nil || out.String() != pipelineFile {
		t.Fatalf(".kiln.yml at the last commit: %q, %v", out.String(), err)
	}
}
