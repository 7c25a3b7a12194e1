package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/diskquota"
)

// A job's workspace, ws, holds src (the sandbox's /workspace) and, with a
// disk quota, tmp (its /tmp) and the keyed caches' directories. With a
// quota ws is a quota disk of its own (internal/sandbox/diskquota), so
// everything the job writes there, and in /tmp, counts against one limit.

// diskSize is the quota of a job's disk: what it asks for, else the
// agent's; 0 when the agent makes no quota disks (-disk 0).
func (a *Agent) diskSize(spec pipeline.JobSpec) int64 {
	if a.cfg.DefaultDisk <= 0 {
		return 0
	}
	return firstNonZero(spec.Resources.DiskBytes, a.cfg.DefaultDisk)
}

// makeWorkspace creates ws with src in it and, when size > 0, on a quota
// disk of that size with tmp (mode 1777) beside src. It returns the disk
// (nil without a quota) and the mounts for the sandbox.
func (a *Agent) makeWorkspace(ctx context.Context, ws string, size int64) (*diskquota.Disk, []sandbox.Mount, error) {
	src := filepath.Join(ws, "src")
	var disk *diskquota.Disk
	if size > 0 {
		var err error
		disk, err = diskquota.Make(ctx, ws, filepath.Join(a.cfg.WorkDir, "disks", filepath.Base(ws)+".img"), size)
		if err != nil {
			return nil, nil, fmt.Errorf("disk quota of %s: %w", formatBytes(size), err)
		}
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		a.removeWorkspace(ws, disk)
		return nil, nil, fmt.Errorf("create workspace: %w", err)
	}
	mounts := []sandbox.Mount{{Source: src, Target: Workspace}}
	if disk != nil {
		tmp := filepath.Join(ws, "tmp")
		if err := os.Mkdir(tmp, 0o755); err == nil {
			err = os.Chmod(tmp, 0o1777) // as /tmp is; Mkdir's mode is masked
		}
		mounts = append(mounts, sandbox.Mount{Source: tmp, Target: "/tmp"})
	}
	return disk, mounts, nil
}

// removeWorkspace unmounts ws's disk (its contents go with it, at once)
// and removes what is left.
func (a *Agent) removeWorkspace(ws string, disk *diskquota.Disk) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if disk != nil {
		if err := disk.Remove(ctx); err != nil {
			a.log.Warn("remove the job's disk", "workspace", ws, "err", err)
		}
	}
	if err := os.RemoveAll(ws); err != nil {
		a.log.Warn("remove workspace", "err", err)
	}
}

// sweepDisks unmounts what a previous run left mounted under the job
// workspaces (deepest first) and deletes the disks' images.
func (a *Agent) sweepDisks(ctx context.Context) {
	mps, err := diskquota.MountsUnder(filepath.Join(a.cfg.WorkDir, "jobs"))
	if err != nil {
		a.log.Warn("sweep: read mounts", "err", err)
	}
	slices.Reverse(mps)
	for _, mp := range mps {
		if err := diskquota.Unmount(ctx, mp); err != nil {
			a.log.Warn("sweep: unmount", "dir", mp, "err", err)
		}
	}
	_ = os.RemoveAll(filepath.Join(a.cfg.WorkDir, "disks"))
}

// checkDisks fails when this host cannot make quota disks.
func (a *Agent) checkDisks(ctx context.Context) error {
	if a.cfg.DefaultDisk <= 0 {
		return nil
	}
	dir := filepath.Join(a.cfg.WorkDir, "disks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := diskquota.Check(ctx, dir); err != nil {
		return fmt.Errorf("agent: a disk quota of %s per job needs loop-mounted ext4 workspaces (root, mkfs.ext4, loop devices): %w; -disk 0 runs jobs without a disk quota",
			formatBytes(a.cfg.DefaultDisk), err)
	}
	return nil
}

// diskFullNote is what a job that failed on its full disk is told.
func diskFullNote(disk *diskquota.Disk, limit int64) string {
	return fmt.Sprintf("the job's disk quota of %s (its workspace and /tmp together) is full; ask for up to %s with resources.disk, or write less",
		formatBytes(disk.Bytes), formatBytes(limit))
}

func formatBytes(b int64) string {
	return pipeline.Resources{DiskBytes: b}.Describe("disk")
}
