package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/brokertap"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/store"
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

// A queued workflow_job webhook starts exactly one runner sandbox; its
// runner takes exactly that job and exits, the sandbox is destroyed, and
// the job is completed on GitHub by Kiln's runner. The runner's output is
// the runner job's log, without its JIT configuration.
func TestActionsQueuedJobGetsOneRunner(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{})
		k.addPool("linux", runnerimage.Latest, 2)
		job, id := k.queue()
		got := k.waitGHJob(job.ID, "completed")
		r := k.waitRunnerDone(id)
		if r.Status != store.StatusSuccess {
			t.Fatalf("runner job %s\nlog:\n%s", dump(r), k.logText(r.BuildID))
		}
		if got.Conclusion != "success" || !strings.EqualFold(got.RunnerName, r.Name) {
			t.Fatalf("GitHub job %+v, Kiln's runner %q", got, r.Name)
		}
		regs := k.gh.tap.Registers()
		if len(regs) != 1 || regs[0].JobID != job.ID {
			t.Fatalf("register calls: %+v", regs)
		}
		if n := len(k.runnersFor(job.ID)); n != 1 {
			t.Fatalf("%d runner jobs for the job", n)
		}
		waitUntil(t, "the ephemeral runner gone from GitHub", func() bool { return len(k.gh.Runners()) == 0 })
		log := k.logText(r.BuildID)
		for _, want := range []string{"√ Connected to GitHub", "Running job: " + job.Name, "Job " + job.Name + " completed with result: Succeeded"} {
			if !strings.Contains(log, want) {
				t.Errorf("the runner job's log lacks %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, regs[0].JITConfig) {
			t.Errorf("the runner job's log shows the JIT configuration:\n%s", log)
		}
	})
}

// Deliveries twice, late and out of order change nothing: one runner job
// per queued job, none for a job GitHub finished before its queued
// delivery arrived.
func TestActionsDuplicateAndReorderedDeliveries(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{})
		k.addPool("linux", runnerimage.Latest, 4)

		t.Run("duplicate", func(t *testing.T) {
			job := k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
			d := k.newDelivery(job, "queued")
			if code, out := d.send(t); code != http.StatusCreated {
				t.Fatalf("first delivery: HTTP %d %v", code, out)
			}
			if code, out := d.send(t); code != http.StatusOK || out["duplicate"] != true {
				t.Fatalf("same delivery again: HTTP %d %v", code, out)
			}
			// GitHub re-sends with a new delivery id ("redeliver").
			if code, out := k.deliver(job, "queued"); code != http.StatusOK {
				t.Fatalf("redelivery: HTTP %d %v", code, out)
			}
			if rs := k.runnersFor(job.ID); len(rs) != 1 {
				t.Fatalf("runner jobs: %s", dump(rs))
			}
			done := k.waitGHJob(job.ID, "completed")
			k.waitRunnerDone(k.runnersFor(job.ID)[0].JobID)
			// The job's later deliveries, twice each, and its queued one late.
			for _, action := range []string{"in_progress", "completed", "completed", "in_progress", "queued"} {
				j := done
				if action == "queued" {
					j = job
				}
				if code, out := k.deliver(j, action); code != http.StatusOK {
					t.Fatalf("%s delivery: HTTP %d %v", action, code, out)
				}
			}
			if rs := k.runnersFor(job.ID); len(rs) != 1 {
				t.Fatalf("runner jobs: %s", dump(rs))
			}
		})

		t.Run("completed before queued", func(t *testing.T) {
			job := k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
			queued := k.newDelivery(job, "queued") // made now, arrives last
			k.gh.CancelRun(ghOwner, ghRepo, job.RunID)
			if code, out := k.deliver(k.gh.job(t, job.ID), "completed"); code != http.StatusOK {
				t.Fatalf("completed delivery: HTTP %d %v", code, out)
			}
			if code, out := queued.send(t); code != http.StatusOK {
				t.Fatalf("late queued delivery: HTTP %d %v", code, out)
			}
			if rs := k.runnersFor(job.ID); len(rs) != 0 {
				t.Fatalf("runner jobs for a finished job: %s", dump(rs))
			}
		})

		t.Run("queued in reverse order", func(t *testing.T) {
			jobs := []fakegithub.Job{k.gh.QueueJob(ghOwner, ghRepo, runnerLabels), k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)}
			for _, j := range []fakegithub.Job{jobs[1], jobs[0]} {
				if code, out := k.deliver(j, "queued"); code != http.StatusCreated {
					t.Fatalf("queued delivery: HTTP %d %v", code, out)
				}
			}
			for _, j := range jobs {
				if got := k.waitGHJob(j.ID, "completed"); got.Conclusion != "success" {
					t.Fatalf("job %+v", got)
				}
			}
		})
		// Every runner job ended; each GitHub job had one.
		for _, r := range k.runners() {
			k.waitRunnerDone(r.JobID)
		}
	})
}

