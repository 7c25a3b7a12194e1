// Tests of the Actions service against internal/github/fakegithub as a
// real HTTP server, with real workflow_job payloads (the fake's
// WorkflowJobPayload, signed and parsed as a delivery is), a real SQLite
// store and the real GitHub client. Agents are played by claiming from
// the store and calling Launch, as the agent protocol does. Time is a
// fake clock shared by the service and the store; nothing sleeps.
package actions_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store/storetest"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

const (
	appID        = 17
	installation = 4242
	hookSecret   = "kiln-actions-test-webhook-secret"
	owner        = "acme"
	repo         = "web"
)

var labels = []string{"self-hosted", "linux", "kiln"}

var ctx = context.Background()

var (
	keyOnce sync.Once
	appKey  *rsa.PrivateKey
)

// key is the test App's private key, made once per test binary.
func key(t *testing.T) *rsa.PrivateKey {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		appKey = k
	})
	return appKey
}

// clock is the fake time of the service and the store; it starts at the
// real time so that GitHub's rate-limit resets (real time) stay near.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logSink keeps what the service logs, for tests that check it.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the logged records (JSON) whose message is msg.
func (l *logSink) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var rec map[string]any
		if len(line) == 0 {
			continue
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

type harness struct {
	t        *testing.T
	logs     logSink
	gh       *fakegithub.Server
	database string // reopened on a restart
	st       *store.Store
	m        *metrics.Metrics
	cfg      actions.Config
	svc      *actions.Service
	clock    *clock
}

func newHarness(t *testing.T, opts ...func(*actions.Config)) *harness {
	t.Helper()
	gh := fakegithub.New()
	t.Cleanup(gh.Close)
	k := key(t)
	gh.RegisterApp(appID, &k.PublicKey, installation)
	h := &harness{t: t, gh: gh, database: storetest.Database(t), clock: &clock{t: time.Now().Truncate(time.Millisecond)}}
	h.cfg = actions.DefaultConfig()
	h.cfg.GitHub = actions.Connection{BaseURL: gh.URL(), AppID: appID, PrivateKeyPEM: pemOf(k), WebhookSecret: hookSecret}
	h.cfg.Now = h.clock.now
	for _, o := range opts {
		o(&h.cfg)
	}
	h.open()
	return h
}

// open opens the store (again, after a restart) and makes a new service.
func (h *harness) open() {
	h.t.Helper()
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := store.Open(ctx, h.database, box)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { st.Close() })
	st.SetClock(h.clock.now)
	h.st = st
	h.m = metrics.New(nil)
	var w io.Writer = &h.logs
	if os.Getenv("KILN_TEST_VERBOSE") != "" {
		w = io.MultiWriter(w, os.Stderr)
	}
	log := slog.New(slog.NewJSONHandler(w, nil))
	if h.svc, err = actions.New(h.cfg, st, h.m, log, nil); err != nil {
		h.t.Fatal(err)
	}
}

// restart closes the store and opens it again with a new service: what a
// control plane restart keeps is what the database holds.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.st.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

