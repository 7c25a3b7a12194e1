package api_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// The GitHub App the Actions tests connect Kiln as.
const (
	ghAppID        = 31
	ghInstallation = 777
	ghSecret       = "kiln-api-test-actions-secret"
	ghOwner        = "acme"
	ghRepo         = "web"
)

var ghLabels = []string{"self-hosted", "linux", "kiln"}

var (
	ghKeyOnce sync.Once
	ghKey     *rsa.PrivateKey
)

// actionsEnv is a control plane connected as a GitHub App to a fake
// GitHub (a real HTTP server), with pool "linux" of the test organization.
// The reconciler and reaper wait an hour between passes: only what a test
// does happens.
type actionsEnv struct {
	*env
	gh *fakegithub.Server
}

func newActionsEnv(t *testing.T) *actionsEnv {
	t.Helper()
	ghKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		ghKey = k
	})
	gh := fakegithub.New()
	t.Cleanup(gh.Close)
	gh.RegisterApp(ghAppID, &ghKey.PublicKey, ghInstallation)
	e := newEnv(t, func(c *server.Config) {
		c.Actions.GitHub = actions.Connection{BaseURL: gh.URL(), AppID: ghAppID, WebhookSecret: ghSecret,
			PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(ghKey)})}
		c.Actions.ReconcileInterval, c.Actions.ReapInterval = time.Hour, time.Hour
	})
	a := &actionsEnv{env: e, gh: gh}
	a.api("POST", "/api/v1/pools", map[string]any{"name": "linux", "labels": ghLabels, "image": "localhost/kiln/runner:test",
		"max_runners": 2, "owner": ghOwner, "installation_id": ghInstallation}).want(t, http.StatusCreated, nil)
	return a
}

// deliver posts the fake's workflow_job webhook for job and action,
// signed with secret, under delivery id.
func (a *actionsEnv) deliver(job fakegithub.Job, action, delivery, secret string) *response {
	a.t.Helper()
	body := a.gh.WorkflowJobPayload(job, action)
	h := githubHeader("workflow_job", delivery, "", body)
	if secret != "" {
		h.Set("X-Hub-Signature-256", fakegithub.SignPayload(secret, body))
	}
	return a.do("", "POST", api.ActionsHookPath, body, h)
}

// hookAnswer is the webhook's JSON answer.
type hookAnswer struct {
	Result     string `json:"result"`
	JobID      int64  `json:"job_id"`
	BuildID    int64  `json:"build_id"`
	RunnerName string `json:"runner_name"`
	Duplicate  bool   `json:"duplicate"`
	Status     string `json:"status"`
}

func (a *actionsEnv) runners() []api.RunnerView {
	a.t.Helper()
	var out []api.RunnerView
	a.api("GET", "/api/v1/runners", nil).want(a.t, http.StatusOK, &out)
	return out
}

