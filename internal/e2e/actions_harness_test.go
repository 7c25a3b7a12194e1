package e2e

// The GitHub Actions side of the harness: a fake GitHub that containers can
// reach, the fake runner's image on each engine, and webhook deliveries
// made and signed as GitHub makes them.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/brokertap"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// The repository the Actions tests' workflow jobs come from.
const (
	ghOwner = "octo-org"
	ghRepo  = "octo-repo"
	ghToken = "ghp_kiln_e2e_token"
)

// runnerLabels is what the tests' jobs ask for (runs-on) and pools serve.
var runnerLabels = []string{"self-hosted", "kiln", "linux"}

// fakeGitHub is a fake GitHub on loopback with a tap in front of its
// broker (brokertap): the tap listens on every address of the host, so
// that a sandbox on its own bridge network reaches it through its default
// gateway (JIT configurations carry http://host.kiln.test:PORT, which the
// fake runner resolves to that gateway; the traffic never leaves the
// machine), and it records each runner's register call with the JIT
// configuration it carried.
type fakeGitHub struct {
	*fakegithub.Server
	tap    *brokertap.Tap
	client *github.Client
}

func startFakeGitHub(t *testing.T) *fakeGitHub {
	t.Helper()
	fake := fakegithub.New()
	t.Cleanup(fake.Close)
	fake.AddToken(ghToken)
	tap, err := brokertap.Start(fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tap.Close)
	f := &fakeGitHub{Server: fake, tap: tap}
	if f.client, err = github.New(github.Config{BaseURL: fake.URL(), Token: ghToken}); err != nil {
		t.Fatal(err)
	}
	return f
}

