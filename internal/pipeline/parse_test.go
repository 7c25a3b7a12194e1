package pipeline

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// job is a JobSpec with the defaults a test does not care about filled in,
// so each case spells out only what it checks.
func job(name, image string, steps ...StepSpec) JobSpec {
	return JobSpec{Name: name, Image: image, Steps: steps, TimeoutSeconds: int(DefaultJobTimeout / time.Second)}
}

func step(name, run string) StepSpec { return StepSpec{Name: name, Run: run} }

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []JobSpec
	}{
		{
			name: "full format with inheritance",
			yaml: `
image: localhost/kiln/busybox:latest   # default image for all jobs
env:
  GREETING: hello
  SHARED: top
timeout: 30m
resources: {cpus: 2, memory: 2g, pids: 1024}
jobs:
  test:
    image: localhost/kiln/golang:1.26
    env: {GREETING: hi, ONLY_TEST: "1"}
    timeout: 10m
    runs-on: [linux, amd64]
    resources: {memory: 512m}
    steps:
      - name: unit tests
        run: go test ./...
      - run: |
          echo one
          echo two
      - echo done
  lint:
    runs-on: linux
    steps:
      - golangci-lint run
`,
			want: []JobSpec{
				{
					Name:           "test",
					Image:          "localhost/kiln/golang:1.26",
					Env:            map[string]string{"GREETING": "hi", "SHARED": "top", "ONLY_TEST": "1"},
					TimeoutSeconds: 600,
					RunsOn:         []string{"linux", "amd64"},
					Resources:      Resources{CPUs: 2, MemoryBytes: 512 << 20, Pids: 1024},
					Steps: []StepSpec{
						step("unit tests", "go test ./..."),
						step("echo one", "echo one\necho two\n"),
						step("echo done", "echo done"),
					},
				},
				{
					Name:           "lint",
					Image:          "localhost/kiln/busybox:latest",
					Env:            map[string]string{"GREETING": "hello", "SHARED": "top"},
					TimeoutSeconds: 1800,
					RunsOn:         []string{"linux"},
					Resources:      Resources{CPUs: 2, MemoryBytes: 2 << 30, Pids: 1024},
					Steps:          []StepSpec{step("golangci-lint run", "golangci-lint run")},
				},
			},
		},
		{
			name: "steps shorthand is one job named build",
			yaml: "image: alpine\nsteps:\n  - make\n  - make test\n",
			want: []JobSpec{job("build", "alpine", step("make", "make"), step("make test", "make test"))},
		},
		{
			name: "jobs keep file order",
			yaml: "image: i\njobs:\n  zeta: {steps: [z]}\n  alpha: {steps: [a]}\n  mid-1_x: {steps: [m]}\n",
			want: []JobSpec{
				job("zeta", "i", step("z", "z")),
				job("alpha", "i", step("a", "a")),
				job("mid-1_x", "i", step("m", "m")),
			},
		},
		{
			name: "default step name is the first non-blank line, trimmed, cut to 60 characters",
			yaml: `image: i
steps:
  - run: |

      ./configure --prefix=/usr --with-everything --enable-this --enable-that
      make
  - run: "   spaced   \n second"
  - "` + strings.Repeat("é", 64) + `"
  - name: "  given  "
    run: x
`,
			want: []JobSpec{job("build", "i",
				step("./configure --prefix=/usr --with-everything --enable-this --",
					"\n./configure --prefix=/usr --with-everything --enable-this --enable-that\nmake\n"),
				step("spaced", "   spaced   \n second"),
				step(strings.Repeat("é", 60), strings.Repeat("é", 64)),
				step("given", "x"),
			)},
		},
		{
			name: "env values are scalars taken as written",
			yaml: `image: i
env:
  INT: 010
  FLOAT: 1.50
  BOOL: yes
  TRUE: true
  EMPTY:
  TILDE: ~
  QUOTED: "a: b"
  _under: x
steps: [env]
`,
			want: []JobSpec{func() JobSpec {
				j := job("build", "i", step("env", "env"))
				j.Env = map[string]string{"INT": "010", "FLOAT": "1.50", "BOOL": "yes", "TRUE": "true",
					"EMPTY": "", "TILDE": "", "QUOTED": "a: b", "_under": "x"}
				return j
			}()},
		},
		{
			name: "units: memory, cpus, durations",
			yaml: `image: i
jobs:
  a: {resources: {memory: 1073741824, cpus: 0.5, pids: 16}, timeout: 1h30m, steps: [x]}
  b: {resources: {memory: 1.5g, cpus: "64"}, timeout: 90s, steps: [x]}
  c: {resources: {memory: 2GiB}, timeout: 1500ms, steps: [x]}
  d: {resources: {memory: 4m}, timeout: 24h, steps: [x]}
  e: {resources: {memory: 8192k}, steps: [x]}
`,
			want: func() []JobSpec {
				a := job("a", "i", step("x", "x"))
				a.Resources, a.TimeoutSeconds = Resources{MemoryBytes: 1 << 30, CPUs: 0.5, Pids: 16}, 5400
				b := job("b", "i", step("x", "x"))
				b.Resources, b.TimeoutSeconds = Resources{MemoryBytes: 3 << 29, CPUs: 64}, 90
				c := job("c", "i", step("x", "x"))
				c.Resources, c.TimeoutSeconds = Resources{MemoryBytes: 2 << 30}, 2 // rounded up
				d := job("d", "i", step("x", "x"))
				d.Resources, d.TimeoutSeconds = Resources{MemoryBytes: 4 << 20}, 86400
				e := job("e", "i", step("x", "x"))
				e.Resources = Resources{MemoryBytes: 8 << 20}
				return []JobSpec{a, b, c, d, e}
			}(),
		},
		{
			name: "runs-on: top level is the default, a job's replaces it, duplicates dropped",
			yaml: `image: i
runs-on: [linux, linux, amd64]
jobs:
  a: {steps: [x]}
  b: {runs-on: gpu, steps: [x]}
`,
			want: func() []JobSpec {
				a := job("a", "i", step("x", "x"))
				a.RunsOn = []string{"linux", "amd64"}
				b := job("b", "i", step("x", "x"))
				b.RunsOn = []string{"gpu"}
				return []JobSpec{a, b}
			}(),
		},
		{
			name: "anchors, aliases, merge keys and x- extension keys",
			yaml: `x-defaults: &defaults
  image: golang:1.26
  env: &env {A: "1", B: "2"}
  timeout: 5m
x-steps: &steps
  - go test ./...
jobs:
  a:
    <<: *defaults
    steps: *steps
  b:
    <<: [*defaults, {image: other, runs-on: gpu}]
    image: mine
    env:
      <<: *env
      B: three
    steps: *steps
`,
			want: func() []JobSpec {
				a := job("a", "golang:1.26", step("go test ./...", "go test ./..."))
				a.Env, a.TimeoutSeconds = map[string]string{"A": "1", "B": "2"}, 300
				b := job("b", "mine", step("go test ./...", "go test ./..."))
				b.Env, b.TimeoutSeconds = map[string]string{"A": "1", "B": "three"}, 300
				b.RunsOn = []string{"gpu"}
				return []JobSpec{a, b}
			}(),
		},
		{
			name: "CRLF line endings",
			yaml: "image: i\r\nenv:\r\n  A: b\r\nsteps:\r\n  - run: |\r\n      echo a\r\n      echo b\r\n",
			want: []JobSpec{func() JobSpec {
				j := job("build", "i", step("echo a", "echo a\necho b\n"))
				j.Env = map[string]string{"A": "b"}
				return j
			}()},
		},
		{
			name: "UTF-8 BOM",
			yaml: "\xef\xbb\xbfimage: i\nsteps: [x]\n",
			want: []JobSpec{job("build", "i", step("x", "x"))},
		},
		{
			name: "tabs as separators and inside scripts",
			yaml: "image:\ti\t# comment\nsteps:\n  - run: |\n      printf 'a\\tb'\n      \tindented with a tab\n  - name:\tt\n    run:\tx\n",
			want: []JobSpec{job("build", "i",
				step("printf 'a\\tb'", "printf 'a\\tb'\n\tindented with a tab\n"),
				step("t", "x"))},
		},
		{
			name: "explicit document markers and standard tags",
			yaml: "---\nimage: !!str i\nsteps: [!!str 123]\n...\n",
			want: []JobSpec{job("build", "i", step("123", "123"))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(".kiln.yml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkJobs(t, p.Compile(), tt.want)
		})
	}
}

