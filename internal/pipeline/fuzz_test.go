package pipeline

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that a failure is a
// well-formed Errors, and that a success compiles to runnable jobs. Its seed
// corpus is testdata/fuzz/FuzzParse; run it with
//
//	go test -run='^$' -fuzz=FuzzParse -fuzztime=30s ./internal/pipeline
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(".kiln.yml", data)
		if err != nil {
			checkErrors(t, p, err)
			return
		}
		jobs := p.Compile()
		if len(jobs) == 0 {
			t.Fatal("valid pipeline compiled to no jobs")
		}
		// Every refusal of the limits check is located at a value the file wrote.
		tiny := Resources{CPUs: 0.1, MemoryBytes: 4 << 20, Pids: 16}
		if err := p.CheckLimits(".kiln.yml", func([]string) []Resources { return []Resources{tiny} }); err != nil {
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("CheckLimits: %v is not Errors", err)
			}
			for _, e := range es {
				if e.Line < 1 || e.Col < 1 || !strings.Contains(e.Field, "resources.") {
					t.Errorf("CheckLimits: unlocated %q", e)
				}
			}
		}
		names := map[string]bool{}
		for _, j := range jobs {
			if names[j.Name] {
				t.Errorf("job %q compiled twice", j.Name)
			}
			names[j.Name] = true
			if j.Image == "" || ImageHost(j.Image) == "" {
				t.Errorf("job %q has no image, or one that is not a reference: %q", j.Name, j.Image)
			}
			switch j.Pull {
			case PullIfNotPresent, PullAlways, PullNever:
			default:
				t.Errorf("job %q: pull policy %q", j.Name, j.Pull)
			}
			if len(j.Steps) == 0 {
				t.Errorf("job %q has no steps", j.Name)
			}
			if j.TimeoutSeconds <= 0 || j.TimeoutSeconds > int(MaxJobTimeout.Seconds()) {
				t.Errorf("job %q has timeout %ds", j.Name, j.TimeoutSeconds)
			}
			for i, s := range j.Steps {
				if strings.TrimSpace(s.Run) == "" || s.Name == "" {
					t.Errorf("job %q step %d is %+v", j.Name, i, s)
				}
			}
		}
		if _, err := json.Marshal(jobs); err != nil {
			t.Errorf("JobSpecs do not marshal: %v", err)
		}
	})
}

func checkErrors(t *testing.T, p *Pipeline, err error) {
	t.Helper()
	if p != nil {
		t.Fatal("Parse returned both a pipeline and an error")
	}
	var errs Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("error is %T %v, want a non-empty Errors", err, err)
	}
	for i, e := range errs {
		if e.File != ".kiln.yml" || e.Line < 1 || e.Col < 1 || e.Msg == "" {
			t.Errorf("malformed error %+v", e)
		}
		if i > 0 && (e.Line < errs[i-1].Line || e.Line == errs[i-1].Line && e.Col < errs[i-1].Col) {
			t.Errorf("errors not sorted: %v before %v", errs[i-1], e)
		}
	}
}