// A job whose webhook never came is found by the reconciler and runs; its
// queued delivery arriving late then starts nothing more.
func TestActionsDroppedDeliveryIsReconciled(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{reconcile: time.Second})
		k.addPool("linux", runnerimage.Latest, 2)
		job := k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
		if got := k.waitGHJob(job.ID, "completed"); got.Conclusion != "success" {
			t.Fatalf("job %+v", got)
		}
		rs := k.runnersFor(job.ID)
		if len(rs) != 1 {
			t.Fatalf("runner jobs: %s", dump(rs))
		}
		if r := k.waitRunnerDone(rs[0].JobID); r.Status != store.StatusSuccess {
			t.Fatalf("runner job %s", dump(r))
		}
		if code, out := k.deliver(job, "queued"); code != http.StatusOK {
			t.Fatalf("late queued delivery: HTTP %d %v", code, out)
		}
		if rs := k.runnersFor(job.ID); len(rs) != 1 {
			t.Fatalf("runner jobs after the late delivery: %s", dump(rs))
		}
	})
}

// 100 jobs queued at once against a pool of at most 10 runners: never more
// than 10 runner sandboxes (nor busy runners) at once, sampled while they
// run, with more agent capacity (12) than the pool allows; every job
// completes, each on a runner of its own. Each job takes 3s (the :slow
// runner), so runners overlap and the maximum binds; GitHub's in_progress
// and completed deliveries are relayed as jobs move, as GitHub sends them.
func TestActionsBurstRespectsPoolMaximum(t *testing.T) {
	const jobs, maxRunners = 100, 10
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{agents: 6})
		k.addPool("burst", runnerimage.Slow, maxRunners)
		k.relayJobEvents()
		queued := make([]fakegithub.Job, jobs)
		for i := range queued {
			queued[i] = k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
		}

		var agents []string
		waitUntil(t, "six agents registered", func() bool { agents = k.agentIDs(); return len(agents) == 6 })
		var mu sync.Mutex
		maxSandboxes, maxBusy, samples := 0, 0, 0
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				list, err := listSandboxes(k.rt, agents, 0)
				if err != nil {
					continue
				}
				busy := 0
				for _, r := range k.gh.Runners() {
					if r.Busy {
						busy++
					}
				}
				mu.Lock()
				maxSandboxes, maxBusy, samples = max(maxSandboxes, len(list)), max(maxBusy, busy), samples+1
				mu.Unlock()
			}
		}()

		// Deliver from 8 senders at once, as GitHub does.
		var wg sync.WaitGroup
		next := make(chan fakegithub.Job)
		errs := make(chan string, jobs)
		for range 8 {
			wg.Go(func() {
				for j := range next {
					if code, out := k.deliver(j, "queued"); code != http.StatusCreated {
						errs <- fmt.Sprintf("job %d: HTTP %d %v", j.ID, code, out)
					}
				}
			})
		}
		for _, j := range queued {
			next <- j
		}
		close(next)
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Error(msg)
		}

		summary := func() string {
			gh, kiln := map[string]int{}, map[string]int{}
			for _, j := range k.gh.Jobs() {
				gh[j.Status+" "+j.Conclusion]++
			}
			var errs []string
			var live strings.Builder
			shown := 0
			for _, r := range k.runners() {
				kiln[string(r.Status)+"/"+r.State]++
				if r.Error != "" && len(errs) < 5 {
					errs = append(errs, r.Error)
				}
				if !r.Status.Terminal() && r.Status != store.StatusQueued && shown < 4 {
					shown++
					fmt.Fprintf(&live, "running runner job %d (%s, GitHub job %d, seen %q):\n", r.JobID, r.Name, r.GHJobID, r.GHStatus)
					log := strings.Split(strings.TrimSpace(k.logText(r.BuildID)), "\n")
					for _, l := range log[max(0, len(log)-8):] {
						fmt.Fprintf(&live, "    | %s\n", l)
					}
				}
			}
			return fmt.Sprintf("GitHub's jobs: %v\nKiln's runner jobs: %v\nsome errors: %q\n%s", gh, kiln, errs, live.String())
		}
		// 100 jobs through 10 runners on a shared 2-core machine: a wider
		// safety net than one job's.
		waitUntilFor(t, 15*time.Minute, "all 100 jobs completed", func() bool {
			for _, j := range queued {
				if k.gh.job(t, j.ID).Status != "completed" {
					return false
				}
			}
			return true
		}, summary)
		close(stop)
		<-sampled
		names := map[string]bool{}
		for _, j := range queued {
			got := k.gh.job(t, j.ID)
			if got.Conclusion != "success" || got.RunnerName == "" || names[strings.ToLower(got.RunnerName)] {
				t.Errorf("job %+v (runner name seen before: %v)", got, names[strings.ToLower(got.RunnerName)])
			}
			names[strings.ToLower(got.RunnerName)] = true
		}
		mu.Lock()
		defer mu.Unlock()
		t.Logf("at most %d runner sandboxes and %d busy runners at once (%d samples); %d register calls", maxSandboxes, maxBusy, samples, len(k.gh.tap.Registers()))
		if maxSandboxes > maxRunners || maxBusy > maxRunners {
			t.Fatalf("pool maximum %d exceeded: %d sandboxes, %d busy runners at once", maxRunners, maxSandboxes, maxBusy)
		}
		if maxBusy == 0 {
			t.Fatal("the sampler never saw a busy runner")
		}
		for _, r := range k.runners() {
			k.waitRunnerDone(r.JobID)
		}
	})
}

