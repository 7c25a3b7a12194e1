package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/sandbox"
)

// detectPingTimeout bounds the wait for one candidate engine, so a socket
// whose engine hangs does not stall detection.
const detectPingTimeout = 3 * time.Second

// candidateSockets returns the socket paths Detect tries after
// $DOCKER_HOST, in order.
func candidateSockets() []string {
	paths := []string{"/run/docker.sock", "/var/run/docker.sock", "/run/podman/podman.sock"}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		paths = append(paths, filepath.Join(d, "podman", "podman.sock"))
	}
	return append(paths, "/run/kiln-docker.sock", "/run/kiln-podman.sock")
}

// Detect returns the first engine that answers a Ping among: $DOCKER_HOST,
// /run/docker.sock (/var/run/docker.sock), /run/podman/podman.sock,
// $XDG_RUNTIME_DIR/podman/podman.sock, /run/kiln-docker.sock and
// /run/kiln-podman.sock. When none answers, the error wraps
// sandbox.ErrEngineUnavailable and says what was tried and why each failed.
func Detect(ctx context.Context) (host string, err error) {
	var hosts []string
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		hosts = append(hosts, h)
	}
	for _, p := range candidateSockets() {
		hosts = append(hosts, "unix://"+p)
	}

	var tried []string
	seen := make(map[string]bool)
	for _, h := range hosts {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		key := h
		if p, ok := strings.CutPrefix(h, "unix://"); ok {
			if rp, err := filepath.EvalSymlinks(p); err == nil {
				key = "unix://" + rp
			}
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		if err := ping(ctx, h); err != nil {
			tried = append(tried, fmt.Sprintf("%s (%v)", h, err))
			continue
		}
		return h, nil
	}
	return "", fmt.Errorf("docker: detect: %w: tried %s", sandbox.ErrEngineUnavailable, strings.Join(tried, "; "))
}

func ping(ctx context.Context, host string) error {
	if p, ok := strings.CutPrefix(host, "unix://"); ok {
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return errors.New("no such socket")
			}
			return err
		}
	}
	r, err := New(host)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(ctx, detectPingTimeout)
	defer cancel()
	if _, err := r.cli.Ping(ctx); err != nil {
		return err
	}
	return nil
}