// pool creates a pool of the test repository's organization.
func (h *harness) pool(name string, max int, edit ...func(*store.Pool)) *store.Pool {
	h.t.Helper()
	p := &store.Pool{Name: name, Labels: labels, Image: "localhost/kiln/runner:test", MaxRunners: max, Owner: owner, InstallationID: installation,
		AgentLabels: []string{"linux"}}
	for _, e := range edit {
		e(p)
	}
	if err := h.svc.PreparePool(p); err != nil {
		h.t.Fatal(err)
	}
	if err := h.st.CreatePool(ctx, p); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// queue queues a job on the fake GitHub (no webhook).
func (h *harness) queue(l ...string) fakegithub.Job {
	if len(l) == 0 {
		l = labels
	}
	return h.gh.QueueJob(owner, repo, l)
}

// deliver sends job's workflow_job webhook for action as GitHub would
// (the real payload, signed), parsed as Kiln parses it, and returns the
// delivery id (to send it again) and the service's answer.
func (h *harness) deliver(job fakegithub.Job, action string) (string, *actions.WebhookResult, error) {
	h.t.Helper()
	body := h.gh.WorkflowJobPayload(job, action)
	req, err := fakegithub.Delivery("http://kiln.invalid/hooks/github-actions", "workflow_job", hookSecret, body)
	if err != nil {
		h.t.Fatal(err)
	}
	id := req.Header.Get("X-GitHub-Delivery")
	res, err := h.redeliver(id, body)
	return id, res, err
}

// redeliver delivers body again under delivery id.
func (h *harness) redeliver(id string, body []byte) (*actions.WebhookResult, error) {
	h.t.Helper()
	req, err := fakegithub.Delivery("http://kiln.invalid/hooks/github-actions", "workflow_job", hookSecret, body)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("X-GitHub-Delivery", id)
	ev, err := forge.Parse("github", req.Header, body, hookSecret)
	if err != nil {
		h.t.Fatalf("parse the fake's delivery: %v", err)
	}
	return h.svc.HandleWorkflowJob(ctx, ev.DeliveryID, ev.WorkflowJob)
}

// mustDeliver delivers and wants outcome.
func (h *harness) mustDeliver(job fakegithub.Job, action string, want actions.Outcome) *actions.WebhookResult {
	h.t.Helper()
	_, res, err := h.deliver(job, action)
	if err != nil {
		h.t.Fatal(err)
	}
	if res.Outcome != want {
		h.t.Fatalf("deliver %s of job %d: outcome %s, want %s (%+v)", action, job.ID, res.Outcome, want, res)
	}
	return res
}

// claim claims a job as agent "agent" with label linux (nil when none).
func (h *harness) claim(agent string) *store.Job {
	h.t.Helper()
	j, err := h.st.ClaimJob(ctx, store.Claim{AgentID: agent, Labels: []string{"linux"}, Lease: time.Minute,
		StepNames: func([]byte) []string { return []string{"runner"} }})
	if err != nil {
		h.t.Fatal(err)
	}
	return j
}

// claimLaunch claims a runner job and launches it; the job must be there.
func (h *harness) claimLaunch(agent string) (*store.Job, *actions.Launch, error) {
	h.t.Helper()
	j := h.claim(agent)
	if j == nil {
		h.t.Fatal("claim: no job")
	}
	l, err := h.svc.Launch(ctx, j)
	return j, l, err
}

func (h *harness) job(id int64) *store.Job {
	h.t.Helper()
	j, err := h.st.Job(ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return j
}

func (h *harness) runnerJobs() []*store.RunnerJob {
	h.t.Helper()
	rs, err := h.st.ListRunnerJobs(ctx, store.RunnerFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	return rs
}

// runnersNamed lists the fake's runners named name.
func (h *harness) runnersNamed(name string) []fakegithub.Runner {
	var out []fakegithub.Runner
	for _, r := range h.gh.Runners() {
		if r.Name == name {
			out = append(out, r)
		}
	}
	return out
}

// counter reads a counter or gauge of the service's metrics.
func (h *harness) counter(name string, labelPairs ...string) float64 {
	h.t.Helper()
	mfs, err := h.m.Registry.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(labelPairs); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labelPairs[i] && lp.GetValue() == labelPairs[i+1])
				}
				if !found {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			if hs := m.GetHistogram(); hs != nil {
				return float64(hs.GetSampleCount())
			}
		}
	}
	return 0
}

// register plays the runner in the sandbox: it registers at the fake's
// broker with the JIT configuration it was given.
func (h *harness) register(l *actions.Launch) fakegithub.Assignment {
	h.t.Helper()
	var a fakegithub.Assignment
	if err := h.broker("register", map[string]any{"jitconfig": l.Secrets[actions.JITConfigEnv]}, &a); err != nil {
		h.t.Fatal(err)
	}
	return a
}

// client is a GitHub client of the test installation, to arrange GitHub's
// state as another party would.
func (h *harness) client() *github.Client {
	h.t.Helper()
	c, err := github.New(github.Config{BaseURL: h.gh.URL(), AppID: appID, PrivateKeyPEM: pemOf(key(h.t)), InstallationID: installation})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) broker(op string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := http.Post(h.gh.BrokerURL()+"_fake/runner/"+op, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("broker %s: HTTP %d: %s", op, resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

func pemOf(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}
