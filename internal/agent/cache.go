package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/cacheclient"
	"github.com/kilnci/kiln/internal/cachekey"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sticky"
)

// jobCaches are one job attempt's caches: the mounts they add to the
// sandbox, and what to do with them when the job ends.
type jobCaches struct {
	j      *job
	mounts []sandbox.Mount
	views  []stickyView
	keyed  []*keyedCache

	toRestore []*keyedCache
	restored  chan struct{} // closed when their restores are over
}

type stickyView struct {
	path string
	view *sticky.View
	done func() // ends the promotion announceSticky recorded
}

type keyedCache struct {
	spec    pipeline.CacheSpec
	key     string // expanded
	matched string // the key restored from; "" on a miss
	dirs    []string
}

// hasKeyed reports whether the job has keyed caches (which need the
// checkout before the sandbox: their keys may hash files of it).
func hasKeyed(spec pipeline.JobSpec) bool {
	for _, c := range spec.Caches {
		if !c.Sticky() {
			return true
		}
	}
	return false
}

// prepare acquires sticky views and restores keyed caches into host
// directories under ws, returning the mounts. A cache that cannot be
// prepared is reported in the log and skipped: a cache is an optimisation,
// never a reason to fail a build.
func (c *jobCaches) prepare(ctx context.Context, ws, src string) {
	j := c.j
	asg := j.asg
	for i, spec := range asg.Spec.Caches {
		if spec.Sticky() {
			c.prepareSticky(ctx, spec)
			continue
		}
		kc := &keyedCache{spec: spec}
		key, err := cachekey.Expand(spec.Key, cachekey.Context{Workspace: src, Branch: asg.Branch, OS: "linux", Arch: runtime.GOARCH})
		if err != nil {
			j.sys("cache %q: cannot expand the key: %v (cache skipped)", spec.Key, err)
			continue
		}
		kc.key = key
		for p := range spec.Paths {
			d := filepath.Join(ws, "caches", fmt.Sprintf("%d-%d", i, p))
			if err := os.MkdirAll(d, 0o755); err != nil {
				j.sys("cache %s: %v (cache skipped)", key, err)
				kc = nil
				break
			}
			kc.dirs = append(kc.dirs, d)
		}
		if kc == nil {
			continue
		}
		c.toRestore = append(c.toRestore, kc)
		for p, path := range spec.Paths {
			c.mounts = append(c.mounts, sandbox.Mount{Source: kc.dirs[p], Target: path})
		}
		c.keyed = append(c.keyed, kc)
	}
	// Restoring fills the host directories the sandbox will mount: it
	// overlaps the sandbox's creation, and steps wait for it (waitRestored).
	// The restore may end after the container has mounted them, so it
	// fills them in place (cacheclient.Restore never replaces an existing
	// directory): the directories must exist before Create, as they do.
	c.restored = make(chan struct{})
	go func() {
		defer close(c.restored)
		for _, kc := range c.toRestore {
			c.restoreKeyed(ctx, kc)
		}
	}()
}

// waitRestored waits for the keyed caches' restores that prepare started.
func (c *jobCaches) waitRestored() {
	if c.restored != nil {
		<-c.restored
	}
}

// adopt takes the sticky views a spare sandbox was made with.
func (c *jobCaches) adopt(views []stickyView) {
	for _, sv := range views {
		c.views = append(c.views, sv)
		c.reportView(sv.path, sv.view, 0)
	}
}

// stickyPaths returns the job's sticky cache paths, in order.
func stickyPaths(spec pipeline.JobSpec) []string {
	var paths []string
	for _, c := range spec.Caches {
		if c.Sticky() {
			paths = append(paths, c.Path)
		}
	}
	return paths
}

func (c *jobCaches) prepareSticky(ctx context.Context, spec pipeline.CacheSpec) {
	j := c.j
	if j.a.volumes == nil {
		j.sys("cache %s: this agent keeps no sticky volumes (cache skipped)", spec.Path)
		return
	}
	if waited := j.a.promotions.wait(ctx, j.asg.Project, spec.Path); waited > 0 {
		j.sys("cache %s: waited %s for the previous job's writes to reach the sticky volume", spec.Path, waited.Round(time.Millisecond))
	}
	t0 := time.Now()
	key := fmt.Sprintf("%d-%d", j.asg.JobID, j.asg.Attempt)
	v, err := j.a.volumes.Acquire(ctx, j.asg.Project, spec.Path, key)
	if err != nil {
		j.sys("cache %s: sticky volume unavailable: %v (cache skipped)", spec.Path, err)
		c.report("sticky", "restore", "error", spec.Path, 0, time.Since(t0))
		return
	}
	c.views = append(c.views, stickyView{path: spec.Path, view: v})
	c.mounts = append(c.mounts, sandbox.Mount{Source: v.MountSource(), Target: spec.Path})
	c.reportView(spec.Path, v, time.Since(t0))
}

// reportView says in the log and metrics whether a sticky view was warm.
func (c *jobCaches) reportView(path string, v *sticky.View, took time.Duration) {
	if v.Warm() {
		c.j.sys("cache %s: sticky volume hit (%s, %s)", path, human(v.Bytes()), took.Round(time.Millisecond))
		c.report("sticky", "restore", "hit", path, v.Bytes(), took)
	} else {
		c.j.sys("cache %s: sticky volume miss (new volume on this host)", path)
		c.report("sticky", "restore", "miss", path, 0, took)
	}
}

