package e2e

// The GitHub Actions side of the harness: a fake GitHub that containers can
// reach, the fake runner's image on each engine, and webhook deliveries
// made and signed as GitHub makes them.

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/brokertap"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
	"github.com/kilnci/kiln/internal/sandbox"
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
// (runnerimage.Latest, Hold, Stall) into the engine, unless they are there
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
		err = runnerimage.Ensure(ctx, e.Host, runnerImages.bin, runnerimage.Latest, runnerimage.Hold, runnerimage.Stall)
		runnerImages.engines[e.Host] = err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond every 100ms; waitLimit is the safety net.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting (%s): %s", waitLimit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runnerSandboxes lists the Kiln sandboxes on the engine.
func runnerSandboxes(t *testing.T, rt sandbox.Runtime) []sandbox.Info {
	t.Helper()
	list, err := rt.List(context.Background(), map[string]string{sandbox.LabelManaged: "true"})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// deliver sends a workflow_job webhook for job with action to url, signed
// with secret, and returns the status and body. The same request can be
// sent again (a duplicate delivery keeps its delivery id).
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

func (d *delivery) send(t *testing.T) (int, string) {
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
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}
