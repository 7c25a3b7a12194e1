package pipeline

import (
	"strings"
	"testing"
)

func TestPullPolicy(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]string // job → policy
	}{
		{"image: a\nsteps: [x]\n", map[string]string{"build": PullIfNotPresent}},
		{"image: a\npull: never\nsteps: [x]\n", map[string]string{"build": PullNever}},
		{"image: a\npull: always\njobs:\n  a: {steps: [x]}\n  b: {pull: if-not-present, steps: [x]}\n  c: {pull: never, steps: [x]}\n",
			map[string]string{"a": PullAlways, "b": PullIfNotPresent, "c": PullNever}},
	} {
		p, err := Parse(".kiln.yml", []byte(tc.file))
		if err != nil {
			t.Fatalf("%q: %v", tc.file, err)
		}
		for _, j := range p.Compile() {
			if j.Pull != tc.want[j.Name] {
				t.Errorf("%q: job %s: pull %q, want %q", tc.file, j.Name, j.Pull, tc.want[j.Name])
			}
		}
	}
}

func TestPullPolicyErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"image: a\npull: sometimes\nsteps: [x]\n", `.kiln.yml:2:7: pull: "sometimes": want if-not-present, always or never`},
		{"image: a\njobs:\n  test:\n    pull: Always\n    steps: [x]\n", `.kiln.yml:4:11: jobs.test.pull: "Always": want if-not-present, always or never`},
		{"image: a\npull: [always]\nsteps: [x]\n", `.kiln.yml:2:7: pull: expected a string, got a sequence`},
	} {
		_, err := Parse(".kiln.yml", []byte(tc.file))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.file, err, tc.want)
		}
	}
}

// An image that is not a reference is refused where the file writes it,
// not at the pull.
func TestImageReferenceErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"image: Busybox\nsteps: [x]\n", `.kiln.yml:1:8: image: invalid image reference "Busybox": invalid reference format: repository name (library/Busybox) must be lowercase`},
		{"image: a\njobs:\n  t:\n    image: registry.example.com:port/x\n    steps: [x]\n", `.kiln.yml:4:12: jobs.t.image: invalid image reference "registry.example.com:port/x": invalid reference format`},
		{"image: a\njobs:\n  t:\n    image: x@sha256:short\n    steps: [x]\n", `.kiln.yml:4:12: jobs.t.image: invalid image reference "x@sha256:short": invalid reference format`},
	} {
		_, err := Parse(".kiln.yml", []byte(tc.file))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s…", tc.file, err, tc.want)
		}
	}
	for _, ok := range []string{"busybox", "localhost/kiln/busybox:latest", "registry.example.com:5000/team/ci:1.4", "registry.example.com/ci@sha256:" + strings.Repeat("a", 64)} {
		if _, err := Parse(".kiln.yml", []byte("image: "+ok+"\nsteps: [x]\n")); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