// A run cancelled while its runner runs the job releases the runner: the
// runner job ends, its sandbox is destroyed, GitHub keeps no runner. While
// the runner runs, its JIT configuration is in no container label, no
// process's command line on the host (the sandbox's included), and, after,
// not in the job's log. A run cancelled before its runner started gets no
// runner at all.
func TestActionsCancelledRunReleasesRunner(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{})
		k.addPool("hold", runnerimage.Hold, 2)

		t.Run("while running", func(t *testing.T) {
			job, id := k.queue()
			k.waitGHJob(job.ID, "in_progress")
			// The fake marks the job in progress while it answers the
			// register call; the tap records the call once the answer
			// passes through it, a moment later.
			var reg brokertap.Register
			waitUntil(t, "the register call of the job through the tap", func() bool {
				for _, r := range k.gh.tap.Registers() {
					if r.JobID == job.ID {
						reg = r
					}
				}
				return reg.JITConfig != ""
			}, k.state)
			if reg.JITConfig == "" {
				t.Fatalf("no register call for job %d: %+v", job.ID, k.gh.tap.Registers())
			}
			boxes := k.sandboxes(id)
			if len(boxes) != 1 {
				t.Fatalf("sandboxes of runner job %d: %+v", id, boxes)
			}
			checkSecretHidden(t, e, boxes[0].ID, reg.JITConfig)

			k.gh.CancelRun(ghOwner, ghRepo, job.RunID)
			if code, out := k.deliver(k.gh.job(t, job.ID), "completed"); code != http.StatusOK {
				t.Fatalf("completed delivery: HTTP %d %v", code, out)
			}
			r := k.waitRunnerDone(id)
			waitUntil(t, "no runner left on GitHub", func() bool { return len(k.gh.Runners()) == 0 })
			if log := k.logText(r.BuildID); strings.Contains(log, reg.JITConfig) {
				t.Errorf("the runner job's log shows the JIT configuration:\n%s", log)
			}
			if got := k.gh.job(t, job.ID); got.Conclusion != "cancelled" {
				t.Fatalf("GitHub job %+v", got)
			}
		})

		t.Run("before its runner started", func(t *testing.T) {
			job := k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
			queued := k.newDelivery(job, "queued")
			k.gh.CancelRun(ghOwner, ghRepo, job.RunID)
			// Sent before the cancel, it arrives after it, and before the
			// completed delivery: Kiln's launch must find the job over.
			if code, out := queued.send(t); code != http.StatusCreated {
				t.Fatalf("queued delivery: HTTP %d %v", code, out)
			}
			for _, r := range k.runnersFor(job.ID) {
				r = k.waitRunnerDone(r.JobID)
				t.Logf("runner job %d: %s %s", r.JobID, r.Status, r.Error)
			}
			if code, out := k.deliver(k.gh.job(t, job.ID), "completed"); code != http.StatusOK {
				t.Fatalf("completed delivery: HTTP %d %v", code, out)
			}
			waitUntil(t, "no runner left on GitHub", func() bool { return len(k.gh.Runners()) == 0 })
			for _, r := range k.gh.tap.Registers() {
				if r.JobID == job.ID {
					t.Fatalf("a runner took the cancelled job: %+v", r)
				}
			}
		})
	})
}

