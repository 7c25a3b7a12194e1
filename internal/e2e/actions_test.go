package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/testenv"
)

// The runner image on its own, without Kiln: a container started with a
// JIT configuration in its environment reaches the fake's broker through
// its default gateway, takes the queued job, completes it and exits 0;
// GitHub then has the job completed and the ephemeral runner gone. Once in
// a sandbox as Kiln makes them (a bridge network of its own, the runner
// started by exec), once by a bare `docker run` / `podman run` on the
// engine's default network.
func TestActionsRunnerImage(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		ensureRunnerImages(t, e)
		fake := startFakeGitHub(t)
		for _, how := range []struct {
			name string
			run  func(t *testing.T, jitConfig string) (exitCode int, output string)
		}{
			{"kiln sandbox", func(t *testing.T, jit string) (int, string) { return execInSandbox(t, e, jit) }},
			{e.Name + " run", func(t *testing.T, jit string) (int, string) { return engineRun(t, e, jit) }},
		} {
			t.Run(how.name, func(t *testing.T) {
				job := fake.QueueJob(ghOwner, ghRepo, runnerLabels)
				cfg := fake.jit(t, "direct-"+strings.ReplaceAll(how.name, " ", "-"))
				code, out := how.run(t, cfg.EncodedJITConfig)
				if code != 0 {
					t.Fatalf("runner exit %d:\n%s", code, out)
				}
				for _, want := range []string{"√ Connected to GitHub", "Running job: " + job.Name, "Job " + job.Name + " completed with result: Succeeded"} {
					if !strings.Contains(out, want) {
						t.Errorf("runner output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, cfg.EncodedJITConfig) {
					t.Errorf("runner output shows its JIT configuration:\n%s", out)
				}
				if j := fake.job(t, job.ID); j.Status != "completed" || j.Conclusion != "success" || j.RunnerID != cfg.RunnerID {
					t.Fatalf("job on the fake: %+v (runner %d)", j, cfg.RunnerID)
				}
				if r, ok := fake.tap.Registered(cfg.RunnerID); !ok || r.JobID != job.ID {
					t.Errorf("register call through the tap: %+v, %v", r, ok)
				}
				if _, ok := fake.Runner(cfg.RunnerID); ok {
					t.Error("the ephemeral runner is still registered")
				}
			})
		}
	})
}

// execInSandbox runs the runner as Kiln does: a sandbox of its own (own
// network, limits, no privileges) from the runner image, the runner
// started by exec with the configuration in the exec's environment.
func execInSandbox(t *testing.T, e testenv.Engine, jit string) (int, string) {
	t.Helper()
	rt, err := docker.New(e.Host)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := fmt.Sprintf("kiln-e2e-runner-%d", os.Getpid())
	id, err := rt.Create(ctx, sandbox.Spec{
		Name: name, Image: runnerimage.Latest.Ref(),
		Labels:      map[string]string{sandbox.LabelAgent: "e2e-direct"},
		MemoryBytes: 256 << 20, CPUs: 1, PidsLimit: 256,
	})
	t.Cleanup(func() { _ = rt.Destroy(context.Background(), name) })
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder // Exec serializes its writes and makes none after it returns
	code, err := rt.Exec(ctx, id, sandbox.ExecSpec{Cmd: []string{runnerimage.RunScript}, Env: []string{"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit}, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// engineRun is `docker run --rm -e ACTIONS_RUNNER_INPUT_JITCONFIG IMAGE`
// (podman alike): the value comes from the client's environment, so it is
// not on any command line.
func engineRun(t *testing.T, e testenv.Engine, jit string) (int, string) {
	t.Helper()
	args := append(runnerimage.CLI(e.Name, e.Host), "run", "--rm", "-e", "ACTIONS_RUNNER_INPUT_JITCONFIG", runnerimage.Latest.Ref())
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "ACTIONS_RUNNER_INPUT_JITCONFIG="+jit)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}