// jit registers a runner for the tests' repository, as Kiln would.
func (f *fakeGitHub) jit(t *testing.T, name string) github.JITConfig {
	t.Helper()
	cfg, err := f.client.GenerateJITConfig(context.Background(), github.Scope{Owner: ghOwner, Repo: ghRepo}, name, runnerLabels, 0)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// job returns the fake's job, which must exist.
func (f *fakeGitHub) job(t *testing.T, id int64) fakegithub.Job {
	t.Helper()
	j, ok := f.Job(id)
	if !ok {
		t.Fatalf("the fake has no job %d", id)
	}
	return j
}

// The fake runner's binary is built once per test process; each engine
// gets the image variants once.
var runnerImages struct {
	mu      sync.Mutex
	bin     []byte
	err     error
	engines map[string]error
}

// ensureRunnerImages builds the fake runner and imports its image variants
// (runnerimage.Latest, Slow, Hold, Stall) into the engine, unless they are there
// and up to date: CI runs only scripts/test.sh, which does not build them.
func ensureRunnerImages(t *testing.T, e testenv.Engine) {
	t.Helper()
	runnerImages.mu.Lock()
	defer runnerImages.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if runnerImages.bin == nil && runnerImages.err == nil {
		runnerImages.bin, runnerImages.err = runnerimage.BuildBinary(ctx)
		runnerImages.engines = map[string]error{}
	}
	if runnerImages.err != nil {
		t.Fatal(runnerImages.err)
	}
	err, done := runnerImages.engines[e.Host]
	if !done {
		err = runnerimage.Ensure(ctx, e.Host, runnerImages.bin, runnerimage.Latest, runnerimage.Slow, runnerimage.Hold, runnerimage.Stall)
		runnerImages.engines[e.Host] = err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond every 100ms; waitLimit is the safety net. On
// failure it reports what, and the state state() describes (may be nil).
func waitUntil(t *testing.T, what string, cond func() bool, state ...func() string) {
	t.Helper()
	waitUntilFor(t, waitLimit, what, cond, state...)
}

// waitUntilFor is waitUntil with another safety net, for a wait that
// covers much work (a burst of jobs on a loaded machine).
func waitUntilFor(t *testing.T, limit time.Duration, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			var sb strings.Builder
			for _, f := range state {
				sb.WriteString(f())
			}
			t.Fatalf("gave up waiting (%s): %s\n%s", limit, what, sb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// delivery is a workflow_job webhook for a job and action, signed as
// GitHub signs it. send delivers it; sending it again is a duplicate
// delivery (same delivery id).
type delivery struct {
	req *http.Request
}

func newDelivery(t *testing.T, f *fakeGitHub, url, secret string, job fakegithub.Job, action string) *delivery {
	t.Helper()
	req, err := fakegithub.Delivery(url, "workflow_job", secret, f.WorkflowJobPayload(job, action))
	if err != nil {
		t.Fatal(err)
	}
	return &delivery{req: req}
}

func (d *delivery) send(t *testing.T) (int, map[string]any) {
	t.Helper()
	body, err := d.req.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	req := d.req.Clone(context.Background())
	req.Body = body
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// --- Kiln with GitHub Actions ---

// ghWebhookSecret signs the tests' workflow_job deliveries.
const ghWebhookSecret = "kiln-e2e-actions-webhook-secret"

// actionsKiln is a control plane connected to the fake GitHub (with a
// token), with agents, and the fake.
type actionsKiln struct {
	*harness
	gh *fakeGitHub
}

type actionsOpts struct {
	// reconcile is the reconciler's interval; 0: an hour, so that only
	// webhooks start runners.
	reconcile time.Duration
	// bootstrap is the reaper's bootstrap timeout; 0: two minutes.
	bootstrap time.Duration
	// agents is how many agents (capacity 2 each) to start; 0: one.
	agents int
}

// startActions starts the fake GitHub, a Kiln server that uses it (the
// reaper every 500ms) and agents on engine e, with the runner images
// there. Leases are short, as in startServer.
func startActions(t *testing.T, e testenv.Engine, o actionsOpts) *actionsKiln {
	t.Helper()
	ensureRunnerImages(t, e)
	gh := startFakeGitHub(t)
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Listen, cfg.MaxWebhookBody = t.TempDir(), "127.0.0.1:0", 1<<20
	cfg.Scheduler.Lease, cfg.Scheduler.RetryDelay, cfg.Scheduler.PollInterval = 3*time.Second, 200*time.Millisecond, 200*time.Millisecond
	cfg.Actions.GitHub = actions.Connection{BaseURL: gh.URL(), Token: ghToken, WebhookSecret: ghWebhookSecret}
	cfg.Actions.ReconcileInterval = cmp.Or(o.reconcile, time.Hour)
	cfg.Actions.ReapInterval = 500 * time.Millisecond
	cfg.Actions.BootstrapTimeout = cmp.Or(o.bootstrap, 2*time.Minute)
	h, _ := serve(t, e, cfg)
	for i := range max(o.agents, 1) {
		h.startAgent(fmt.Sprintf("actions-%d", i+1), nil)
	}
	k := &actionsKiln{harness: h, gh: gh}
	// Registered last, so it runs first: the agents are still there to
	// destroy what they run; then nothing of the test may be left.
	t.Cleanup(k.waitNoSandboxes)
	return k
}

// addPool creates a pool serving runnerLabels in the tests' repository.
func (k *actionsKiln) addPool(name string, image runnerimage.Variant, maxRunners int) {
	k.t.Helper()
	body := store.Pool{Name: name, Labels: runnerLabels, Image: image.Ref(), MaxRunners: maxRunners, Owner: ghOwner, Repo: ghRepo, MemoryBytes: 256 << 20, CPUs: 1}
	var out map[string]any
	if code := k.do("POST", "/api/v1/pools", body, &out); code != http.StatusCreated {
		k.t.Fatalf("create pool %s: HTTP %d %v", name, code, out)
	}
}

// deliver sends the fake's workflow_job webhook for job with action, as
// GitHub would deliver it now, and returns the status and answer.
func (k *actionsKiln) deliver(job fakegithub.Job, action string) (int, map[string]any) {
	k.t.Helper()
	return k.newDelivery(job, action).send(k.t)
}

func (k *actionsKiln) newDelivery(job fakegithub.Job, action string) *delivery {
	k.t.Helper()
	return newDelivery(k.t, k.gh, k.url+api.ActionsHookPath, ghWebhookSecret, job, action)
}

// queue queues a job on the fake and delivers its queued webhook, which
// must start a runner job; it returns the job and the runner job's id.
func (k *actionsKiln) queue() (fakegithub.Job, int64) {
	k.t.Helper()
	job := k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
	code, out := k.deliver(job, "queued")
	id, _ := out["job_id"].(float64)
	if code != http.StatusCreated || id == 0 {
		k.t.Fatalf("queued delivery: HTTP %d %v", code, out)
	}
	return job, int64(id)
}

// runners is GET /api/v1/runners?all=true.
func (k *actionsKiln) runners() []api.RunnerView {
	k.t.Helper()
	var list []api.RunnerView
	if code := k.do("GET", "/api/v1/runners?all=true", nil, &list); code != http.StatusOK {
		k.t.Fatalf("list runners: HTTP %d", code)
	}
	return list
}

// runnersFor are the runner jobs started for GitHub job ghJob.
func (k *actionsKiln) runnersFor(ghJob int64) []api.RunnerView {
	k.t.Helper()
	var out []api.RunnerView
	for _, r := range k.runners() {
		if r.GHJobID == ghJob {
			out = append(out, r)
		}
	}
	return out
}

// runner is runner job id as the API shows it.
func (k *actionsKiln) runner(id int64) api.RunnerView {
	k.t.Helper()
	for _, r := range k.runners() {
		if r.JobID == id {
			return r
		}
	}
	k.t.Fatalf("no runner job %d", id)
	return api.RunnerView{}
}

// waitRunnerDone waits until runner job id has ended and its sandbox is gone.
func (k *actionsKiln) waitRunnerDone(id int64) api.RunnerView {
	k.t.Helper()
	waitUntil(k.t, fmt.Sprintf("runner job %d ended", id), func() bool { return k.runner(id).Status.Terminal() }, k.state)
	waitUntil(k.t, fmt.Sprintf("runner job %d's sandbox destroyed", id), func() bool { return len(k.sandboxes(id)) == 0 }, k.state)
	return k.runner(id)
}

// waitGHJob waits until the fake's job has status.
func (k *actionsKiln) waitGHJob(id int64, status string) fakegithub.Job {
	k.t.Helper()
	waitUntil(k.t, fmt.Sprintf("GitHub job %d %s", id, status), func() bool { return k.gh.job(k.t, id).Status == status }, k.state)
	return k.gh.job(k.t, id)
}

// state describes Kiln's runner jobs (with the end of their logs) and the
// fake's jobs and runners, for a failure message.
func (k *actionsKiln) state() string {
	var sb strings.Builder
	sb.WriteString("Kiln's runner jobs:\n")
	for _, r := range k.runners() {
		fmt.Fprintf(&sb, "  %s\n", dump(r))
		log := strings.Split(strings.TrimSpace(k.logText(r.BuildID)), "\n")
		for _, l := range log[max(0, len(log)-15):] {
			fmt.Fprintf(&sb, "    | %s\n", l)
		}
	}
	sb.WriteString("GitHub's jobs:\n")
	for _, j := range k.gh.Jobs() {
		fmt.Fprintf(&sb, "  %d %s %s runner=%q\n", j.ID, j.Status, j.Conclusion, j.RunnerName)
	}
	sb.WriteString("GitHub's runners:\n")
	for _, r := range k.gh.Runners() {
		fmt.Fprintf(&sb, "  %d %s %s busy=%v\n", r.ID, r.Name, r.Status, r.Busy)
	}
	return sb.String()
}

// sandboxes lists the sandboxes of this Kiln's agents on the engine (other
// tests, with other servers whose job ids are the same, may run beside
// this one): of runner job jobID, or all of them when jobID is 0.
func (k *actionsKiln) sandboxes(jobID int64) []sandbox.Info {
	k.t.Helper()
	list, err := listSandboxes(k.rt, k.agentIDs(), jobID)
	if err != nil {
		k.t.Fatal(err)
	}
	return list
}

// agentIDs are the ids of the server's agents.
func (k *actionsKiln) agentIDs() []string {
	k.t.Helper()
	var agents []store.Agent
	if code := k.do("GET", "/api/v1/agents", nil, &agents); code != http.StatusOK {
		k.t.Fatalf("list agents: HTTP %d", code)
	}
	ids := make([]string, 0, len(agents))
	for _, a := range agents {
		ids = append(ids, a.ID)
	}
	return ids
}

// listSandboxes lists the sandboxes of the agents, of job jobID (0: all).
func listSandboxes(rt sandbox.Runtime, agents []string, jobID int64) ([]sandbox.Info, error) {
	var out []sandbox.Info
	for _, a := range agents {
		labels := map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: a}
		if jobID != 0 {
			labels[sandbox.LabelJob] = fmt.Sprint(jobID)
		}
		list, err := rt.List(context.Background(), labels)
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
	}
	return out, nil
}

// waitNoSandboxes waits until this Kiln's agents have no sandbox left.
func (k *actionsKiln) waitNoSandboxes() {
	k.t.Helper()
	waitUntil(k.t, "every sandbox destroyed", func() bool { return len(k.sandboxes(0)) == 0 }, k.state)
}

// relayJobEvents delivers, as GitHub does, the in_progress and completed
// webhooks of the fake's jobs as they move (polled every 100ms: each
// delivery may come a little late, never early), until the test ends.
// Deliveries that fail (Kiln down) are lost, as GitHub's would be after
// its retries.
func (k *actionsKiln) relayJobEvents() {
	stop := make(chan struct{})
	done := make(chan struct{})
	k.t.Cleanup(func() { close(stop); <-done })
	url := k.url + api.ActionsHookPath
	go func() {
		defer close(done)
		sent := map[int64]int{} // job → rank of the last status delivered
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, j := range k.gh.Jobs() {
				for _, action := range []string{"in_progress", "completed"} {
					rank := store.GHStatusRank(action)
					if store.GHStatusRank(j.Status) < rank || sent[j.ID] >= rank {
						continue
					}
					sent[j.ID] = rank
					req, err := fakegithub.Delivery(url, "workflow_job", ghWebhookSecret, k.gh.WorkflowJobPayload(j, action))
					if err != nil {
						continue
					}
					if resp, err := http.DefaultClient.Do(req); err == nil {
						resp.Body.Close()
					}
				}
			}
		}
	}()
}