func TestActionsWebhook(t *testing.T) {
	a := newActionsEnv(t)
	job := a.gh.QueueJob(ghOwner, ghRepo, ghLabels)

	a.deliver(job, "queued", "d-bad", "not-the-secret-at-all").wantError(t, http.StatusUnauthorized, "bad_signature")
	a.deliver(job, "queued", "d-unsigned", "").wantError(t, http.StatusUnauthorized, "bad_signature")
	big := append(a.gh.WorkflowJobPayload(job, "queued"), bytes.Repeat([]byte(" "), 64<<10)...)
	a.do("", "POST", api.ActionsHookPath, big, githubHeader("workflow_job", "d-big", ghSecret, big)).wantError(t, http.StatusRequestEntityTooLarge, "too_large")
	bad := []byte(`{"action": "queued", "workflow_job": 12}`)
	a.do("", "POST", api.ActionsHookPath, bad, githubHeader("workflow_job", "d-malformed", ghSecret, bad)).wantError(t, http.StatusBadRequest, "malformed")
	ping := fixture(t, "github/ping.0.json")
	a.do("", "POST", api.ActionsHookPath, ping, githubHeader("ping", "d-ping", ghSecret, ping)).want(t, http.StatusOK, nil)

	stranger := job
	stranger.InstallationID = ghInstallation + 1
	a.deliver(stranger, "queued", "d-stranger", ghSecret).wantError(t, http.StatusForbidden, "unknown_installation")

	gpu := a.gh.QueueJob(ghOwner, ghRepo, []string{"self-hosted", "gpu"})
	var ans hookAnswer
	a.deliver(gpu, "queued", "d-gpu", ghSecret).want(t, http.StatusAccepted, &ans)
	if ans.Result != string(actions.OutcomeUnmatched) || ans.JobID != 0 {
		t.Errorf("unmatched: %+v", ans)
	}
	if len(a.runners()) != 0 {
		t.Fatalf("refused deliveries made runner jobs: %s", dump(a.runners()))
	}

	a.deliver(job, "queued", "d-1", ghSecret).want(t, http.StatusCreated, &ans)
	if ans.Result != string(actions.OutcomeRunner) || ans.JobID == 0 || ans.BuildID == 0 || ans.RunnerName != fmt.Sprintf("kiln-%d", job.ID) {
		t.Fatalf("queued: %+v", ans)
	}
	first := ans
	ans = hookAnswer{}
	a.deliver(job, "queued", "d-1", ghSecret).want(t, http.StatusOK, &ans)
	if !ans.Duplicate || ans.JobID != first.JobID {
		t.Errorf("redelivery: %+v", ans)
	}
	a.deliver(job, "queued", "d-2", ghSecret).want(t, http.StatusOK, &ans)
	if ans.Result != string(actions.OutcomeUnchanged) {
		t.Errorf("second queued: %+v", ans)
	}

	rs := a.runners()
	if len(rs) != 1 || rs[0].JobID != first.JobID || rs[0].GHJobID != job.ID || rs[0].HTMLURL != job.HTMLURL || rs[0].State != "queued" ||
		rs[0].Name != first.RunnerName || rs[0].Project != "gh-acme-web" {
		t.Fatalf("runners: %s", dump(rs))
	}
	b := a.build(first.BuildID)
	if b.Trigger != store.TriggerGitHubActions || !strings.Contains(b.Message, job.HTMLURL) || len(b.Jobs) != 1 || b.Jobs[0].Pool != "linux" {
		t.Errorf("build: %s", dump(b))
	}
	wantMetrics(t, a.metrics(), map[string]float64{
		sample("kiln_actions_webhooks_total", "action", "queued", "result", "runner"):               1,
		sample("kiln_actions_webhooks_total", "action", "queued", "result", "duplicate"):            1,
		sample("kiln_actions_webhooks_total", "action", "queued", "result", "unchanged"):            1,
		sample("kiln_actions_webhooks_total", "action", "queued", "result", "unmatched"):            1,
		sample("kiln_actions_webhooks_total", "action", "queued", "result", "unknown_installation"): 1,
		sample("kiln_actions_webhooks_total", "action", "none", "result", "bad_signature"):          2,
		sample("kiln_actions_webhooks_total", "action", "ping", "result", "ping"):                   1,
		sample("kiln_actions_unmatched_jobs_total"):                                                 1,
		sample("kiln_actions_runners", "state", "queued"):                                           1,
	})
}

// Without -github-webhook-secret the endpoint does not exist.
func TestActionsWebhookNotConfigured(t *testing.T) {
	e := newEnv(t)
	body := []byte(`{}`)
	e.do("", "POST", api.ActionsHookPath, body, githubHeader("workflow_job", "d", ghSecret, body)).wantError(t, http.StatusNotFound, "not_configured")
}

// An agent's claim of a runner job launches the runner: the assignment
// carries the JIT configuration as a secret only, no checkout, and the
// cache service's variables; a claim of one whose GitHub job is no longer
// queued answers "nothing to do" and cancels it without a JIT call.
func TestActionsClaim(t *testing.T) {
	a := newActionsEnv(t)
	job := a.gh.QueueJob(ghOwner, ghRepo, ghLabels)
	var ans hookAnswer
	a.deliver(job, "queued", "d-1", ghSecret).want(t, http.StatusCreated, &ans)
	a.register("a1")

	asg := a.mustClaim("a1")
	jit := asg.Secrets[actions.JITConfigEnv]
	if asg.JobID != ans.JobID || !asg.SkipCheckout || jit == "" || asg.Spec.Steps[0].Run != actions.DefaultCommand {
		t.Fatalf("assignment %s", dump(asg))
	}
	spec, _ := json.Marshal(asg.Spec)
	if strings.Contains(string(spec), jit) {
		t.Error("the JIT configuration is in the job's spec")
	}
	if asg.Spec.Env["ACTIONS_RESULTS_URL"] == "" || asg.Secrets["ACTIONS_RUNTIME_TOKEN"] == "" || asg.Spec.Env["ACTIONS_RUNTIME_TOKEN"] != "" {
		t.Errorf("cache service variables: env %v", asg.Spec.Env)
	}
	rs := a.runners()
	if len(rs) != 1 || rs[0].RunnerID == 0 || rs[0].State != "starting" {
		t.Fatalf("runners %s", dump(rs))
	}
	if r, ok := a.gh.Runner(rs[0].RunnerID); !ok || r.Name != ans.RunnerName {
		t.Fatalf("GitHub's runner %+v", r)
	}
	if strings.Contains(dump(rs)+dump(a.build(ans.BuildID)), jit) {
		t.Error("the JIT configuration is in the API's answers")
	}

	// A job that ended on GitHub with no webhook saying so.
	gone := a.gh.QueueJob(ghOwner, ghRepo, ghLabels)
	var ans2 hookAnswer
	a.deliver(gone, "queued", "d-2", ghSecret).want(t, http.StatusCreated, &ans2)
	a.gh.CancelRun(ghOwner, ghRepo, gone.RunID)
	jitCalls := a.gh.Calls(fakegithub.EndpointGenerateJITConfig)
	if got := a.claim("a1", 0); got != nil {
		t.Fatalf("claimed %s", dump(got))
	}
	if n := a.gh.Calls(fakegithub.EndpointGenerateJITConfig); n != jitCalls {
		t.Errorf("%d JIT calls for a job no longer queued", n-jitCalls)
	}
	if b := a.build(ans2.BuildID); b.Status != store.StatusCanceled {
		t.Errorf("build of the gone job: %s", dump(b))
	}
}

