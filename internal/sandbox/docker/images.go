package docker

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/kilnci/kiln/internal/sandbox"
)

// The engine's side of image housekeeping (sandbox.Images): what the
// agent's image collector lists, removes and measures.

var _ sandbox.Images = (*Runtime)(nil)

// Images lists every image on the host, dangling ones too.
func (r *Runtime) Images(ctx context.Context) ([]sandbox.Image, error) {
	list, err := r.cli.ImageList(ctx, image.ListOptions{All: false})
	if err != nil {
		return nil, r.wrap("list images", err)
	}
	out := make([]sandbox.Image, 0, len(list))
	for _, s := range list {
		img := sandbox.Image{ID: s.ID, Size: s.Size, Created: time.Unix(s.Created, 0), Labels: s.Labels}
		for _, d := range s.RepoDigests {
			if !strings.HasPrefix(d, "<none>") {
				img.Digests = append(img.Digests, d)
			}
		}
		for _, t := range s.RepoTags {
			// Docker 20.10 and Podman name a dangling image "<none>:<none>".
			if t != "" && !strings.HasPrefix(t, "<none>") {
				img.Refs = append(img.Refs, t)
			}
		}
		out = append(out, img)
	}
	return out, nil
}

// Containers lists every container on the host, stopped ones too.
func (r *Runtime) Containers(ctx context.Context) ([]sandbox.Container, error) {
	cs, err := r.cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, r.wrap("list containers", err)
	}
	out := make([]sandbox.Container, 0, len(cs))
	for _, c := range cs {
		sc := sandbox.Container{ID: c.ID, ImageID: c.ImageID, Created: time.Unix(c.Created, 0), Labels: c.Labels}
		if len(c.Names) > 0 {
			sc.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		switch strings.ToLower(string(c.State)) {
		case "created", "exited", "dead", "stopped", "configured":
		default:
			// running, paused, restarting, removing, or a state this
			// code does not know: treated as in use.
			sc.Running = true
		}
		out = append(out, sc)
	}
	return out, nil
}

// RemoveImage removes ref, never forced: the engine refuses an image a
// container (even a stopped one) uses, and only untags a name of an image
// that has others. Three round trips: inspect (the image's id and size),
// remove, inspect the id again (gone or not: Docker and Podman answer the
// removal differently, the engine's state does not lie).
func (r *Runtime) RemoveImage(ctx context.Context, ref string) (sandbox.Removal, error) {
	before, err := r.cli.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return sandbox.Removal{}, nil
	} else if err != nil {
		return sandbox.Removal{}, r.wrap("remove image "+ref+": inspect", err)
	}
	if _, err := r.cli.ImageRemove(ctx, ref, image.RemoveOptions{Force: false, PruneChildren: true}); err != nil {
		if cerrdefs.IsNotFound(err) {
			return sandbox.Removal{}, nil
		}
		return sandbox.Removal{}, r.wrap("remove image "+ref, err)
	}
	_, err = r.cli.ImageInspect(ctx, before.ID)
	switch {
	case cerrdefs.IsNotFound(err):
		return sandbox.Removal{Deleted: true, Freed: before.Size}, nil
	case err != nil:
		return sandbox.Removal{}, r.wrap("remove image "+ref+": inspect after", err)
	}
	return sandbox.Removal{}, nil
}

// DataDiskUsage measures the filesystem of the engine's data directory
// (DockerRootDir in the engine's /info: Docker's data root, Podman's
// graph root), as df does: used and used+available to non-root users.
//
// Why /info and statfs, not /system/df: df says how much the engine's
// images, containers and volumes take, not how big the disk is or what
// else fills it (logs, caches, workspaces on the same filesystem), and a
// high-water mark is a share of the disk. It also walks every layer
// (seconds on a busy host); statfs is one system call. The price: the
// agent must see the engine's filesystem, so it runs on the engine's host
// (as it must already for quota disks and the sandbox firewall), and an
// engine reached over TCP cannot be measured.
func (r *Runtime) DataDiskUsage(ctx context.Context) (used, total uint64, err error) {
	if !strings.HasPrefix(r.host, "unix://") {
		return 0, 0, fmt.Errorf("docker: data disk usage: the engine at %s is not on this host's socket: cannot measure its disk", r.host)
	}
	// Asked every time: one round trip every few minutes, and an engine
	// restarted on another data root is measured where it now is.
	info, err := r.cli.Info(ctx)
	if err != nil {
		return 0, 0, r.wrap("info", err)
	}
	if info.DockerRootDir == "" {
		return 0, 0, fmt.Errorf("docker: data disk usage: the engine at %s names no data directory (DockerRootDir)", r.host)
	}
	root := info.DockerRootDir
	return statfsUsage(root)
}

// statfsUsage is df's view of the filesystem holding path.
func statfsUsage(path string) (used, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("docker: data disk usage: statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	used = (st.Blocks - st.Bfree) * bs
	return used, used + st.Bavail*bs, nil
}
