package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
)

// bareRun is the baseline: a job queued on the fake, its JIT configuration
// made beforehand, then `docker run --rm -e ACTIONS_RUNNER_INPUT_JITCONFIG
// IMAGE` (podman alike, the value from the client's environment), timed
// from the process's start to the runner's register call at the broker.
// It returns when the container has exited, its job completed.
func bareRun(ctx context.Context, g *gh, cli []string, i int) (time.Duration, error) {
	job := g.fake.QueueJob(ghOwner, ghRepo, runnerLabels)
	cfg, err := g.client.GenerateJITConfig(ctx, github.Scope{Owner: ghOwner, Repo: ghRepo}, fmt.Sprintf("bare-%d-%d", os.Getpid(), i), runnerLabels, 0)
	if err != nil {
		return 0, err
	}
	args := append(cli[1:len(cli):len(cli)], "run", "--rm", "-e", "ACTIONS_RUNNER_INPUT_JITCONFIG", runnerimage.Latest.Ref())
	cmd := exec.CommandContext(ctx, cli[0], args...)
	cmd.Env = append(os.Environ(), "ACTIONS_RUNNER_INPUT_JITCONFIG="+cfg.EncodedJITConfig)
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%s run: %v\n%s", cli[0], err, out)
	}
	reg, ok := g.tap.Registered(cfg.RunnerID)
	if !ok {
		return 0, fmt.Errorf("%s run: the runner exited without registering", cli[0])
	}
	if j, _ := g.fake.Job(job.ID); j.Status != "completed" || j.RunnerID != cfg.RunnerID {
		return 0, fmt.Errorf("%s run: job %d is %s, run by runner %d, not %d", cli[0], job.ID, j.Status, j.RunnerID, cfg.RunnerID)
	}
	return reg.At.Sub(t0), nil
}