func (c *jobCaches) client() *cacheclient.Client {
	acc := c.j.asg.Cache
	return &cacheclient.Client{BaseURL: acc.URL, Token: acc.Token, HTTP: &http.Client{}}
}

func (c *jobCaches) restoreKeyed(ctx context.Context, kc *keyedCache) {
	j := c.j
	if j.asg.Cache == nil {
		j.sys("cache %s: the server gave no cache access (cache skipped)", kc.key)
		return
	}
	t0 := time.Now()
	matched, st, err := c.client().Restore(ctx, kc.key, kc.spec.RestoreKeys, cacheclient.Version(kc.spec.Paths), kc.dirs)
	switch {
	case err != nil:
		j.sys("cache %s: restore failed: %v (continuing without it)", kc.key, err)
		c.report("keyed", "restore", "error", kc.key, 0, time.Since(t0))
	case matched == "":
		j.sys("cache %s: miss", kc.key)
		c.report("keyed", "restore", "miss", kc.key, 0, time.Since(t0))
	default:
		kc.matched = matched
		how := "exact key"
		if matched != kc.key {
			how = "restore key"
		}
		j.sys("cache %s: hit on %s %s (%s in %s)", kc.key, how, matched, human(st.Bytes), time.Since(t0).Round(time.Millisecond))
		c.report("keyed", "restore", "hit", matched, st.Bytes, time.Since(t0))
	}
}

// announceSticky, called when the job has succeeded and before its result
// is reported, records the promotions to come, so that a job of the
// project claimed meanwhile waits for them (see promotions), and says so
// in the log: keepSticky runs after the report, when the log is closed.
func (c *jobCaches) announceSticky() {
	for i := range c.views {
		sv := &c.views[i]
		sv.done = c.j.a.promotions.begin(c.j.asg.Project, sv.path)
		c.j.sys("cache %s: this job's writes go into the sticky volume once its result is reported", sv.path)
	}
}

// keepSticky promotes the sticky views of a successful job, atomically
// each. Call it after the sandbox is gone. It runs after the job's result
// is reported: what it does goes to the agent's log and to metrics.
func (c *jobCaches) keepSticky(ctx context.Context) {
	j := c.j
	for _, sv := range c.views {
		t0 := time.Now()
		st, err := sv.view.Commit(ctx)
		log := j.log.With("cache", sv.path, "took", time.Since(t0).Round(time.Millisecond))
		switch {
		case err != nil:
			log.Warn("sticky volume: keeping the job's writes failed", "err", err)
			c.report("sticky", "save", "error", sv.path, 0, time.Since(t0))
		case !st.Promoted:
			log.Info("sticky volume kept as it was", "reason", st.Reason)
		default:
			log.Info("sticky volume updated", "in_place", st.InPlace, "generation", st.Generation,
				"bytes", st.Bytes, "written", st.Written, "deleted", st.Deleted)
			c.report("sticky", "save", "saved", sv.path, st.Bytes, time.Since(t0))
		}
		if sv.done != nil {
			sv.done()
		}
	}
	c.views = nil
}

// keyedToSave reports whether a keyed cache will be saved: one whose exact
// key was not restored.
func (c *jobCaches) keyedToSave() bool {
	for _, kc := range c.keyed {
		if kc.matched != kc.key {
			return true
		}
	}
	return false
}

// saveKeyed saves a successful job's keyed caches, unless their exact key
// was restored (entries are immutable, as on GitHub). Call it after the
// sandbox is gone.
func (c *jobCaches) saveKeyed(ctx context.Context) {
	j := c.j
	for _, kc := range c.keyed {
		if kc.matched == kc.key {
			j.sys("cache %s: exact hit, not saved again", kc.key)
			continue
		}
		t0 := time.Now()
		st, err := c.client().Save(ctx, kc.key, cacheclient.Version(kc.spec.Paths), kc.dirs)
		switch {
		case errors.Is(err, cacheclient.ErrExists):
			j.sys("cache %s: already saved by another job; skipped", kc.key)
			c.report("keyed", "save", "exists", kc.key, 0, time.Since(t0))
		case err != nil:
			j.sys("cache %s: save failed: %v", kc.key, err)
			c.report("keyed", "save", "error", kc.key, 0, time.Since(t0))
		default:
			j.sys("cache %s: saved (%s in %s)", kc.key, human(st.Bytes), time.Since(t0).Round(time.Millisecond))
			c.report("keyed", "save", "saved", kc.key, st.Bytes, time.Since(t0))
		}
	}
}

// release drops what was not finished (an error path).
func (c *jobCaches) release() {
	for _, sv := range c.views {
		_ = sv.view.Discard()
		if sv.done != nil {
			sv.done()
		}
	}
	c.views = nil
}

// report sends a cache event for metrics; best effort.
func (c *jobCaches) report(kind, op, result, key string, bytes int64, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := protocol.CacheEvent{Attempt: c.j.asg.Attempt, Kind: kind, Op: op, Result: result, Key: key, Bytes: bytes, Seconds: d.Seconds()}
	if err := c.j.a.api.cacheEvent(ctx, c.j.asg.JobID, ev); err != nil && !errors.Is(err, ErrStale) {
		c.j.log.Debug("report cache event", "err", err)
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return strings.TrimSpace(fmt.Sprintf("%d B", n))
}
