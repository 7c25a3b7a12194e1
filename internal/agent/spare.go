package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/diskquota"
)

// A spare is a sandbox made ahead of time for the next job of a project on
// this agent, as warm runners are for GitHub Actions. Creating and
// starting a container costs the engine about a second; for a warm
// incremental build that is most of what a CI job adds to the build
// itself. So after a successful job with sticky caches (the kind of
// project that builds here again and again), once its writes are in the
// volumes, the agent makes a sandbox like the one the job had: same
// image, limits and cache paths, the volumes' new generations mounted, an
// empty workspace. The next job of the project with the same needs takes
// it instead of creating one.
//
// A spare is as fresh as a sandbox made on claim: no job has run in it,
// and it is used once, then destroyed like any other. It holds nothing of
// a job: the job's environment (and its secrets) reach the commands by
// exec, never the container's configuration. At most one spare exists per
// agent; it goes when a job with other needs is claimed, when it has been
// idle for Config.SpareIdle, and when the agent stops.

// spareKey is what a job needs of a sandbox; a spare serves a job with
// the same key.
type spareKey struct {
	project, image string
	cpus           float64
	memory, pids   int64
	disk           int64
	caches         string // the sticky cache paths, in order
}

type spare struct {
	key   spareKey
	ready chan struct{} // closed when made or failed
	err   error
	id    string // sandbox id
	name  string
	ws    string // workspace: ws/src is the sandbox's /workspace
	// disk is ws's quota disk (nil: no quota); wsMounts mount ws's
	// directories (src, and tmp on a disk) into the sandbox.
	disk     *diskquota.Disk
	wsMounts []sandbox.Mount
	views    []stickyView
}

// spareKeyOf returns the key of a job that can use a spare: a native job
// (Kiln checks it out) whose caches are all sticky, at least one.
func (a *Agent) spareKeyOf(asg *protocol.Assignment) (spareKey, bool) {
	spec := asg.Spec
	// pull: always wants the registry's image at the job's start, not
	// the one a spare was made from.
	if a.cfg.SpareIdle <= 0 || a.volumes == nil || asg.SkipCheckout || len(spec.Caches) == 0 || hasKeyed(spec) || spec.Pull == pipeline.PullAlways {
		return spareKey{}, false
	}
	paths := make([]string, len(spec.Caches))
	for i, c := range spec.Caches {
		paths[i] = c.Path
	}
	return spareKey{
		project: asg.Project, image: spec.Image,
		cpus:   firstNonZero(spec.Resources.CPUs, a.cfg.DefaultCPUs),
		memory: firstNonZero(spec.Resources.MemoryBytes, a.cfg.DefaultMemory),
		pids:   firstNonZero(spec.Resources.Pids, a.cfg.DefaultPids),
		disk:   a.diskSize(spec),
		caches: strings.Join(paths, "\x00"),
	}, true
}

// spares holds the agent's spare and the goroutines that drop them.
type spares struct {
	mu      sync.Mutex
	current *spare
	seq     int
	timer   *time.Timer
	bg      sync.WaitGroup
}

// detach removes the current spare, if any, from the agent and returns it.
func (sp *spares) detach() *spare {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	s := sp.current
	sp.current = nil
	if sp.timer != nil {
		sp.timer.Stop()
	}
	return s
}

// takeSpare returns the spare if it serves key, waiting for it if it is
// still being made; nil otherwise. A spare that does not serve key is
// dropped: the agent's jobs have moved on.
func (a *Agent) takeSpare(ctx context.Context, key spareKey) *spare {
	s := a.spares.detach()
	if s == nil {
		return nil
	}
	if s.key != key {
		a.dropSpareLater(s)
		return nil
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		a.dropSpareLater(s)
		return nil
	}
	if s.err != nil {
		return nil // makeSpare cleaned up after itself
	}
	return s
}

