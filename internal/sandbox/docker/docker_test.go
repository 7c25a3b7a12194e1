package docker

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/sandboxtest"
	"github.com/kilnci/kiln/internal/testenv"
)

// TestConformance runs the sandbox conformance suite on every configured
// engine (Docker and Podman's compatible socket).
func TestConformance(t *testing.T) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			r := newRuntime(t, e.Host)
			if _, err := r.cli.ImageInspect(t.Context(), testenv.BaseImage); err != nil {
				t.Fatalf("base image %s on %s: %v (run scripts/engines.sh)", testenv.BaseImage, e.Host, err)
			}
			sandboxtest.Run(t, func(t *testing.T) sandbox.Runtime {
				return leftovers{newRuntime(t, e.Host)}
			})
		})
	}
}

func newRuntime(t *testing.T, host string) *Runtime {
	t.Helper()
	r, err := New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// leftovers lets the suite see the engine objects a sandbox is made of.
type leftovers struct{ *Runtime }

func (l leftovers) Leftovers(ctx context.Context, name string) ([]string, error) {
	var left []string
	c, err := l.cli.ContainerInspect(ctx, name)
	switch {
	case err == nil:
		left = append(left, "container "+c.ID)
	case !cerrdefs.IsNotFound(err):
		return nil, err
	}
	n, err := l.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	switch {
	case err == nil:
		left = append(left, "network "+n.ID)
	case !cerrdefs.IsNotFound(err):
		return nil, err
	}
	return left, nil
}

// TestDestroyLeavesForeignContainers: Destroy refuses a container Kiln did
// not create, even by name.
func TestDestroyLeavesForeignContainers(t *testing.T) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			r := newRuntime(t, e.Host)
			ctx := t.Context()
			name := "kiln-test-foreign-" + strings.ReplaceAll(t.Name(), "/", "-")
			c, err := r.cli.ContainerCreate(ctx, &container.Config{Image: testenv.BaseImage, Cmd: []string{"true"}}, nil, nil, nil, name)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = r.cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
			})
			for _, id := range []string{c.ID, name} {
				if err := r.Destroy(ctx, id); err == nil {
					t.Errorf("Destroy(%s) of a foreign container succeeded", id)
				}
			}
			if _, err := r.cli.ContainerInspect(ctx, c.ID); err != nil {
				t.Fatalf("foreign container gone: %v", err)
			}
		})
	}
}

// deadSocket returns the address of a unix socket nothing listens on.
func deadSocket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false) // leave a stale socket: connection refused
	l.Close()
	return "unix://" + path
}

func TestEngineUnavailable(t *testing.T) {
	for _, host := range []string{deadSocket(t), "unix://" + filepath.Join(t.TempDir(), "missing.sock")} {
		r := newRuntime(t, host)
		ctx := t.Context()
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, sandbox.ErrEngineUnavailable) {
				t.Errorf("%s on %s: got %v, want ErrEngineUnavailable", what, host, err)
			}
		}
		check("Ping", r.Ping(ctx))
		_, err := r.Create(ctx, sandbox.Spec{Name: "kiln-test-dead", Image: testenv.BaseImage})
		check("Create", err)
		_, err = r.Exec(ctx, "kiln-test-dead", sandbox.ExecSpec{Cmd: []string{"true"}})
		check("Exec", err)
		check("Destroy", r.Destroy(ctx, "kiln-test-dead"))
		_, err = r.List(ctx, map[string]string{sandbox.LabelManaged: "true"})
		check("List", err)
	}
}

func TestDetect(t *testing.T) {
	ctx := t.Context()
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir()) // keep a user's podman out of it

	// A DOCKER_HOST that answers wins.
	engines := testenv.Engines(t)
	t.Setenv("DOCKER_HOST", engines[0].Host)
	host, err := Detect(ctx)
	if err != nil || host != engines[0].Host {
		t.Fatalf("Detect with DOCKER_HOST=%s: %q, %v", engines[0].Host, host, err)
	}

	// A dead DOCKER_HOST is passed over for the next answering socket, and
	// when none answers the error names what was tried.
	dead := deadSocket(t)
	t.Setenv("DOCKER_HOST", dead)
	host, err = Detect(ctx)
	if err != nil {
		if !errors.Is(err, sandbox.ErrEngineUnavailable) || !strings.Contains(err.Error(), dead) ||
			!strings.Contains(err.Error(), "/run/kiln-podman.sock") {
			t.Fatalf("Detect error %q should wrap ErrEngineUnavailable and list what it tried", err)
		}
		return
	}
	if host == dead {
		t.Fatalf("Detect returned the dead socket %s", dead)
	}
	if err := newRuntime(t, host).Ping(ctx); err != nil {
		t.Fatalf("Detect returned %s, which does not answer: %v", host, err)
	}
}

func TestMountsRefuseEngineSockets(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	other := filepath.Join(dir, "podman.sock")
	l2, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	plain := filepath.Join(dir, "work")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, "unix://"+sock) // never contacted

	for _, tc := range []struct {
		src string
		ok  bool
	}{
		{plain, true},
		{sock, false},  // this engine's socket
		{link, false},  // … through a symlink
		{dir, false},   // a directory holding it
		{"/", false},   // ditto
		{other, false}, // a socket named like an engine's
		{filepath.Join(dir, "missing"), false},
	} {
		_, err := r.mounts([]sandbox.Mount{{Source: tc.src, Target: "/mnt"}})
		if (err == nil) != tc.ok {
			t.Errorf("mount %s: err %v, want ok=%v", tc.src, err, tc.ok)
		}
	}
	if _, err := r.mounts([]sandbox.Mount{{Source: "relative", Target: "/mnt"}}); err == nil {
		t.Error("relative mount source accepted")
	}
}

func TestNewFromEnvironment(t *testing.T) {
	e := testenv.Engines(t)[0]
	t.Setenv("DOCKER_HOST", e.Host)
	r, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Host() != e.Host {
		t.Fatalf("New(\"\") with DOCKER_HOST=%s talks to %s", e.Host, r.Host())
	}
	if err := r.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}