// checkSecretHidden fails if jit is in the sandbox's labels or its
// configured command, or on the command line of any process on the host
// (which sees the sandbox's processes, the runner among them), or if the
// JIT configuration or the runner's ACTIONS_RUNTIME_TOKEN is anywhere in
// the engine's view of the sandbox (its inspect, its exec instances').
func checkSecretHidden(t *testing.T, e testenv.Engine, containerID, jit string) {
	t.Helper()
	checkRunnerSecretsHidden(t, e, containerID, "ACTIONS_RUNNER_INPUT_JITCONFIG", jit)
	cli, err := client.NewClientWithOpts(client.WithHost(e.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c, err := cli.ContainerInspect(context.Background(), containerID)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.Config.Labels {
		if strings.Contains(k+"="+v, jit) {
			t.Errorf("container label %s carries the JIT configuration", k)
		}
	}
	if cmd := strings.Join(append(append(append([]string{c.Path}, c.Args...), c.Config.Entrypoint...), c.Config.Cmd...), " "); strings.Contains(cmd, jit) {
		t.Errorf("the container's command carries the JIT configuration")
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	runnerSeen := false
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		runnerSeen = runnerSeen || strings.Contains(cmdline, "/runner/fake-runner")
		if strings.Contains(cmdline, jit) {
			t.Errorf("process %s has the JIT configuration on its command line: %.80s…", filepath.Base(filepath.Dir(p)), cmdline)
		}
	}
	if !runnerSeen {
		t.Error("no /runner/fake-runner process seen on the host: the command-line check saw nothing")
	}
}

// A runner that never comes online (its image's command only sleeps) is
// reaped after the bootstrap timeout: removed from GitHub, its runner job
// ended, its sandbox destroyed; the job stays queued for another runner.
func TestActionsRunnerNeverRegistersIsReaped(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{bootstrap: 3 * time.Second})
		k.addPool("stall", runnerimage.Stall, 1)
		job, id := k.queue()
		r := k.waitRunnerDone(id)
		if r.Status == store.StatusSuccess {
			t.Fatalf("a runner that never came online ended in success: %s", dump(r))
		}
		for _, gr := range k.gh.Runners() {
			if strings.EqualFold(gr.Name, r.Name) {
				t.Fatalf("the reaped runner is still registered on GitHub: %+v", gr)
			}
		}
		if got := k.gh.job(t, job.ID); got.Status != "queued" {
			t.Fatalf("GitHub job %+v", got)
		}
		if n := len(k.gh.tap.Registers()); n != 0 {
			t.Fatalf("%d register calls from a runner that never registers", n)
		}
		t.Logf("reaped: %s", r.Error)
		// Done with the job: cancel it, so nothing starts again.
		k.gh.CancelRun(ghOwner, ghRepo, job.RunID)
		k.deliver(k.gh.job(t, job.ID), "completed")
		for _, r := range k.runnersFor(job.ID) {
			k.waitRunnerDone(r.JobID)
		}
	})
}

