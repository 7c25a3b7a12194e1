package pipeline

import (
	"fmt"
	"strings"
	"testing"
)

// TestParseErrors holds one case per problem Parse reports, each asserting
// the exact rendered message, position included.
func TestParseErrors(t *testing.T) {
	const allowedTop = "allowed keys: image, pull, env, timeout, runs-on, resources, cache, artifacts, jobs, steps, and x-* extension keys"
	const allowedJob = "allowed keys: image, pull, env, timeout, runs-on, resources, cache, artifacts, steps"
	tests := []struct {
		name string
		yaml string
		want string
	}{
		// The document as a whole.
		{"empty file", "", `.kiln.yml:1:1: file is empty; a pipeline needs "jobs" (or "steps" for a single job)`},
		{"only comments", "# nothing here\n\n# yet\n", `.kiln.yml:1:1: file is empty; a pipeline needs "jobs" (or "steps" for a single job)`},
		{"only a document marker", "---\n", `.kiln.yml:1:1: file is empty; a pipeline needs "jobs" (or "steps" for a single job)`},
		{"second document", "image: i\nsteps: [x]\n---\nimage: j\n",
			`.kiln.yml:3:1: found a second YAML document; a pipeline file holds one document (remove the "---" separator)`},
		{"root is a sequence", "- image: i\n", ".kiln.yml:1:1: expected a mapping, got a sequence"},
		{"root is a string", "hello\n", ".kiln.yml:1:1: expected a mapping, got a string"},
		{"neither jobs nor steps", "image: i\n", `.kiln.yml:1:1: one of "jobs" or "steps" is required`},
		{"both jobs and steps", "image: i\njobs: {a: {steps: [x]}}\nsteps: [x]\n",
			`.kiln.yml:3:1: "jobs" and "steps" cannot both be set: use "jobs" for several jobs, or "steps" alone for one job named "build"`},

		// YAML syntax.
		{"syntax error on the first line", "a: b: c\n", ".kiln.yml:1:1: invalid YAML: mapping values are not allowed in this context"},
		{"syntax error reported by the parser", "image: i\nsteps:\n  - [a, b\n",
			".kiln.yml:3:1: invalid YAML: did not find expected ',' or ']'"},
		{"tab indentation", "image: i\nsteps:\n\t- x\n",
			".kiln.yml:3:1: invalid YAML: found character that cannot start any token (a tab cannot indent YAML; use spaces)"},
		{"control character", "image: i\nsteps: [\"a\x01\"]\n",
			".kiln.yml:2:11: invalid YAML: control characters are not allowed (only tab, CR and LF are)"},
		{"invalid UTF-8", "image: i\nsteps: [x]\nenv: {A: \xff}\n", ".kiln.yml:3:10: invalid YAML: invalid leading UTF-8 octet"},
		{"unknown alias", "image: i\nsteps: [*setup]\n",
			".kiln.yml:2:9: invalid YAML: alias *setup refers to no anchor &setup defined before it"},
		{"unsupported tag", "image: i\nsteps: [!reference [.setup, script]]\n", ".kiln.yml:2:9: steps[0]: unsupported YAML tag !reference\n" +
			".kiln.yml:2:9: steps[0]: expected a mapping or a string, got a sequence"},
		{"deep path is elided", "image: i\nsteps: [x]\nx-: " + strings.Repeat("[", 14) + "!a x" + strings.Repeat("]", 14) + "\n",
			".kiln.yml:3:19: x-[0][0][0][0][0]…[0][0][0][0][0][0]: unsupported YAML tag !a"},
		{"alias cycle", "image: i\nx-a: &a [*a]\nsteps: [x]\n", ".kiln.yml:2:10: x-a[0]: alias *a refers to a node that contains it"},
		{"duplicate top-level key", "image: i\nsteps: [x]\nimage: j\n", `.kiln.yml:3:1: image: duplicate key "image" (first defined at line 1)`},
		{"key that is not a scalar", "image: i\nsteps: [x]\n? [a]\n: b\n", ".kiln.yml:3:3: a mapping key must be a string, got a sequence"},
		{"merge of a non-mapping", "image: i\njobs:\n  a: {<<: [x], steps: [x]}\n",
			".kiln.yml:3:12: jobs.a.<<: a merge key takes a mapping or a list of mappings, got a string"},

		// Keys and kinds.
		{"unknown top-level key", "image: i\nsteps: [x]\nstep: [y]\n",
			`.kiln.yml:3:1: unknown key "step" (did you mean "steps"?); ` + allowedTop},
		{"unknown job key", "image: i\njobs:\n  a:\n    runs_on: linux\n    steps: [x]\n",
			`.kiln.yml:4:5: jobs.a: unknown key "runs_on" (did you mean "runs-on"?); ` + allowedJob},
		{"unknown step key", "image: i\nsteps:\n  - run: x\n    shell: bash\n",
			`.kiln.yml:4:5: steps[0]: unknown key "shell"; allowed keys: name, run`},
		{"unknown resources key", "image: i\nsteps: [x]\nresources: {swap: 1}\n",
			`.kiln.yml:3:13: resources: unknown key "swap"; allowed keys: cpus, memory, pids, disk`},
		{"disk too small", "image: i\nsteps: [x]\nresources: {disk: 512k}\n",
			`.kiln.yml:3:19: resources.disk: must be at least 1m (1048576 bytes)`},
		{"disk not a size", "image: i\nsteps: [x]\nresources: {disk: lots}\n",
			`.kiln.yml:3:19: resources.disk: invalid size "lots": use bytes, or a number with a unit k, m, g or t, like 512m or 2g`},
		{"jobs is a sequence", "image: i\njobs:\n  - a\n", ".kiln.yml:3:3: jobs: expected a mapping, got a sequence"},
		{"job is empty", "image: i\njobs:\n  a:\n", ".kiln.yml:3:5: jobs.a: expected a mapping, got an empty value"},
		{"steps is a mapping", "image: i\nsteps: {run: x}\n", ".kiln.yml:2:8: steps: expected a sequence, got a mapping"},
		{"step is a sequence", "image: i\nsteps:\n  - [a, b]\n", ".kiln.yml:3:5: steps[0]: expected a mapping or a string, got a sequence"},
		{"step is empty", "image: i\nsteps:\n  -\n", ".kiln.yml:3:4: steps[0]: expected a mapping or a string, got an empty value"},
		{"env is a string", "image: i\nenv: A=b\nsteps: [x]\n", ".kiln.yml:2:6: env: expected a mapping, got a string"},
		{"env value is a mapping", "image: i\nenv:\n  A: {b: c}\nsteps: [x]\n",
			".kiln.yml:3:6: env.A: expected a string, number or boolean, got a mapping"},
		{"image is a mapping", "image: {name: i}\nsteps: [x]\n", ".kiln.yml:1:8: image: expected a string, got a mapping"},
		{"run is a sequence", "image: i\nsteps:\n  - run: [a]\n", ".kiln.yml:3:10: steps[0].run: expected a string, got a sequence"},
		{"runs-on is a mapping", "image: i\nruns-on: {os: linux}\nsteps: [x]\n",
			".kiln.yml:2:10: runs-on: expected a string or a list of strings, got a mapping"},
		{"resources is a number", "image: i\nresources: 2\nsteps: [x]\n", ".kiln.yml:2:12: resources: expected a mapping, got a number"},

		// Required values.
		{"image missing for a job", "jobs:\n  test:\n    steps: [x]\n",
			".kiln.yml:2:3: jobs.test.image: required (set it on the job or at the top level)"},
		{"image missing for the shorthand", "steps: [x]\n", ".kiln.yml:1:1: image: required"},
		{"image empty", "image: \"\"\nsteps: [x]\n", ".kiln.yml:1:8: image: must not be empty"},
		{"image with a space", "image: alpine latest\nsteps: [x]\n", `.kiln.yml:1:8: image: invalid image reference "alpine latest": must not contain spaces`},
		{"no jobs", "image: i\njobs: {}\n", ".kiln.yml:2:7: jobs: at least one job is required"},
		{"job without steps", "image: i\njobs:\n  a:\n    timeout: 1m\n", ".kiln.yml:3:3: jobs.a.steps: required"},
		{"empty steps", "image: i\njobs:\n  a:\n    steps: []\n", ".kiln.yml:4:12: jobs.a.steps: at least one step is required"},
		{"run missing", "image: i\njobs:\n  test:\n    steps:\n      - run: a\n      - name: b\n",
			".kiln.yml:6:9: jobs.test.steps[1].run: required"},
		{"run empty", "image: i\nsteps:\n  - run: \"\"\n", ".kiln.yml:3:10: steps[0].run: must not be empty"},
		{"run blank", "image: i\nsteps:\n  - run: |\n      \n  - \"  \"\n",
			".kiln.yml:3:10: steps[0].run: must not be empty\n.kiln.yml:5:5: steps[1]: must not be empty"},
		{"step name empty", "image: i\nsteps:\n  - {name: \" \", run: x}\n",
			".kiln.yml:3:12: steps[0].name: must not be empty (leave name out to use the first line of run)"},
		{"step name on two lines", "image: i\nsteps:\n  - {name: \"a\\nb\", run: x}\n", ".kiln.yml:3:12: steps[0].name: must be a single line"},

		// Duplicates and names.
		{"duplicate job", "image: i\njobs:\n  a: {steps: [x]}\n  a: {steps: [y]}\n",
			`.kiln.yml:4:3: jobs.a: duplicate key "a" (first defined at line 3)`},
		{"duplicate env key", "image: i\nenv:\n  A: 1\n  A: 2\nsteps: [x]\n", `.kiln.yml:4:3: env.A: duplicate key "A" (first defined at line 3)`},
		{"job name with uppercase", "image: i\njobs:\n  Test: {steps: [x]}\n",
			`.kiln.yml:3:3: jobs.Test: invalid job name "Test": use 1 to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit`},
		{"job name starting with a dash", "image: i\njobs:\n  -x: {steps: [x]}\n",
			`.kiln.yml:3:3: jobs.-x: invalid job name "-x": use 1 to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit`},
		{"job name too long", "image: i\njobs:\n  " + strings.Repeat("a", 64) + ": {steps: [x]}\n",
			fmt.Sprintf(`.kiln.yml:3:3: jobs.%[1]s: invalid job name %[1]q: use 1 to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit`, strings.Repeat("a", 64))},
		{"env name invalid", "image: i\nenv:\n  1A: x\n  B-C: y\nsteps: [x]\n",
			".kiln.yml:3:3: env.1A: invalid variable name: use letters, digits and '_', not starting with a digit\n" +
				".kiln.yml:4:3: env.B-C: invalid variable name: use letters, digits and '_', not starting with a digit"},
		{"env name reserved", "image: i\njobs:\n  a:\n    env: {KILN_TOKEN: x}\n    steps: [x]\n",
			".kiln.yml:4:11: jobs.a.env.KILN_TOKEN: names starting with KILN_ are reserved for Kiln"},
		{"env value with NUL", "image: i\nenv: {A: \"a\\0b\"}\nsteps: [x]\n", ".kiln.yml:2:10: env.A: must not contain a NUL character"},
		{"runs-on empty list", "image: i\nruns-on: []\nsteps: [x]\n",
			".kiln.yml:2:10: runs-on: must not be empty (leave runs-on out to run on any agent)"},
		{"runs-on label with a space", "image: i\njobs:\n  a: {runs-on: [linux, \"big box\"], steps: [x]}\n",
			`.kiln.yml:3:24: jobs.a.runs-on[1]: invalid label "big box": must not contain spaces`},

		// Units and limits.
		{"timeout without unit", "image: i\ntimeout: 10\nsteps: [x]\n",
			`.kiln.yml:2:10: timeout: invalid duration "10": use a number with a unit, like 90s, 30m or 1h30m`},
		{"timeout zero", "image: i\ntimeout: 0s\nsteps: [x]\n", ".kiln.yml:2:10: timeout: must be greater than 0"},
		{"timeout negative", "image: i\njobs:\n  a: {timeout: -5m, steps: [x]}\n", ".kiln.yml:3:16: jobs.a.timeout: must be greater than 0"},
		{"timeout too long", "image: i\ntimeout: 24h1s\nsteps: [x]\n", ".kiln.yml:2:10: timeout: must be at most 24h"},
		{"cpus zero", "image: i\nresources: {cpus: 0}\nsteps: [x]\n", ".kiln.yml:2:19: resources.cpus: must be greater than 0 and at most 64"},
		{"cpus too many", "image: i\nresources: {cpus: 65}\nsteps: [x]\n", ".kiln.yml:2:19: resources.cpus: must be greater than 0 and at most 64"},
		{"cpus not a number", "image: i\nresources: {cpus: many}\nsteps: [x]\n",
			`.kiln.yml:2:19: resources.cpus: invalid number "many": use a number of CPUs like 2 or 0.5`},
		{"memory too small", "image: i\nresources: {memory: 1m}\nsteps: [x]\n",
			".kiln.yml:2:21: resources.memory: must be at least 4m (4194304 bytes)"},
		{"memory in bytes too small", "image: i\nresources: {memory: 512}\nsteps: [x]\n",
			".kiln.yml:2:21: resources.memory: must be at least 4m (4194304 bytes)"},
		{"memory unit unknown", "image: i\nresources: {memory: 2x}\nsteps: [x]\n",
			`.kiln.yml:2:21: resources.memory: invalid size "2x": use bytes, or a number with a unit k, m, g or t, like 512m or 2g`},
		{"memory too large", "image: i\nresources: {memory: 2t}\nsteps: [x]\n",
			".kiln.yml:2:21: resources.memory: must be at most 1t (1099511627776 bytes)"},
		{"pids too few", "image: i\nresources: {pids: 15}\nsteps: [x]\n", ".kiln.yml:2:19: resources.pids: must be at least 16 and at most 4194304"},
		{"pids not whole", "image: i\nresources: {pids: 1.5}\nsteps: [x]\n",
			`.kiln.yml:2:19: resources.pids: invalid number "1.5": use a whole number like 1024`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(".kiln.yml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", p.Compile())
			}
			if p != nil {
				t.Errorf("Parse returned a pipeline with an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	data := []byte("image: i\nsteps: [x]\n" + strings.Repeat("# padding\n", MaxFileSize/10))
	_, err := Parse("big.yml", data)
	want := fmt.Sprintf("big.yml:1:1: file is %d bytes; the limit is 1048576 (1 MiB)", len(data))
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	// Exactly at the limit is fine.
	if _, err := Parse("ok.yml", data[:MaxFileSize]); err != nil {
		t.Errorf("file of MaxFileSize bytes: %v", err)
	}
}

// An alias bomb ("billion laughs") of a few hundred bytes that would expand
// to 10^9 step names is refused without being expanded.
func TestParseAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("image: i\nx-0: &a0 [lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 10), ","))
	}
	b.WriteString("steps: *a9\n")
	_, err := Parse(".kiln.yml", []byte(b.String()))
	want := ".kiln.yml:9:6: x-7: aliases expand this value beyond the limit of 8388608 nodes and bytes (an alias bomb?)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}

	// The same through jobs that share a big step list: every job is small
	// on its own, together they are not.
	b.Reset()
	fmt.Fprintf(&b, "image: i\nx-s: &s {run: %q}\nx-l: &l [%s]\njobs:\n", strings.Repeat("s", 1000), strings.TrimSuffix(strings.Repeat("*s,", 1000), ","))
	for i := range 100 {
		fmt.Fprintf(&b, "  j%d: {steps: *l}\n", i)
	}
	_, err = Parse(".kiln.yml", []byte(b.String()))
	want = ".kiln.yml:5:3: jobs: aliases expand this value beyond the limit of 8388608 nodes and bytes (an alias bomb?)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
