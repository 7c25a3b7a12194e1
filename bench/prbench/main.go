// Command prbench measures Kiln's pull-request round trip to the forge,
// against the core benchmark's figures measured in the same run on the
// same machine, and prints the ratios.
//
//	go run ./bench/prbench -engine unix:///run/kiln-docker.sock -cli docker
//	go run ./bench/prbench -engine unix:///run/kiln-podman.sock -cli podman
//
// Everything runs here: a fake GitHub (internal/github/fakegithub) that
// records the commit statuses it accepts with their arrival times, and
// for Kiln a control plane and one agent in this process, with one
// project (a local repository, a one-step build) connected to the fake
// with a token, as `kiln project set -forge github` connects one.
//
// round trip: -n times, one at a time and alternately, after one
// uncounted warm-up of each:
//   - a signed `pull_request` `opened` webhook (the real example of
//     @octokit/webhooks-examples, its head a new commit under
//     refs/pull/N/head) is sent to Kiln; the clock stops when the fake
//     GitHub receives the first status of context "kiln" (pending; none
//     when the build ended before the sender's next round, which then
//     sends only the newest state) and when it receives the final
//     "success";
//   - kilnbench's measure: a signed `push` webhook of a new commit on
//     main, to the first output line of the build's first step at the
//     server (the live log stream), and on to its "success" at the fake;
//   - kilnbench's baseline: `docker run --rm IMAGE echo hello` (or
//     podman, on the same engine), from process start to its first line.
//
// Each webhook is sent after a random part of the sender's poll, so that
// webhooks do not arrive in step with its ticker. PRBENCH_TRACE=1 prints
// each build's timeline on stderr; PRBENCH_VERBOSE=1, the server's log.
//
// outbox: the statuses sender (forgestatus.Sender, the real SQLite
// store) drains a backlog of -statuses pending statuses (one per build,
// each of its own commit: nothing coalesced) to a fake GitHub answering
// at once and one answering in -slow (SetLatency), with -workers workers;
// against -statuses bare POSTs of the very same requests from one client
// with as many workers, to the same fake. Statuses per second, the median
// of -reps runs of each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/kilnci/kiln/bench/internal/ghhook"
	"github.com/kilnci/kiln/bench/internal/stats"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
)

