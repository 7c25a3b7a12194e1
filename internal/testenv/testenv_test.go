package testenv

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skip and Fatal instead of
// stopping the test.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Skip(args ...any)          { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatal(args ...any)         { r.fatal = fmt.Sprint(args...) }
func (r *recorder) Skipf(f string, a ...any)  { r.skipped = fmt.Sprintf(f, a...) }
func (r *recorder) Fatalf(f string, a ...any) { r.fatal = fmt.Sprintf(f, a...) }

func TestEngines(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		docker, podman, strict string
		want                   []Engine
		skip, fatal            bool
	}{
		{name: "both", docker: "unix:///d.sock", podman: "unix:///p.sock",
			want: []Engine{{"docker", "unix:///d.sock"}, {"podman", "unix:///p.sock"}}},
		{name: "podman only", podman: "unix:///p.sock", want: []Engine{{"podman", "unix:///p.sock"}}},
		{name: "none skips", skip: true},
		{name: "none required fails", strict: "1", fatal: true},
		{name: "required and set", strict: "1", docker: "unix:///d.sock", want: []Engine{{"docker", "unix:///d.sock"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvDockerHost, tc.docker)
			t.Setenv(EnvPodmanHost, tc.podman)
			t.Setenv(EnvRequireEngines, tc.strict)
			r := &recorder{TB: t}
			got := Engines(r)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Engines = %v, want %v", got, tc.want)
			}
			if (r.skipped != "") != tc.skip || (r.fatal != "") != tc.fatal {
				t.Errorf("skipped %q, fatal %q; want skip=%v fatal=%v", r.skipped, r.fatal, tc.skip, tc.fatal)
			}
			if msg := r.skipped + r.fatal; msg != "" && !strings.Contains(msg, "scripts/engines.sh --env") {
				t.Errorf("message %q does not say how to set the engines up", msg)
			}
		})
	}
}
