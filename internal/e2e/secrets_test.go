package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/client"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// A native job's secrets reach its commands and are nowhere in the
// engine's view of its sandbox while it runs: not in `docker inspect` /
// `podman inspect` of the container (Config.Env, Cmd, Entrypoint, Labels,
// anything else), nor in the inspect of its exec instances. Both kinds of
// sandbox: one made when the job is claimed, and one made ahead of time (a
// spare, taken by the project's next job).
func TestSecretsNotInEngineView(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		const secret = "s3cr3t-in-no-inspect-0123456789"
		sum := md5.Sum([]byte(secret))
		// The step waits (for the test's go) while the engine is inspected,
		// and proves it had the secret without printing it.
		step := `while [ ! -f /tmp/kiln-go ]; do sleep 0.1; done; echo "secret md5 $(printf %s "$API_TOKEN" | md5sum | cut -c1-32)"`
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("cache: [/cache]\n", step)})
		h.addProject("app", repo, projectOpts{secrets: map[string]string{"API_TOKEN": secret}})

		for _, kind := range []string{"made on claim", "made ahead of time"} {
			id := h.trigger("app", "main")
			// The job's sandbox is the one its log names: a spare is still
			// labelled a spare once a job has taken it, and a spare the
			// agent drops may linger in the engine's list for a moment.
			var box sandbox.Info
			waitUntil(t, kind+": the job's step running in its sandbox", func() bool {
				log := h.logTextQuiet(id)
				if !strings.Contains(log, "step 1/1") {
					return false
				}
				name := sandboxNameIn(log)
				list, err := h.rt.List(context.Background(), map[string]string{sandbox.LabelManaged: "true"})
				if err != nil {
					t.Fatal(err)
				}
				for _, sb := range list {
					if name != "" && strings.TrimPrefix(sb.Name, "/") == name {
						box = sb
						return true
					}
				}
				return false
			})
			checkEngineViews(t, e, box.ID, map[string]string{"the project secret API_TOKEN": secret})
			// The step ends as soon as the file is there, and the sandbox
			// goes with the job: the touch may be reported gone though it
			// ran (Podman inspects the exec after it ends). The build's
			// result, checked next, says whether it ran.
			if _, err := h.rt.Exec(context.Background(), box.ID, sandbox.ExecSpec{Cmd: []string{"touch", "/tmp/kiln-go"}, Output: io.Discard}); err != nil && !errors.Is(err, sandbox.ErrGone) {
				t.Fatalf("%s: %v; the build is %s:\n%s", kind, err, h.build(id).Status, h.logText(id))
			}
			b := h.waitDone(id)
			log := h.logText(id)
			if b.Status != store.StatusSuccess || !strings.Contains(log, "secret md5 "+hex.EncodeToString(sum[:])) {
				t.Fatalf("%s: build %s, want the secret's md5 in its log:\n%s", kind, b.Status, log)
			}
			if want := kind == "made ahead of time"; strings.Contains(log, "made ahead of time") != want {
				t.Fatalf("%s: the log does not say so:\n%s", kind, log)
			}
			if kind == "made on claim" {
				h.waitSpares(1)
			}
		}
	})
}

// sandboxNameIn returns the name of the sandbox a job's log says it runs
// in ("sandbox NAME (image ...").
func sandboxNameIn(log string) string {
	for _, line := range strings.Split(log, "\n") {
		if _, rest, ok := strings.Cut(line, "sandbox "); ok {
			if name, _, ok := strings.Cut(rest, " (image "); ok && !strings.Contains(name, " ") {
				return name
			}
		}
	}
	return ""
}

// checkEngineViews fails if a secret value appears in what the engine
// shows of container id to anyone who may inspect it: the inspect
// command's output (`docker inspect` or `podman inspect`, when installed),
// the API's container inspect, and the inspect of each of its exec
// instances (Docker's and, on Podman, libpod's too). The container must
// have a running exec instance (a step), so that the last check looks at
// one.
func checkEngineViews(t *testing.T, e testenv.Engine, id string, secrets map[string]string) {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(e.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	views := map[string]string{}
	c, raw, err := cli.ContainerInspectWithRaw(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	views["API container inspect"] = string(raw)
	cmd := map[string][]string{"docker": {"-H", e.Host, "inspect", id}, "podman": {"--url", e.Host, "inspect", id}}[e.Name]
	if path, err := exec.LookPath(e.Name); err == nil && cmd != nil {
		out, err := exec.Command(path, cmd...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s inspect: %v\n%s", e.Name, err, out)
		}
		views[e.Name+" inspect"] = string(out)
	} else {
		t.Logf("no %s command here: its inspect is not checked (the API's is)", e.Name)
	}
	if len(c.ExecIDs) == 0 {
		t.Errorf("the sandbox %s has no exec instance: nothing of a step's to inspect", id)
	}
	for _, x := range c.ExecIDs {
		paths := []string{"/exec/" + x + "/json"}
		if e.Name == "podman" {
			paths = append(paths, "/v4.0.0/libpod/exec/"+x+"/json")
		}
		for _, p := range paths {
			resp, err := cli.HTTPClient().Get("http://engine" + p)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: HTTP %d %s", p, resp.StatusCode, body)
			}
			views["exec inspect "+p] = string(body)
		}
	}
	for what, v := range secrets {
		if v == "" {
			t.Errorf("%s: empty value, nothing to look for", what)
			continue
		}
		for view, text := range views {
			if strings.Contains(text, v) {
				t.Errorf("%s is in the engine's view of the sandbox (%s)", what, view)
			}
		}
	}
}

// processEnv returns the environment a process on the host started with
// (Go's os.Unsetenv does not change it), for the first process whose
// command line contains cmdline and whose environment has key=value; nil
// if there is none. The host sees the sandboxes' processes.
func processEnv(cmdline, key, value string) map[string]string {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		cl, err := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if err != nil || !strings.Contains(string(cl), cmdline) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		env := map[string]string{}
		for _, kv := range strings.Split(string(b), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		if env[key] == value {
			return env
		}
	}
	return nil
}

// checkRunnerSecretsHidden finds the fake runner whose environment has
// key=value, requires it to have its JIT configuration and its
// ACTIONS_RUNTIME_TOKEN (they reached it), and checks that neither is in
// the engine's view of its sandbox.
func checkRunnerSecretsHidden(t *testing.T, e testenv.Engine, containerID, key, value string) {
	t.Helper()
	env := processEnv("/runner/fake-runner", key, value)
	if env == nil {
		t.Errorf("no fake runner process on the host has %s=%.20s… in its environment", key, value)
		return
	}
	secrets := map[string]string{}
	for _, k := range []string{"ACTIONS_RUNNER_INPUT_JITCONFIG", "ACTIONS_RUNTIME_TOKEN"} {
		if env[k] == "" {
			t.Errorf("the runner's environment has no %s: it did not reach the runner", k)
			continue
		}
		secrets[fmt.Sprintf("the runner's %s", k)] = env[k]
	}
	checkEngineViews(t, e, containerID, secrets)
}