func main() {
	engine := flag.String("engine", "unix:///run/kiln-docker.sock", "engine socket for Kiln's agent and the baseline")
	cli := flag.String("cli", "docker", "CLI for the baseline run: docker or podman (talks to the same engine)")
	n := flag.Int("n", 30, "round trip: pull requests (and pushes, and bare runs) measured")
	poll := flag.Duration("status-poll", 0, "round trip: the sender's outbox poll (0: its default, as `kiln up` runs it)")
	statuses := flag.Int("statuses", 500, "outbox: statuses in each backlog")
	workers := flag.Int("workers", 8, "outbox: the sender's workers (its default is 8), and the bare client's")
	slow := flag.Duration("slow", 50*time.Millisecond, "outbox: the slow forge's latency")
	reps := flag.Int("reps", 3, "outbox: runs of each, the median reported")
	only := flag.String("only", "", "run only 'roundtrip' or 'outbox'")
	flag.Parse()
	ctx := context.Background()
	switch {
	case *n < 1, *statuses < 1, *workers < 1, *reps < 1:
		fail(errors.New("-n, -statuses, -workers and -reps: at least 1"))
	case *cli != "docker" && *cli != "podman":
		fail(fmt.Errorf("-cli %q: docker or podman", *cli))
	case *only != "" && *only != "roundtrip" && *only != "outbox":
		fail(fmt.Errorf("-only %q: roundtrip or outbox", *only))
	}
	if *only != "outbox" {
		if err := roundTrip(ctx, *engine, *cli, *n, *poll); err != nil {
			fail(fmt.Errorf("round trip: %w", err))
		}
	}
	if *only != "roundtrip" {
		if err := outboxRates(ctx, *statuses, *workers, *reps, *slow); err != nil {
			fail(fmt.Errorf("outbox: %w", err))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "prbench:", err)
	os.Exit(1)
}

func roundTrip(ctx context.Context, engine, cliName string, n int, poll time.Duration) error {
	fx, err := ghhook.Fixtures()
	if err != nil {
		return err
	}
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken(ghToken)
	k, err := startKiln(ctx, engine, poll, gh, fx)
	if err != nil {
		return err
	}
	defer k.stop()
	cli := runnerimage.CLI(cliName, engine)
	pollText := "the sender's default poll"
	if poll > 0 {
		pollText = "sender poll " + poll.String()
	}
	fmt.Printf("== round trip: pull_request opened → commit statuses at the fake GitHub, beside push → first step line and `%s run --rm %s echo hello` (n=%d, engine %s, %s)\n",
		cliName, image, n, engine, pollText)
	var pr, push []timeline
	var bare []time.Duration
	// Each webhook waits a random part of the sender's poll first: the
	// loop waits for a status, which arrives on the sender's tick, so
	// without it every webhook would come at the same phase of the
	// ticker, and the figures would show that phase, not the spread a
	// webhook arriving at any time sees.
	period := poll
	if period <= 0 {
		period = time.Second // forgestatus.Config's default Poll
	}
	jitter := func() { time.Sleep(rand.N(period)) }
	// One warm-up of each, not counted: the first run pays one-time costs
	// (the git mirrors' creation, the engine's caches) that a long-running
	// installation does not.
	for i := -1; i < n; i++ {
		number := i + 3
		sha, err := k.newCommit(fmt.Sprintf("refs/pull/%d/head", number), fmt.Sprintf("request %d", number))
		if err != nil {
			return err
		}
		body, err := k.prOpened(number, sha)
		if err != nil {
			return err
		}
		jitter()
		p, err := k.run("pull_request", fmt.Sprintf("pr-%d", number), sha, body)
		if err != nil {
			return fmt.Errorf("pull request %d: %w", number, err)
		}
		if sha, err = k.newCommit("refs/heads/main", fmt.Sprintf("push %d", i)); err != nil {
			return err
		}
		if body, err = k.push(sha); err != nil {
			return err
		}
		jitter()
		q, err := k.run("push", fmt.Sprintf("push-%d", i), sha, body)
		if err != nil {
			return fmt.Errorf("push %d: %w", i, err)
		}
		b, err := bareRun(cli)
		if err != nil {
			return err
		}
		if os.Getenv("PRBENCH_TRACE") != "" {
			for _, t := range []timeline{p, q} {
				fmt.Fprintf(os.Stderr, "sent %s +pending %s(%s) +line %s +finished %s +success %s\n", t.sent.Format("05.000"), ms(t.firstStatus.Sub(t.sent)), t.firstState, ms(t.firstLine.Sub(t.sent)), ms(t.finished.Sub(t.sent)), ms(t.success.Sub(t.sent)))
			}
		}
		if i >= 0 {
			pr, push, bare = append(pr, p), append(push, q), append(bare, b)
		}
	}
	since := func(tls []timeline, at func(timeline) time.Time, from func(timeline) time.Time) []time.Duration {
		var ds []time.Duration
		for _, tl := range tls {
			if t := at(tl); !t.IsZero() {
				ds = append(ds, t.Sub(from(tl)))
			}
		}
		return ds
	}
	sent := func(tl timeline) time.Time { return tl.sent }
	var prPending []time.Duration
	coalesced := 0
	for _, tl := range pr {
		if tl.firstState == "pending" {
			prPending = append(prPending, tl.firstStatus.Sub(tl.sent))
		} else {
			coalesced++
		}
	}
	prFirst := since(pr, func(t timeline) time.Time { return t.firstStatus }, sent)
	prLine := since(pr, func(t timeline) time.Time { return t.firstLine }, sent)
	prSuccess := since(pr, func(t timeline) time.Time { return t.success }, sent)
	pushLine := since(push, func(t timeline) time.Time { return t.firstLine }, sent)
	pushSuccess := since(push, func(t timeline) time.Time { return t.success }, sent)
	prLag := since(pr, func(t timeline) time.Time { return t.success }, func(t timeline) time.Time { return t.finished })

	row := func(what string, ds []time.Duration) {
		fmt.Printf("  %-52s %9s %9s\n", what, ms(stats.Pct(ds, 50)), ms(stats.Pct(ds, 95)))
	}
	ratio := func(what string, a, b []time.Duration) {
		fmt.Printf("  %-52s %8.2fx %8.2fx\n", what, ratioOf(stats.Pct(a, 50), stats.Pct(b, 50)), ratioOf(stats.Pct(a, 95), stats.Pct(b, 95)))
	}
	fmt.Printf("  %-52s %9s %9s\n", "", "p50", "p95")
	row(fmt.Sprintf("PR opened → first status at the forge, pending (%d/%d)", len(prPending), len(pr)), prPending)
	row("PR opened → first status at the forge, any state", prFirst)
	row("PR opened → first step line at the server", prLine)
	row("PR opened → final status at the forge (success)", prSuccess)
	row("push → first step line at the server (kilnbench)", pushLine)
	row("push → final status at the forge (success)", pushSuccess)
	row(cliName+" run: start → first line (kilnbench's baseline)", bare)
	ratio("ratio PR → pending / push → first step line", prPending, pushLine)
	ratio("ratio PR → first status / push → first step line", prFirst, pushLine)
	ratio("ratio PR → success / push → first step line", prSuccess, pushLine)
	ratio("ratio PR → success / push → success", prSuccess, pushSuccess)
	ratio("ratio PR → pending / "+cliName+" run", prPending, bare)
	ratio("ratio PR → success / "+cliName+" run", prSuccess, bare)
	ratio("ratio push → first step line / "+cliName+" run (kilnbench)", pushLine, bare)
	row("PR build finished → success at the forge (outbox lag)", prLag)
	if coalesced > 0 {
		fmt.Printf("  %d of %d requests got no pending status: the build ended before the sender's next round, which sent only its newest state (success)\n", coalesced, len(pr))
	}
	return nil
}

func outboxRates(ctx context.Context, statuses, workers, reps int, slow time.Duration) error {
	fmt.Printf("== outbox: a backlog of %d statuses (distinct commits) drained by the sender (%d workers, SQLite store), vs %d bare POSTs of the same requests from one client with %d workers; median of %d runs\n",
		statuses, workers, statuses, workers, reps)
	fmt.Printf("  %-26s %16s %16s %8s\n", "fake GitHub answers", "sender st/s", "bare POST/s", "ratio")
	for _, delay := range []time.Duration{0, slow} {
		r, err := deliveryRate(ctx, statuses, workers, reps, delay)
		if err != nil {
			return err
		}
		what := "at once"
		if delay > 0 {
			what = "in " + delay.String()
		}
		s, b := median(r.sender), median(r.bare)
		fmt.Printf("  %-26s %16.1f %16.1f %7.2fx\n", what, s, b, s/b)
	}
	if slow > 0 {
		fmt.Printf("  (with latency L, w workers bound the rate at w/L = %.0f/s)\n", float64(workers)/slow.Seconds())
	}
	return nil
}

func ratioOf(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }
