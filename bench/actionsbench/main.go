// Command actionsbench measures how fast Kiln starts a GitHub Actions
// runner for a queued workflow job, against a bare container run of the
// same runner image, side by side in one run on one machine.
//
//	go run ./bench/actionsbench -engine unix:///run/kiln-docker.sock -cli docker
//	go run ./bench/actionsbench -engine unix:///run/kiln-podman.sock -cli podman
//
// Everything runs here: a fake GitHub (internal/github/fakegithub) with a
// clock in front of its runner broker, the fake runner image
// (localhost/kiln/fake-runner:latest, built and imported if missing or
// stale), and for Kiln a control plane and one agent in this process.
//
// kiln: from a signed `workflow_job` `queued` webhook's arrival at Kiln to
// the runner's register call arriving at the broker, the first thing the
// runner in the sandbox's entrypoint does (Kiln stores the delivery, makes
// a runner job, an agent claims it, the server asks GitHub for a JIT
// configuration, the agent creates the sandbox and starts the runner).
//
// bare: `docker run --rm -e ACTIONS_RUNNER_INPUT_JITCONFIG IMAGE` (or
// podman), from the process's start to the same register call, the JIT
// configuration made beforehand.
//
// -n jobs of each, one at a time, alternating, after one warm-up of each;
// every job runs to its end (the job completed on the fake, the container
// gone) before the next starts. It prints p50, p95 and the ratios.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kilnci/kiln/bench/internal/stats"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
)

func main() {
	engine := flag.String("engine", "unix:///run/kiln-docker.sock", "engine socket for Kiln's agent and the baseline")
	cli := flag.String("cli", "docker", "CLI for the baseline run: docker or podman (talks to the same engine)")
	n := flag.Int("n", 50, "jobs measured of each")
	only := flag.String("only", "", "run only 'kiln' or 'bare'")
	flag.Parse()
	if err := run(context.Background(), *engine, *cli, *n, *only); err != nil {
		fmt.Fprintln(os.Stderr, "actionsbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, engine, cliName string, n int, only string) error {
	bin, err := runnerimage.BuildBinary(ctx)
	if err != nil {
		return err
	}
	if err := runnerimage.Ensure(ctx, engine, bin, runnerimage.Latest); err != nil {
		return err
	}
	g, err := startGitHub()
	if err != nil {
		return err
	}
	defer g.close()
	var k *kiln
	if only != "bare" {
		if k, err = startKiln(ctx, g, engine); err != nil {
			return err
		}
		defer k.stop()
	}
	cli := runnerimage.CLI(cliName, engine)

	fmt.Printf("== actions: queued workflow_job webhook → runner registered at the broker, vs `%s run --rm -e ACTIONS_RUNNER_INPUT_JITCONFIG %s` (n=%d, engine %s)\n",
		cliName, runnerimage.Latest.Ref(), n, engine)
	var kd, bd []time.Duration
	var ph phases
	// One warm-up of each, not counted: the first run pays one-time costs
	// (the engine's caches, Kiln's first token and project) that a
	// long-running installation does not.
	for i := -1; i < n; i++ {
		if k != nil {
			d, p, err := k.one(ctx, i)
			if err != nil {
				return fmt.Errorf("kiln, job %d: %w", i, err)
			}
			if i >= 0 {
				kd = append(kd, d)
				ph.add(p)
			}
		}
		if only != "kiln" {
			d, err := bareRun(ctx, g, cli, i)
			if err != nil {
				return fmt.Errorf("bare, job %d: %w", i, err)
			}
			if i >= 0 {
				bd = append(bd, d)
			}
		}
	}
	fmt.Printf("%-44s %10s %10s\n", "", "p50", "p95")
	if k != nil {
		fmt.Printf("%-44s %10s %10s\n", "kiln: webhook → runner registered", ms(stats.Pct(kd, 50)), ms(stats.Pct(kd, 95)))
	}
	if only != "kiln" {
		fmt.Printf("%-44s %10s %10s\n", cliName+" run: start → runner registered", ms(stats.Pct(bd, 50)), ms(stats.Pct(bd, 95)))
	}
	if k != nil && only != "kiln" {
		fmt.Printf("%-44s %9.2fx %9.2fx\n", "ratio kiln / "+cliName+" run", ratio(stats.Pct(kd, 50), stats.Pct(bd, 50)), ratio(stats.Pct(kd, 95), stats.Pct(bd, 95)))
	}
	if k != nil {
		ph.print()
	}
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }
