package docker

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/api/types/mount"

	"github.com/kilnci/kiln/internal/sandbox"
)

// engineSocketNames are substrings of the names of container engine
// sockets. A job that can reach one owns the host, so no sandbox gets one.
var engineSocketNames = []string{"docker", "podman", "containerd", "buildkit", "crio"}

// mounts turns spec mounts into engine bind mounts, refusing any that would
// hand the sandbox a container engine socket: the socket itself, or a
// directory that holds the socket of this engine or of a well-known one
// (mounting / or /run would). Sources must exist; symlinks are resolved
// first so a link cannot smuggle a socket in.
func (r *Runtime) mounts(ms []sandbox.Mount) ([]mount.Mount, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	sockets := r.engineSockets()
	out := make([]mount.Mount, 0, len(ms))
	for _, m := range ms {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) {
			return nil, fmt.Errorf("mount %s:%s: source and target must be absolute paths", m.Source, m.Target)
		}
		src, err := filepath.EvalSymlinks(m.Source)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", m.Source, err)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", m.Source, err)
		}
		if fi.Mode()&fs.ModeSocket != 0 && isEngineSocket(src, sockets) {
			return nil, fmt.Errorf("mount %s: refusing to mount a container engine socket into a sandbox", m.Source)
		}
		if fi.IsDir() {
			for _, s := range sockets {
				if within(s, src) {
					return nil, fmt.Errorf("mount %s: refusing to mount a directory holding the container engine socket %s into a sandbox", m.Source, s)
				}
			}
		}
		out = append(out, mount.Mount{Type: mount.TypeBind, Source: src, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	return out, nil
}

// engineSockets returns the resolved paths of the existing engine sockets
// this host is known to have: the one this Runtime uses and the usual ones.
func (r *Runtime) engineSockets() []string {
	paths := candidateSockets()
	if p, ok := strings.CutPrefix(r.host, "unix://"); ok {
		paths = append(paths, p)
	}
	var out []string
	for _, p := range paths {
		if rp, err := filepath.EvalSymlinks(p); err == nil {
			out = append(out, rp)
		}
	}
	return out
}

func isEngineSocket(path string, known []string) bool {
	for _, k := range known {
		if path == k {
			return true
		}
	}
	base := strings.ToLower(filepath.Base(path))
	for _, n := range engineSocketNames {
		if strings.Contains(base, n) {
			return true
		}
	}
	return false
}

// within reports whether path is dir or lies under it.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}
