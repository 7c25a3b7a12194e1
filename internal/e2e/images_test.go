package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	errdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/kilnci/kiln/internal/registrytest"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// Jobs' images are pulled from a real registry (Distribution, basic auth,
// TLS from the test's CA) with the project's credentials: two jobs run
// in the pulled image, the log shows the pull and the digest, the job
// records the digest, and the password is nowhere in the log. A project
// whose password is wrong fails, not retried; a registry answering 500 is
// the infrastructure's error, retried.
func TestImagesPulled(t *testing.T) {
	engines := testenv.Engines(t)
	reg, ref := registrytest.WithBase(t, engines[0].Host)
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		removeImage(t, e, ref)
		t.Cleanup(func() { removeImage(t, e, ref) })
		h := startServerWith(t, e, func(c *server.Config) {
			// One agent: a registry's errors must not quarantine it or
			// keep the retry waiting for another.
			c.Scheduler.QuarantineAfter, c.Scheduler.RetryElsewhere, c.Scheduler.MaxAttempts = 0, 0, 2
		})
		h.startAgent("a1", nil)
		file := fmt.Sprintf("image: %s\njobs:\n  a:\n    steps: [\"echo ran-a\"]\n  b:\n    pull: always\n    steps: [\"echo ran-b\"]\n", ref)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": file})
		h.addProject("app", repo, projectOpts{})
		h.setRegistry("app", reg.Host, reg.User, reg.Password)
		h.addProject("wrong", repo, projectOpts{})
		h.setRegistry("wrong", reg.Host, reg.User, "not-"+reg.Password)

		t.Run("pulled with the project's credentials", func(t *testing.T) {
			id := h.trigger("app", "main")
			b := h.waitDone(id)
			log := h.logText(id)
			if b.Status != store.StatusSuccess {
				t.Fatalf("build %s:\n%s", b.Status, log)
			}
			for _, want := range []string{"ran-a", "ran-b", "pulled " + ref + ` as "` + reg.User + `"`, "digest sha256:"} {
				if !strings.Contains(log, want) {
					t.Errorf("the log does not say %q:\n%s", want, log)
				}
			}
			for _, j := range b.Jobs {
				if !strings.HasPrefix(j.ImageDigest, "sha256:") {
					t.Errorf("job %s: image digest %q", j.Name, j.ImageDigest)
				}
			}
			if strings.Contains(log, reg.Password) {
				t.Errorf("the log holds the registry password:\n%s", log)
			}
		})

		t.Run("wrong password: the job's failure, not retried", func(t *testing.T) {
			removeImage(t, e, ref)
			id := h.trigger("wrong", "main")
			b := h.waitDone(id)
			log := h.logText(id)
			if b.Status != store.StatusFailure {
				t.Fatalf("build %s, want failure:\n%s", b.Status, log)
			}
			for _, j := range b.Jobs {
				if j.Status != store.StatusFailure || j.Attempt != 1 || !strings.Contains(j.Error, "refused the credentials") {
					t.Errorf("job %s: %s attempt %d %q; want a failure of attempt 1 saying the credentials were refused", j.Name, j.Status, j.Attempt, j.Error)
				}
			}
			if !strings.Contains(log, "not retried") || strings.Contains(log, reg.Password) {
				t.Errorf("the log:\n%s", log)
			}
		})

		t.Run("registry answering 500: an error, retried", func(t *testing.T) {
			removeImage(t, e, ref)
			reg.Fail(true)
			defer reg.Fail(false)
			id := h.trigger("app", "main")
			b := h.waitDone(id)
			if b.Status != store.StatusError {
				t.Fatalf("build %s, want error:\n%s", b.Status, h.logText(id))
			}
			for _, j := range b.Jobs {
				if j.Status != store.StatusError || j.Attempt != 2 || !strings.Contains(j.Error, "registry unavailable") {
					t.Errorf("job %s: %s attempt %d %q; want an error after 2 attempts, the registry unavailable", j.Name, j.Status, j.Attempt, j.Error)
				}
			}
		})
	})
}

// setRegistry gives the project credentials for host.
func (h *harness) setRegistry(project, host, user, password string) {
	h.t.Helper()
	if code := h.do("PUT", "/api/v1/projects/"+project+"/registries/"+host, map[string]string{"username": user, "password": password}, nil); code != 204 {
		h.t.Fatalf("set registry: HTTP %d", code)
	}
}

// removeImage makes ref missing on the engine.
func removeImage(t *testing.T, e testenv.Engine, ref string) {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(e.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Until it is gone: a sandbox of the build before may still be being
	// destroyed, and an engine refuses (Podman) or defers the removal of
	// an image a container holds; a job would then find it and not pull.
	deadline := time.Now().Add(waitLimit)
	for {
		_, _ = cli.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true})
		_, err := cli.ImageInspect(context.Background(), ref)
		if errdefs.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: image %s is still there (%v)", e.Name, ref, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
