package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// A signed GitHub push (a real payload) builds exactly that commit in a fresh
// sandbox; logs are stored, secrets masked (also when printed in pieces),
// the sandbox is gone afterwards, and a redelivery builds nothing.
func TestPushBuildsCommitInSandbox(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		repo, first := newRepo(t, map[string]string{
			".kiln.yml": pipelineFile("env:\n  GREETING: hello\n",
				`echo "$GREETING from $KILN_COMMIT"`,
				`cat README`,
				`echo "token=$API_TOKEN"; printf 'split=%s' "${API_TOKEN%????????}"; printf '%s\n' "${API_TOKEN#??????????}"`,
				`test ! -e /var/run/docker.sock && test ! -e /run/podman/podman.sock && echo no-engine-socket`,
				`cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max`),
			"README": "first version\n",
		})
		second := commit(t, repo, map[string]string{"README": "second version\n"})
		h.addProject("app", repo, projectOpts{secrets: map[string]string{"API_TOKEN": "s3cr3t-t0ken-value"}})

		// Build the first commit even though main has moved on: a push names its commit.
		code, resp := h.postGitHub("app", "push", "delivery-1", "webhook-secret-app", githubPush(t, "refs/heads/main", first))
		if code != http.StatusCreated {
			t.Fatalf("push: HTTP %d %v", code, resp)
		}
		id := int64(resp["build_id"].(float64))
		b := h.waitDone(id)
		log := h.logText(id)
		if b.Status != store.StatusSuccess {
			t.Fatalf("build %s:\n%s\n%s", b.Status, dump(b), log)
		}
		for _, want := range []string{"hello from " + first, "first version", "token=***", "split=***", "no-engine-socket", "1024"} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "s3cr3t") || strings.Contains(log, "t0ken-value") {
			t.Errorf("secret leaked into the log:\n%s", log)
		}
		if b.Commit != first || b.Jobs[0].Attempt != 1 {
			t.Errorf("commit %s attempt %d", b.Commit, b.Jobs[0].Attempt)
		}
		for _, st := range b.Jobs[0].Steps {
			if st.Status != store.StatusSuccess || st.ExitCode == nil || *st.ExitCode != 0 || st.StartedAt == nil || st.FinishedAt == nil {
				t.Errorf("step %+v", st)
			}
		}
		h.waitSandboxGone(b.Jobs[0].ID)

		// The same delivery again: acknowledged, not built twice.
		code, resp = h.postGitHub("app", "push", "delivery-1", "webhook-secret-app", githubPush(t, "refs/heads/main", first))
		if code != http.StatusOK || resp["duplicate"] != true {
			t.Fatalf("redelivery: HTTP %d %v", code, resp)
		}
		// A second push builds the second commit, fetching only what is new.
		code, resp = h.postGitHub("app", "push", "delivery-2", "webhook-secret-app", githubPush(t, "refs/heads/main", second))
		if code != http.StatusCreated {
			t.Fatalf("second push: HTTP %d", code)
		}
		id2 := int64(resp["build_id"].(float64))
		if b := h.waitDone(id2); b.Status != store.StatusSuccess || !strings.Contains(h.logText(id2), "second version") {
			t.Fatalf("second build %s:\n%s", b.Status, h.logText(id2))
		}
		var builds []store.Build
		h.do("GET", "/api/v1/builds?project=app", nil, &builds)
		if len(builds) != 2 {
			t.Fatalf("got %d builds, want 2", len(builds))
		}
	})
}

// A failing step fails the job with its exit code; later steps are skipped
// and the user's failure is not retried.
func TestFailingStepIsNotRetried(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", "echo before", "exit 3", "echo never")})
		h.addProject("app", repo, projectOpts{})
		b := h.waitDone(h.trigger("app", "main"))
		if b.Status != store.StatusFailure {
			t.Fatalf("status %s", b.Status)
		}
		j := b.Jobs[0]
		if j.Attempt != 1 || j.ExitCode == nil || *j.ExitCode != 3 {
			t.Fatalf("job %+v", j)
		}
		want := []store.Status{store.StatusSuccess, store.StatusFailure, store.StatusSkipped}
		for i, st := range j.Steps {
			if st.Status != want[i] {
				t.Errorf("step %d: %s, want %s", i, st.Status, want[i])
			}
		}
		if log := h.logText(b.ID); strings.Contains(log, "never") || !strings.Contains(log, `failed with exit code 3`) {
			t.Errorf("log:\n%s", log)
		}
	})
}

