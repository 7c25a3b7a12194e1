package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kilnci/kiln/bench/internal/inproc"
	"github.com/kilnci/kiln/bench/internal/stats"
	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

const webhookSecret = "actionsbench-webhook-secret"

// kiln is a control plane and one agent in this process, as `kiln up`
// runs them (the agent speaks HTTP to the server on loopback), connected
// to the fake GitHub with a token, with one pool serving runnerLabels.
type kiln struct {
	g          *gh
	url, admin string
	stop       func()
}

func startKiln(ctx context.Context, g *gh, engine string) (*kiln, error) {
	dir, err := os.MkdirTemp("", "actionsbench")
	if err != nil {
		return nil, err
	}
	var logOut io.Writer = io.Discard
	if os.Getenv("ACTIONSBENCH_VERBOSE") != "" {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))
	cfg := server.DefaultConfig()
	cfg.Actions.GitHub = actions.Connection{BaseURL: g.fake.URL(), Token: ghToken, WebhookSecret: webhookSecret}
	// Webhooks only: the reconciler would add GitHub calls to every job.
	cfg.Actions.ReconcileInterval = time.Hour
	up, err := inproc.Up(ctx, cfg, engine, inproc.Agent{ID: "actionsbench-agent", Labels: []string{"linux"}, Memory: 256 << 20}, dir, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	k := &kiln{g: g, url: up.URL, admin: up.Admin}
	k.stop = func() { up.Stop(); os.RemoveAll(dir) }
	fail := func(err error) (*kiln, error) { k.stop(); return nil, err }
	pool := store.Pool{Name: "bench", Labels: runnerLabels, Image: runnerimage.Latest.Ref(), MaxRunners: 2, Owner: ghOwner, Repo: ghRepo, MemoryBytes: 256 << 20, CPUs: 1}
	if err := k.api("POST", "/api/v1/pools", pool, nil); err != nil {
		return fail(err)
	}
	return k, nil
}

func (k *kiln) api(method, path string, in, out any) error {
	return apiclient.Client{URL: k.url, Token: k.admin}.Do(context.Background(), method, path, in, out)
}

// phase is one Kiln job's timeline: the webhook sent, the runner job
// claimed by the agent (its start), the sandbox started (the agent's log
// line), the runner's register call at the broker, the runner job
// finished (sandbox destroyed, reported).
type phase struct{ sent, claimed, sandbox, registered, done time.Time }

type phases struct{ toClaim, toSandbox, toRegister, e2e []time.Duration }

func (p *phases) add(q phase) {
	p.toClaim = append(p.toClaim, q.claimed.Sub(q.sent))
	p.toSandbox = append(p.toSandbox, q.sandbox.Sub(q.claimed))
	p.toRegister = append(p.toRegister, q.registered.Sub(q.sandbox))
	p.e2e = append(p.e2e, q.done.Sub(q.sent))
}

func (p *phases) print() {
	fmt.Println("where kiln's time goes (p50 of each phase, from the runner job's records):")
	for _, ph := range []struct {
		what string
		ds   []time.Duration
	}{
		{"webhook → runner job claimed by the agent (store, long-poll wake)", p.toClaim},
		{"claimed → sandbox started (job check, JIT config, network, container)", p.toSandbox},
		{"sandbox started → runner registered (exec, runner start, register call)", p.toRegister},
		{"whole job, webhook → runner job finished (incl. destroy, reports)", p.e2e},
	} {
		fmt.Printf("  %-74s %8s\n", ph.what+":", ms(stats.Pct(ph.ds, 50)))
	}
}

// one queues a job on the fake, delivers its signed queued webhook to
// Kiln, and waits for the job to complete and its runner job to end; it
// returns the time from the webhook's sending to the runner's register
// call at the broker.
func (k *kiln) one(ctx context.Context, i int) (time.Duration, phase, error) {
	var p phase
	job := k.g.fake.QueueJob(ghOwner, ghRepo, runnerLabels)
	req, err := fakegithub.Delivery(k.url+api.ActionsHookPath, "workflow_job", webhookSecret, k.g.fake.WorkflowJobPayload(job, "queued"))
	if err != nil {
		return 0, p, err
	}
	p.sent = time.Now()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, p, err
	}
	var out struct {
		JobID int64 `json:"job_id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil || out.JobID == 0 {
		return 0, p, fmt.Errorf("queued webhook: HTTP %d (%v)", resp.StatusCode, err)
	}
	deadline := time.Now().Add(3 * time.Minute) // a safety net, not a measure
	for {
		var rs []api.RunnerView
		if err := k.api("GET", "/api/v1/runners", nil, &rs); err != nil {
			return 0, p, err
		}
		var r *api.RunnerView
		for i := range rs {
			if rs[i].JobID == out.JobID {
				r = &rs[i]
			}
		}
		j, _ := k.g.fake.Job(job.ID)
		if r != nil && r.Status.Terminal() && j.Status == "completed" {
			if r.Status != store.StatusSuccess || r.StartedAt == nil || r.FinishedAt == nil {
				return 0, p, fmt.Errorf("runner job %d: %s %s\n%s", r.JobID, r.Status, r.Error, k.log(r.BuildID))
			}
			reg, ok := k.g.tap.Registered(j.RunnerID)
			if !ok {
				return 0, p, fmt.Errorf("job %d: runner %d never registered through the tap", job.ID, j.RunnerID)
			}
			p.claimed, p.registered, p.done = *r.StartedAt, reg.At, *r.FinishedAt
			var err error
			if p.sandbox, err = k.sandboxStarted(r.BuildID); err != nil {
				return 0, p, err
			}
			return reg.At.Sub(p.sent), p, nil
		}
		if time.Now().After(deadline) {
			log := ""
			if r != nil {
				log = k.log(r.BuildID)
			}
			return 0, p, fmt.Errorf("job %d (runner job %d) not done after 3 minutes: GitHub says %s\n%s", job.ID, out.JobID, j.Status, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines is a runner job's build log.
func (k *kiln) lines(buildID int64) ([]store.LogLine, error) {
	var jobs []struct {
		Lines []store.LogLine
	}
	if err := k.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs", buildID), nil, &jobs); err != nil {
		return nil, err
	}
	var out []store.LogLine
	for _, j := range jobs {
		out = append(out, j.Lines...)
	}
	return out, nil
}

// sandboxStarted is when the agent logged the sandbox as started.
func (k *kiln) sandboxStarted(buildID int64) (time.Time, error) {
	lines, err := k.lines(buildID)
	if err != nil {
		return time.Time{}, err
	}
	for _, l := range lines {
		if strings.HasPrefix(l.Text, "[kiln] sandbox ") {
			return l.Time, nil
		}
	}
	return time.Time{}, fmt.Errorf("build %d: no \"[kiln] sandbox\" line in the log", buildID)
}

// log is a runner job's build log, for an error message.
func (k *kiln) log(buildID int64) string {
	lines, err := k.lines(buildID)
	if err != nil {
		return err.Error()
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString("  | " + l.Text + "\n")
	}
	return sb.String()
}
