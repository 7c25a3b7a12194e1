package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/runnerimage"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// idleWarm lists the live warm runners that serve no GitHub job yet.
func (k *actionsKiln) idleWarm() []api.RunnerView {
	k.t.Helper()
	var out []api.RunnerView
	for _, r := range k.runners() {
		if r.Warm && r.GHJobID == 0 && !r.Status.Terminal() && !r.CancelRequested {
			out = append(out, r)
		}
	}
	return out
}

// A pool with warm 1 keeps one runner registered ahead of any job: a
// queued job gets no runner of its own, the warm runner (a real sandbox
// with the fake runner image) takes and runs it, in_progress links the job
// to it, and a new warm runner appears. Deleting the pool ends the warm
// runner it keeps. While it waits, its JIT configuration and cache token
// are in no `docker inspect` of its sandbox or exec instances.
func TestActionsWarmRunner(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		k := startActions(t, e, actionsOpts{})
		body := store.Pool{Name: "warm", Labels: runnerLabels, Image: runnerimage.Latest.Ref(), MaxRunners: 3, Warm: 1,
			Owner: ghOwner, Repo: ghRepo, MemoryBytes: 256 << 20, CPUs: 1}
		var out map[string]any
		if code := k.do("POST", "/api/v1/pools", body, &out); code != http.StatusCreated {
			t.Fatalf("create pool: HTTP %d %v", code, out)
		}

		// The warm runner starts and registers with GitHub, idle.
		var first api.RunnerView
		waitUntil(t, "a warm runner online", func() bool {
			w := k.idleWarm()
			if len(w) == 1 && w[0].RunnerID != 0 {
				if gr, ok := k.gh.Runner(w[0].RunnerID); ok && gr.Status == "online" {
					first = w[0]
					return true
				}
			}
			return false
		}, k.state)
		if !strings.HasPrefix(first.Name, "kiln-warm-warm-") || first.WarmState != "idle" {
			t.Fatalf("warm runner %+v", first)
		}
		// Its JIT configuration and cache token are in no engine's view.
		if boxes := k.sandboxes(first.JobID); len(boxes) != 1 {
			t.Fatalf("sandboxes of warm runner job %d: %+v", first.JobID, boxes)
		} else {
			checkRunnerSecretsHidden(t, e, boxes[0].ID, "KILN_RUNNER_NAME", first.Name)
		}

		// A job is queued: no runner of its own.
		job := k.gh.QueueJob(ghOwner, ghRepo, runnerLabels)
		code, res := k.deliver(job, "queued")
		if code != http.StatusOK || res["result"] != "warm" {
			t.Fatalf("queued delivery: HTTP %d %v", code, res)
		}
		if rs := k.runnersFor(job.ID); len(rs) != 0 {
			t.Fatalf("runner jobs for a job a warm runner is expected to take: %+v", rs)
		}

		// The warm runner takes it; in_progress links them.
		waitUntil(t, fmt.Sprintf("GitHub job %d taken", job.ID), func() bool { return k.gh.job(t, job.ID).Status != "queued" }, k.state)
		taken := k.gh.job(t, job.ID)
		if taken.RunnerName != first.Name {
			// The replacement warm runner, started when the job was
			// queued, may reach GitHub first: it is a warm runner too.
			if !strings.HasPrefix(taken.RunnerName, "kiln-warm-warm-") {
				t.Fatalf("job %d taken by %q, want a warm runner", job.ID, taken.RunnerName)
			}
			for _, r := range k.runners() {
				if r.Name == taken.RunnerName {
					first = r
				}
			}
			if first.Name != taken.RunnerName {
				t.Fatalf("job %d taken by %q, which is none of Kiln's runners", job.ID, taken.RunnerName)
			}
		}
		taken.Status, taken.Conclusion = "in_progress", ""
		if code, res := k.deliver(taken, "in_progress"); code != http.StatusOK {
			t.Fatalf("in_progress delivery: HTTP %d %v", code, res)
		}
		linked := k.runnersFor(job.ID)
		if len(linked) != 1 || linked[0].JobID != first.JobID {
			t.Fatalf("runner jobs of job %d: %+v, want the warm runner job %d", job.ID, linked, first.JobID)
		}

		// A new warm runner appears; the job completes on the first one.
		waitUntil(t, "a new warm runner", func() bool {
			w := k.idleWarm()
			return len(w) == 1 && w[0].JobID != first.JobID
		}, k.state)
		done := k.waitGHJob(job.ID, "completed")
		if done.Conclusion != "success" {
			t.Fatalf("job %+v", done)
		}
		if r := k.waitRunnerDone(first.JobID); r.Status != store.StatusSuccess {
			t.Fatalf("warm runner job ended %s: %s", r.Status, r.Error)
		}
		if rs := k.runnersFor(job.ID); len(rs) != 1 {
			t.Fatalf("runner jobs of job %d: %+v, want only the warm runner", job.ID, rs)
		}

		// Deleting the pool ends its warm runner (the cleanup waits for
		// its sandbox to go).
		if code := k.do("DELETE", "/api/v1/pools/warm", nil, &out); code != http.StatusOK {
			t.Fatalf("delete pool: HTTP %d %v", code, out)
		}
	})
}
