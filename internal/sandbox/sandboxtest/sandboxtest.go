// Package sandboxtest is the conformance suite every sandbox.Runtime must
// pass. An implementation's tests call Run once per engine it supports; the
// suite creates real sandboxes from testenv.BaseImage and checks the
// behaviour the agent relies on.
package sandboxtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/testenv"
)

// Leftovers may be implemented by the Runtime that newRuntime returns (a
// test harness wrapping the real one). The suite then also checks that
// Destroy and a failed Create leave no engine object behind, which the
// Runtime interface alone cannot see.
type Leftovers interface {
	// Leftovers describes every engine object (container, network, …)
	// still named name; none means nothing is left.
	Leftovers(ctx context.Context, name string) ([]string, error)
}

// testTimeout bounds each subtest's engine calls, so a hung engine fails
// the test with a message instead of hanging the run. It is not an
// assertion on speed.
const testTimeout = 2 * time.Minute

// Run runs the conformance suite against the runtimes newRuntime returns.
// newRuntime is called once per subtest (subtests run in parallel).
func Run(t *testing.T, newRuntime func(t *testing.T) sandbox.Runtime) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"CreateExecEcho", testCreateExecEcho},
		{"ExitCodes", testExitCodes},
		{"StdoutAndStderr", testStdoutAndStderr},
		{"Env", testEnv},
		{"WorkDir", testWorkDir},
		{"BindMount", testBindMount},
		{"Limits", testLimits},
		{"DiskQuota", testDiskQuota},
		{"LayerSize", testLayerSize},
		{"Privileges", testPrivileges},
		{"OwnNetwork", testOwnNetwork},
		{"NoEngineSocket", testNoEngineSocket},
		{"ImageNotFound", testImageNotFound},
		{"NameInUse", testNameInUse},
		{"DestroyIdempotent", testDestroyIdempotent},
		{"DestroyConcurrent", testDestroyConcurrent},
		{"List", testList},
		{"ExecCancel", testExecCancel},
		{"SandboxGone", testSandboxGone},
		{"Concurrent", testConcurrent},
		{"RestartedAgent", testRestartedAgent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			rt := newRuntime(t)
			if err := rt.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			c.fn(t, &harness{rt: rt, ctx: ctx, agent: "sandboxtest-" + randomID(), newRuntime: newRuntime})
		})
	}
}

// harness holds one subtest's runtime and creates uniquely named, labelled
// sandboxes that are destroyed when the test ends.
type harness struct {
	rt    sandbox.Runtime
	ctx   context.Context
	agent string // LabelAgent value unique to this subtest
	n     int
	mu    sync.Mutex

	newRuntime func(t *testing.T) sandbox.Runtime
}

// spec returns a valid spec with a fresh name and this subtest's labels.
func (h *harness) spec(job string) sandbox.Spec {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	return sandbox.Spec{
		Name:  fmt.Sprintf("kiln-test-%s-%d", randomID(), n),
		Image: testenv.BaseImage,
		Labels: map[string]string{
			sandbox.LabelManaged: "true",
			sandbox.LabelAgent:   h.agent,
			sandbox.LabelJob:     job,
			sandbox.LabelAttempt: "1",
		},
	}
}

// create creates a sandbox from spec and destroys it at the end of the
// test, checking that the Destroy succeeds and leaves nothing behind.
func (h *harness) create(t *testing.T, spec sandbox.Spec) string {
	t.Helper()
	id, err := h.rt.Create(h.ctx, spec)
	if err != nil {
		t.Fatalf("Create(%s): %v", spec.Name, err)
	}
	if id == "" {
		t.Fatalf("Create(%s) returned an empty id", spec.Name)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := h.rt.Destroy(ctx, id); err != nil {
			t.Errorf("Destroy(%s): %v", spec.Name, err)
		}
		h.checkNoLeftovers(t, ctx, spec.Name)
	})
	return id
}

// checkNoLeftovers fails the test if the runtime can tell that engine
// objects named name still exist.
func (h *harness) checkNoLeftovers(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	lo, ok := h.rt.(Leftovers)
	if !ok {
		return
	}
	left, err := lo.Leftovers(ctx, name)
	if err != nil {
		t.Errorf("Leftovers(%s): %v", name, err)
	} else if len(left) > 0 {
		t.Errorf("left behind for %s: %v", name, left)
	}
}

// exec runs cmd and returns its exit code and combined output, failing the
// test on an error.
func (h *harness) exec(t *testing.T, id string, spec sandbox.ExecSpec) (int, string) {
	t.Helper()
	var out syncBuffer
	spec.Output = &out
	code, err := h.rt.Exec(h.ctx, id, spec)
	if err != nil {
		t.Fatalf("Exec(%q): %v (output %q)", spec.Cmd, err, out.String())
	}
	return code, out.String()
}

// sh runs a shell script and requires it to exit 0, returning its output.
func (h *harness) sh(t *testing.T, id, script string) string {
	t.Helper()
	code, out := h.exec(t, id, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", script}})
	if code != 0 {
		t.Fatalf("sh -c %q: exit %d, output %q", script, code, out)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lines splits output into trimmed, non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func requireErrorIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %q", what, err, target)
	}
}