// `kiln up` killed with SIGKILL while runners run, webhooks sent while it
// is down lost, then started again: every job completes, no sandbox and no
// registered runner is left behind.
func TestActionsServerRestart(t *testing.T) {
	requireKilnFlags(t, "up", "-github-api-url", "-github-token", "-github-webhook-secret", "-github-reconcile-interval", "-github-reap-interval")
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		ensureRunnerImages(t, e)
		gh := startFakeGitHub(t)
		dataDir, addr := t.TempDir(), freeAddr(t)
		// The token and the secret go by environment, not on a command line.
		env := []string{"KILN_HOME=" + dataDir, "KILN_GITHUB_TOKEN=" + ghToken, "KILN_GITHUB_WEBHOOK_SECRET=" + ghWebhookSecret}
		args := []string{"up", "-listen", addr, "-engine", e.Host, "-lease", "3s", "-retry-delay", "200ms", "-memory", "256m",
			"-github-api-url", gh.URL(), "-github-reconcile-interval", "1s", "-github-reap-interval", "500ms",
			// The fake GitHub's broker listens on the host, where the
			// sandbox firewall would (rightly) keep the runners from it;
			// it stands for github.com, on the internet.
			"-sandbox-firewall", "off"}
		up := startProc(t, env, args...)
		rt, err := docker.New(e.Host)
		if err != nil {
			t.Fatal(err)
		}
		k := &actionsKiln{harness: &harness{t: t, engine: e, url: "http://" + addr, dataDir: dataDir, rt: rt}, gh: gh}
		k.admin = waitToken(t, up, dataDir)
		k.addPool("linux", runnerimage.Latest, 2)

		var jobs []fakegithub.Job
		for range 3 {
			j, _ := k.queue()
			jobs = append(jobs, j)
		}
		waitUntil(t, "a runner registered", func() bool { return len(gh.tap.Registers()) > 0 }, k.state)
		agents := k.agentIDs()
		up.kill()
		// The host goes down with Kiln: its sandboxes go too. Left
		// running, a runner the dead agent started takes one of the jobs
		// queued below and may be in the middle of it when the restarted
		// agent sweeps its sandbox away; GitHub fails a job whose runner
		// vanished, and no CI can bring that one back (a case apart from
		// this test's, which is that nothing queued is lost).
		left, err := listSandboxes(rt, agents, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range left {
			if err := rt.Destroy(context.Background(), sb.ID); err != nil {
				t.Fatal(err)
			}
		}
		// Queued while Kiln is down: their webhooks are lost.
		for range 2 {
			jobs = append(jobs, gh.QueueJob(ghOwner, ghRepo, runnerLabels))
		}

		up2 := startProc(t, env, args...)
		waitToken(t, up2, dataDir)
		// Registered after up2's kill, so it runs first: the agent in up2
		// destroys what is left before it goes.
		t.Cleanup(k.waitNoSandboxes)
		server := func() string { return "kiln up (after the restart):\n" + up2.output() }
		waitUntil(t, "every job completed", func() bool {
			for _, j := range jobs {
				if gh.job(t, j.ID).Status != "completed" {
					return false
				}
			}
			return true
		}, k.state, server)
		for _, j := range jobs {
			if got := gh.job(t, j.ID); got.Conclusion != "success" {
				t.Errorf("job %+v", got)
			}
		}
		for _, r := range k.runners() {
			k.waitRunnerDone(r.JobID)
		}
		waitUntil(t, "no runner left on GitHub", func() bool { return len(gh.Runners()) == 0 }, k.state, server)
	})
}

// requireKilnFlags skips the test unless `kiln cmd -h` lists every flag:
// what it drives is not in this build of Kiln yet.
func requireKilnFlags(t *testing.T, cmd string, flags ...string) {
	t.Helper()
	out, _ := exec.Command(kilnBin, cmd, "-h").CombinedOutput()
	for _, f := range flags {
		if !strings.Contains(string(out), f+" ") && !strings.Contains(string(out), f+"\n") {
			t.Skipf("kiln %s has no %s flag yet (the GitHub Actions integration's server flags are missing)", cmd, f)
		}
	}
}