func TestPoolsAPI(t *testing.T) {
	a := newActionsEnv(t)
	var p store.Pool
	a.api("GET", "/api/v1/pools/linux", nil).want(t, http.StatusOK, &p)
	if p.RunnerGroupID != 1 || p.Command != actions.DefaultCommand || p.TimeoutSeconds < 3600 || p.MaxRunners != 2 || p.CreatedAt.IsZero() {
		t.Errorf("defaults: %s", dump(p))
	}
	a.api("POST", "/api/v1/pools", map[string]any{"name": "linux", "labels": ghLabels, "image": "x", "max_runners": 1, "owner": ghOwner,
		"installation_id": ghInstallation}).wantError(t, http.StatusConflict, "conflict")
	a.api("POST", "/api/v1/pools", map[string]any{"name": "Bad Name", "labels": []string{"linux"}, "max_runners": 0, "owner": "acme/web", "warm": 2}).
		wantError(t, http.StatusBadRequest, "invalid", "name:", "labels:", `"self-hosted"`, "image:", "max_runners:", "owner:", "installation_id:", "warm:")
	a.api("POST", "/api/v1/pools", map[string]any{"name": "x", "labelz": ghLabels}).wantError(t, http.StatusBadRequest, "bad_request")

	big := map[string]any{"name": "web-big", "labels": []string{"self-hosted", "big"}, "image": "localhost/kiln/runner:test",
		"max_runners": 4, "owner": ghOwner, "repo": ghRepo, "installation_id": ghInstallation, "cpus": 4, "memory_bytes": 8 << 30,
		"agent_labels": []string{"big-host"}}
	// A pool's resources obey the agents' limits, as a pipeline's do: no
	// agent carries big-host yet, and the default limits are 2 CPUs, 2g.
	a.api("POST", "/api/v1/pools", big).wantError(t, http.StatusBadRequest, "invalid", "resources.cpus: asks for 4", "at most 2", "resources.memory: asks for 8g", "at most 2g")
	a.agentAPI("/register", protocol.RegisterRequest{ID: "big1", Labels: []string{"linux", "big-host"}, Capacity: 1,
		Max: pipeline.Resources{CPUs: 8, MemoryBytes: 16 << 30, Pids: 4096}}).want(t, http.StatusOK, nil)
	a.api("POST", "/api/v1/pools", big).want(t, http.StatusCreated, &p)
	var ps []store.Pool
	a.api("GET", "/api/v1/pools", nil).want(t, http.StatusOK, &ps)
	if len(ps) != 2 || ps[0].Name != "linux" || ps[1].Name != "web-big" || ps[1].CPUs != 4 || ps[1].AgentLabels[0] != "big-host" {
		t.Fatalf("pools %s", dump(ps))
	}

	// Deleting a pool cancels its runner jobs.
	var ans hookAnswer
	a.deliver(a.gh.QueueJob(ghOwner, ghRepo, []string{"self-hosted", "big"}), "queued", "d-1", ghSecret).want(t, http.StatusCreated, &ans)
	var del struct {
		Canceled []int64 `json:"canceled_builds"`
	}
	a.api("DELETE", "/api/v1/pools/web-big", nil).want(t, http.StatusOK, &del)
	if len(del.Canceled) != 1 || del.Canceled[0] != ans.BuildID {
		t.Errorf("deleted: %+v", del)
	}
	if b := a.build(ans.BuildID); b.Status != store.StatusCanceled {
		t.Errorf("build of the deleted pool: %s", b.Status)
	}
	a.api("GET", "/api/v1/pools/web-big", nil).wantError(t, http.StatusNotFound, "not_found")
	a.api("DELETE", "/api/v1/pools/web-big", nil).wantError(t, http.StatusNotFound, "not_found")
	a.do("", "GET", "/api/v1/pools", nil, nil).wantError(t, http.StatusUnauthorized, "unauthorized")
}