// makeSpare makes a spare for jobs with key, after a job of the project
// succeeded, replacing any other. Called from a job's cleanup, once its
// sticky writes are promoted.
func (a *Agent) makeSpare(key spareKey, paths []string) {
	a.spares.mu.Lock()
	old := a.spares.current
	a.spares.seq++
	s := &spare{key: key, ready: make(chan struct{})}
	s.name = fmt.Sprintf("kiln-spare-%d-%s", a.spares.seq, nameSafe(a.cfg.ID))
	s.ws = filepath.Join(a.cfg.WorkDir, "jobs", fmt.Sprintf("spare-%d", a.spares.seq))
	a.spares.current = s
	a.spares.mu.Unlock()
	if old != nil {
		a.dropSpareLater(old)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s.err = a.buildSpare(ctx, s, paths)
	if s.err != nil {
		a.log.Warn("spare sandbox not made", "project", key.project, "err", s.err)
		a.dropSpare(s)
	} else {
		a.log.Debug("spare sandbox ready", "project", key.project, "sandbox", s.name)
	}
	close(s.ready)
	// Idle too long: drop it.
	a.spares.mu.Lock()
	if a.spares.current == s {
		if s.err != nil {
			a.spares.current = nil
		} else {
			if a.spares.timer != nil {
				a.spares.timer.Stop()
			}
			a.spares.timer = time.AfterFunc(a.cfg.SpareIdle, func() {
				a.spares.mu.Lock()
				idle := a.spares.current == s
				if idle {
					a.spares.current = nil
				}
				a.spares.mu.Unlock()
				if idle {
					a.dropSpareLater(s)
				}
			})
		}
	}
	a.spares.mu.Unlock()
}

func (a *Agent) buildSpare(ctx context.Context, s *spare, paths []string) error {
	var err error
	if s.disk, s.wsMounts, err = a.makeWorkspace(ctx, s.ws, s.key.disk); err != nil {
		return err
	}
	mounts := slices.Clone(s.wsMounts)
	for _, p := range paths {
		a.promotions.wait(ctx, s.key.project, p)
		v, err := a.volumes.Acquire(ctx, s.key.project, p, filepath.Base(s.ws))
		if err != nil {
			return fmt.Errorf("sticky volume %s: %w", p, err)
		}
		s.views = append(s.views, stickyView{path: p, view: v})
		mounts = append(mounts, sandbox.Mount{Source: v.MountSource(), Target: p})
	}
	id, err := a.rt.Create(ctx, sandbox.Spec{
		Name:  s.name,
		Image: s.key.image,
		Labels: map[string]string{
			sandbox.LabelManaged: "true", sandbox.LabelAgent: a.cfg.ID,
			sandbox.LabelJob: "spare", sandbox.LabelAttempt: "0",
		},
		WorkDir: Workspace, Mounts: mounts,
		CPUs: s.key.cpus, MemoryBytes: s.key.memory, PidsLimit: s.key.pids,
	})
	s.id = id
	return err
}

// dropSpare destroys a spare that no job will use, with its views and
// workspace.
func (a *Agent) dropSpare(s *spare) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	target := s.id
	if target == "" {
		target = s.name
	}
	if err := a.rt.Destroy(ctx, target); err != nil {
		a.log.Warn("destroy spare sandbox", "sandbox", s.name, "err", err)
	}
	for _, sv := range s.views {
		_ = sv.view.Discard()
	}
	s.views = nil
	a.removeWorkspace(s.ws, s.disk)
}

// dropSpareLater drops s off the caller's path, once it is made; the agent
// waits for it before Run returns.
func (a *Agent) dropSpareLater(s *spare) {
	a.spares.bg.Add(1)
	a.busy.Add(1)
	go func() {
		defer a.spares.bg.Done()
		defer a.busy.Add(-1)
		<-s.ready
		if s.err == nil {
			a.dropSpare(s)
		}
	}()
}

// dropSpares drops the spare, if any, and waits for every drop: the agent
// is stopping.
func (a *Agent) dropSpares() {
	s := a.spares.detach()
	if s != nil {
		a.dropSpareLater(s)
	}
	a.spares.bg.Wait()
}