// An invalid .kiln.yml fails the build with file:line:col: field: message.
func TestInvalidPipelineReportsLocation(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": "image: x\njobs:\n  test:\n    steps:\n      - name: no run here\n"})
		h.addProject("app", repo, projectOpts{})
		b := h.waitDone(h.trigger("app", "main"))
		log := h.logText(b.ID)
		if b.Status != store.StatusFailure || !strings.Contains(log, ".kiln.yml:5:") || !strings.Contains(log, "jobs.test.steps[0].run") {
			t.Fatalf("status %s, log:\n%s", b.Status, log)
		}
		// No pipeline file at all is the user's failure too.
		repo2, _ := newRepo(t, map[string]string{"README": "x"})
		h.addProject("bare", repo2, projectOpts{})
		b = h.waitDone(h.trigger("bare", "main"))
		if b.Status != store.StatusFailure || !strings.Contains(h.logText(b.ID), ".kiln.yml: no such file") {
			t.Fatalf("no pipeline: %s %s", b.Status, h.logText(b.ID))
		}
	})
}

// A missing image is an infrastructure error: retried, then error, with a
// clear message. Under the default pull policy the agent tries its
// registry (here: none answers); under `pull: never` it says so.
func TestMissingImageIsErrorAndRetried(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		// Six errors in a row on one agent: not quarantined for them.
		h := startServerWith(t, e, func(c *server.Config) { c.Scheduler.QuarantineAfter = 0 })
		h.startAgent("a1", nil)
		for _, tc := range []struct{ project, pull, says string }{
			{"app", "", "registry unavailable"},
			{"never", "pull: never\n", "not on this host and the job's pull policy is never"},
		} {
			repo, _ := newRepo(t, map[string]string{".kiln.yml": "image: localhost/kiln/does-not-exist:1\n" + tc.pull + "steps:\n  - run: echo hi\n"})
			h.addProject(tc.project, repo, projectOpts{})
			b := h.waitDone(h.trigger(tc.project, "main"))
			if b.Status != store.StatusError || b.Jobs[0].Attempt != 3 {
				t.Fatalf("%s: status %s attempt %d", tc.project, b.Status, b.Jobs[0].Attempt)
			}
			if log := h.logText(b.ID); !strings.Contains(log, "localhost/kiln/does-not-exist:1") || !strings.Contains(log, tc.says) {
				t.Fatalf("%s: log does not say %q:\n%s", tc.project, tc.says, log)
			}
		}
	})
}

// A job past its timeout ends timed_out and its sandbox is destroyed.
func TestTimeout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("timeout: 10s\n", "echo start", "sleep 120")})
		h.addProject("app", repo, projectOpts{})
		b := h.waitDone(h.trigger("app", "main"))
		if b.Status != store.StatusTimedOut || b.Jobs[0].Steps[1].Status != store.StatusTimedOut {
			t.Fatalf("build %s", dump(b))
		}
		h.waitSandboxGone(b.Jobs[0].ID)
	})
}

// gateStep blocks until the test creates the file "go" in the job's
// workspace (bind-mounted from the agent's work dir), so a test can act
// while a step is surely running, without sleeping.
const gateStep = `echo waiting; while [ ! -e /workspace/go ]; do sleep 0.1; done; echo released`

// openGate releases every gated job of the agent with workDir.
func openGate(t *testing.T, workDir string) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(workDir, "jobs", "*", "src"))
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func stepRunning(b *store.Build) bool {
	return len(b.Jobs) > 0 && len(b.Jobs[0].Steps) > 0 && b.Jobs[0].Steps[0].Status == store.StatusRunning
}

// Canceling a running build stops it and removes its sandbox.
func TestCancelRunningBuild(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", gateStep, "echo after")})
		h.addProject("app", repo, projectOpts{})
		id := h.trigger("app", "main")
		h.waitFor(id, "a running step", stepRunning)
		if code := h.do("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", id), nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel: HTTP %d", code)
		}
		b := h.waitDone(id)
		if b.Status != store.StatusCanceled || b.Jobs[0].Steps[0].Status != store.StatusCanceled {
			t.Fatalf("build %s", dump(b))
		}
		h.waitSandboxGone(b.Jobs[0].ID)
	})
}

// With cancel_superseded, a new build of a branch cancels the running one.
func TestSupersededBuildCanceled(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		work, _ := h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", gateStep)})
		h.addProject("app", repo, projectOpts{cancelSuperseded: true})
		first := h.trigger("app", "main")
		h.waitFor(first, "a running step", stepRunning)
		second := h.trigger("app", "main")
		if b := h.waitDone(first); b.Status != store.StatusCanceled {
			t.Fatalf("first build %s, want canceled", b.Status)
		}
		h.waitFor(second, "a running step", stepRunning)
		openGate(t, work)
		if b := h.waitDone(second); b.Status != store.StatusSuccess {
			t.Fatalf("second build %s", dump(b))
		}
	})
}