// checkJobs compares compiled jobs field by field, so a failure names the
// field that differs.
func checkJobs(t *testing.T, got, want []JobSpec) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d jobs, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		check := func(field string, gv, wv any) {
			t.Helper()
			if !reflect.DeepEqual(gv, wv) {
				t.Errorf("job %d (%s): %s = %#v, want %#v", i, w.Name, field, gv, wv)
			}
		}
		check("Name", g.Name, w.Name)
		check("Image", g.Image, w.Image)
		check("Env", g.Env, w.Env)
		check("TimeoutSeconds", g.TimeoutSeconds, w.TimeoutSeconds)
		check("RunsOn", g.RunsOn, w.RunsOn)
		check("Resources", g.Resources, w.Resources)
		check("len(Steps)", len(g.Steps), len(w.Steps))
		for s := range min(len(g.Steps), len(w.Steps)) {
			check("Steps["+string(rune('0'+s))+"]", g.Steps[s], w.Steps[s])
		}
	}
}

func TestParseReturnsEveryProblemSorted(t *testing.T) {
	_, err := Parse("ci.yml", []byte(`jobs:
  b:
    steps: [{name: x}]
  a:
    timeout: nope
    steps: []
imgae: x
`))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse error is %T, want Errors", err)
	}
	want := []string{
		"ci.yml:2:3: jobs.b.image: required (set it on the job or at the top level)",
		"ci.yml:3:13: jobs.b.steps[0].run: required",
		"ci.yml:4:3: jobs.a.image: required (set it on the job or at the top level)",
		`ci.yml:5:14: jobs.a.timeout: invalid duration "nope": use a number with a unit, like 90s, 30m or 1h30m`,
		"ci.yml:6:12: jobs.a.steps: at least one step is required",
		`ci.yml:7:1: unknown key "imgae" (did you mean "image"?); allowed keys: image, pull, env, timeout, runs-on, resources, cache, artifacts, jobs, steps, and x-* extension keys`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if len(errs) != len(want) {
		t.Errorf("len(Errors) = %d, want %d", len(errs), len(want))
	}
	// One problem is reachable as an *Error with its parts.
	var one *Error
	if !errors.As(err, &one) || one.Line != 2 || one.Col != 3 || one.Field != "jobs.b.image" || one.File != "ci.yml" {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
}

func TestErrorRendering(t *testing.T) {
	withField := &Error{File: ".kiln.yml", Line: 7, Col: 5, Field: "jobs.test.steps[1].run", Msg: "required"}
	if got, want := withField.Error(), ".kiln.yml:7:5: jobs.test.steps[1].run: required"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	whole := &Error{File: "f.yml", Line: 1, Col: 1, Msg: "file is empty"}
	if got, want := whole.Error(), "f.yml:1:1: file is empty"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := (Errors{withField, whole}).Error(), withField.Error()+"\n"+whole.Error(); got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}

func TestCompileSharesNoMemory(t *testing.T) {
	p, err := Parse(".kiln.yml", []byte("image: i\nenv: {A: top}\nruns-on: [l]\njobs:\n  a: {steps: [x]}\n  b: {steps: [y]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	first := p.Compile()
	first[0].Env["A"] = "changed"
	first[0].RunsOn[0] = "changed"
	first[0].Steps[0].Run = "changed"
	second := p.Compile()
	if second[0].Env["A"] != "top" || second[1].Env["A"] != "top" || second[0].RunsOn[0] != "l" || second[0].Steps[0].Run != "x" {
		t.Errorf("changing one Compile result changed the pipeline: %+v", second)
	}
	if p.Env["A"] != "top" {
		t.Errorf("pipeline env changed: %v", p.Env)
	}
	if (*Pipeline)(nil).Compile() != nil {
		t.Error("nil Pipeline compiles to jobs")
	}
}

func TestCompileOmitsEmpty(t *testing.T) {
	p, err := Parse(".kiln.yml", []byte("image: i\nsteps: [x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	j := p.Compile()[0]
	if j.Env != nil || j.RunsOn != nil || j.Resources != (Resources{}) {
		t.Errorf("unset fields are not zero: %+v", j)
	}
}
