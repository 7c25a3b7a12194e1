package pipeline

import (
	"reflect"
	"strings"
	"testing"
)

func TestArtifactsValid(t *testing.T) {
	src := `image: img
artifacts: [dist/]
jobs:
  inherit:
    steps: [make]
  own:
    artifacts:
      paths: ["build/**/*.xml", "!build/tmp", report.txt]
      when: always
      expire-in: 2w
    steps: [make]
  short:
    artifacts:
      paths: [out]
      expire-in: 90m
    steps: [make]
`
	p, err := Parse(".kiln.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	specs := p.Compile()
	want := []*ArtifactSpec{
		{Paths: []string{"dist/"}, When: ArtifactsOnSuccess},
		{Paths: []string{"build/**/*.xml", "!build/tmp", "report.txt"}, When: ArtifactsAlways, ExpireInSeconds: 14 * 24 * 3600},
		{Paths: []string{"out"}, When: ArtifactsOnSuccess, ExpireInSeconds: 90 * 60},
	}
	for i, w := range want {
		if !reflect.DeepEqual(specs[i].Artifacts, w) {
			t.Errorf("job %s: artifacts = %+v, want %+v", specs[i].Name, specs[i].Artifacts, w)
		}
	}
	// The compiled spec shares no memory with the pipeline.
	specs[0].Artifacts.Paths[0] = "changed"
	if p.Artifacts.Paths[0] != "dist/" {
		t.Error("Compile shares the artifacts' paths")
	}
	if specs := mustCompile(t, "image: img\nsteps: [make]\n"); specs[0].Artifacts != nil {
		t.Errorf("no artifacts: %+v", specs[0].Artifacts)
	}
}

func mustCompile(t *testing.T, src string) []JobSpec {
	t.Helper()
	p, err := Parse(".kiln.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p.Compile()
}

func TestArtifactsWanted(t *testing.T) {
	for _, tc := range []struct {
		when     string
		ok, fail bool
	}{{"", true, false}, {ArtifactsOnSuccess, true, false}, {ArtifactsOnFailure, false, true}, {ArtifactsAlways, true, true}} {
		a := &ArtifactSpec{Paths: []string{"x"}, When: tc.when}
		if a.Wanted(true) != tc.ok || a.Wanted(false) != tc.fail {
			t.Errorf("when %q: wanted(success) %v, wanted(failure) %v", tc.when, a.Wanted(true), a.Wanted(false))
		}
	}
	var none *ArtifactSpec
	if none.Wanted(true) {
		t.Error("nil spec wanted")
	}
}

func TestArtifactsErrors(t *testing.T) {
	many := "[" + strings.Repeat("a,", MaxArtifactPaths) + "a]"
	cases := []struct{ artifacts, want string }{
		{`[/abs]`, `.kiln.yml:3:13: artifacts[0]: "/abs": must be relative to the workspace, not absolute`},
		{`[a/../../etc]`, `.kiln.yml:3:13: artifacts[0]: "a/../../etc": must not contain ".."`},
		{`["a/[b"]`, `.kiln.yml:3:13: artifacts[0]: "a/[b": malformed pattern "[b"`},
		{`[""]`, `.kiln.yml:3:13: artifacts[0]: "": must not be empty`},
		{`[]`, `.kiln.yml:3:12: artifacts: at least one path is required`},
		{many, `.kiln.yml:3:12: artifacts: 101 paths: at most 100`},
		{`["!x"]`, `.kiln.yml:3:12: artifacts: every path excludes`},
		{`[[a]]`, `.kiln.yml:3:13: artifacts[0]: expected a path, got a sequence`},
		{`dist`, `.kiln.yml:3:12: artifacts: expected a mapping, got a string`},
		{`{when: always}`, `.kiln.yml:3:12: artifacts.paths: required`},
		{`{paths: [a], when: sometimes}`, `.kiln.yml:3:31: artifacts.when: "sometimes": want on_success, on_failure or always`},
		{`{paths: [a], expire-in: soon}`, `.kiln.yml:3:36: artifacts.expire-in: invalid duration "soon"`},
		{`{paths: [a], expire-in: 10s}`, `.kiln.yml:3:36: artifacts.expire-in: must be at least 1m`},
		{`{paths: [a], expire-in: 400d}`, `.kiln.yml:3:36: artifacts.expire-in: must be at most 365d`},
		{`{paths: [a], expire_in: 1d}`, `.kiln.yml:3:25: artifacts: unknown key "expire_in" (did you mean "expire-in"?)`},
	}
	for _, tc := range cases {
		src := "image: img\nsteps: [make]\nartifacts: " + tc.artifacts + "\n"
		_, err := Parse(".kiln.yml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("artifacts: %s\n got: %v\nwant: %s", tc.artifacts, err, tc.want)
		}
	}
}
