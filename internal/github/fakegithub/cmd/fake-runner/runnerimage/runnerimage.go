// Package runnerimage builds the fake GitHub Actions runner image, for
// tests and benchmarks: the base busybox image scripts/engines.sh imports,
// plus the fake-runner binary at /runner/fake-runner and the /runner/run.sh
// a real runner image has, imported into a container engine (no registry
// is reachable here: nothing is pulled or pushed). scripts/runner-image.sh
// does the same from the shell.
//
// Variants share the rootfs and differ in configuration only (ENV, CMD),
// so that a test can shape what the runner does (hold its job until
// cancelled, never register) whatever way Kiln starts it.
package runnerimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

const (
	// Repository is where every variant is tagged.
	Repository = "localhost/kiln/fake-runner"
	// BaseImage is the busybox image scripts/engines.sh imports.
	BaseImage = "localhost/kiln/busybox:latest"
	// Package is the fake runner's import path.
	Package = "github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner"
	// RunScript is the entrypoint, as in actions/runner's images.
	RunScript = "/runner/run.sh"
	// LabelSum is the image label holding the digest of what went into it
	// (base image id, binary, run.sh, configuration, recipe): an image
	// whose label matches is not imported again.
	LabelSum = "dev.kiln.fake-runner.sha256"

	// recipe changes when the way the image is put together does.
	recipe = "1"
)

// runSh is /runner/run.sh: like actions/runner's, it starts the runner,
// which reads ACTIONS_RUNNER_INPUT_JITCONFIG from the environment.
const runSh = `#!/bin/sh
# run.sh — the entrypoint of a GitHub Actions runner image. This one runs
# Kiln's fake runner (internal/github/fakegithub/cmd/fake-runner), which
# reads its JIT configuration from ACTIONS_RUNNER_INPUT_JITCONFIG.
exec /runner/fake-runner "$@"
`

// Variant is one tag of the image and its configuration.
type Variant struct {
	Tag string
	Env []string // KEY=VALUE
	Cmd []string // default: RunScript
}

// Ref is the variant's image reference.
func (v Variant) Ref() string { return Repository + ":" + v.Tag }

// The variants tests use.
var (
	// Latest runs a job and exits.
	Latest = Variant{Tag: "latest"}
	// Slow runs each job for 3 seconds: runners overlap, so that a pool's
	// maximum binds.
	Slow = Variant{Tag: "slow", Env: []string{"FAKE_RUNNER_JOB_DURATION=3s"}}
	// Hold keeps its job running for an hour, or until the run is cancelled.
	Hold = Variant{Tag: "hold", Env: []string{"FAKE_RUNNER_JOB_DURATION=1h"}}
	// Stall never registers: its command sleeps, and run.sh, if a runtime
	// calls it directly, stalls too.
	Stall = Variant{Tag: "stall", Env: []string{"FAKE_RUNNER_STALL=1"}, Cmd: []string{"sleep", "2147483647"}}
)

// BuildBinary compiles the fake runner as a static binary (CGO_ENABLED=0)
// and returns its bytes. It runs `go build` from the current directory,
// which must be inside the module (as a test's or `go run`'s is).
func BuildBinary(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "kiln-fake-runner")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "fake-runner")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, Package)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", Package, err, msg)
	}
	return os.ReadFile(out)
}

// Ensure makes sure every variant exists on the engine at host
// ("unix:///run/kiln-docker.sock") and is built from bin and the current
// base image; what is up to date is left alone. The base image must be
// there (scripts/engines.sh).
func Ensure(ctx context.Context, host string, bin []byte, variants ...Variant) error {
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	base, err := cli.ImageInspect(ctx, BaseImage)
	if err != nil {
		return fmt.Errorf("base image %s on %s: %w (run scripts/engines.sh)", BaseImage, host, err)
	}
	var rootfs []byte // exported once, when a variant needs it
	for _, v := range variants {
		changes := v.changes()
		sum := digest(base.ID, bin, changes)
		if have, err := cli.ImageInspect(ctx, v.Ref()); err == nil && have.Config != nil && have.Config.Labels[LabelSum] == sum {
			continue
		}
		if rootfs == nil {
			if rootfs, err = buildRootfs(ctx, cli, bin); err != nil {
				return err
			}
		}
		changes = append(changes, "LABEL "+LabelSum+"="+sum)
		rc, err := cli.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"}, v.Ref(), image.ImportOptions{Changes: changes})
		if err != nil {
			return fmt.Errorf("import %s on %s: %w", v.Ref(), host, err)
		}
		err = drain(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("import %s on %s: %w", v.Ref(), host, err)
		}
	}
	return nil
}

// changes are the variant's Dockerfile instructions.
func (v Variant) changes() []string {
	cmd := v.Cmd
	if len(cmd) == 0 {
		cmd = []string{RunScript}
	}
	js, _ := json.Marshal(cmd)
	out := []string{"CMD " + string(js), "WORKDIR /runner"}
	for _, e := range v.Env {
		k, val, _ := strings.Cut(e, "=")
		out = append(out, "ENV "+k+"="+val)
	}
	return out
}

func digest(baseID string, bin []byte, changes []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nbase %s\n", recipe, baseID)
	binSum := sha256.Sum256(bin)
	fmt.Fprintf(h, "bin %x\nrun.sh %x\n", binSum, sha256.Sum256([]byte(runSh)))
	for _, c := range changes {
		fmt.Fprintf(h, "change %s\n", c)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// buildRootfs is the base image's filesystem (exported from a container
// created, never started, from it) with /runner added.
func buildRootfs(ctx context.Context, cli *client.Client, bin []byte) ([]byte, error) {
	name := fmt.Sprintf("kiln-fake-runner-export-%d", time.Now().UnixNano())
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: BaseImage, Cmd: []string{"true"}}, nil, nil, nil, name)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", BaseImage, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}()
	rc, err := cli.ContainerExport(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", BaseImage, err)
	}
	defer rc.Close()

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", BaseImage, err)
		}
		if p := strings.TrimPrefix(hdr.Name, "./"); p == "runner" || p == "runner/" || strings.HasPrefix(p, "runner/") {
			continue // ours replaces it
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	epoch := time.Unix(0, 0)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
		dir  bool
	}{
		{name: "runner/", mode: 0o755, dir: true},
		{name: "runner/fake-runner", mode: 0o755, data: bin},
		{name: "runner/run.sh", mode: 0o755, data: []byte(runSh)},
	} {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if f.dir {
			hdr.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// drain reads an engine's JSON message stream to its end and returns the
// first error it reports.
func drain(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
	}
}

// CLI is the command line of engine's client ("docker" or "podman")
// talking to host, to which a test or benchmark appends a subcommand.
func CLI(engine, host string) []string {
	if engine == "podman" {
		return []string{"podman", "--url", host}
	}
	return []string{"docker", "-H", host}
}
