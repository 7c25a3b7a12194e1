package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/distribution/reference"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
)

// Image housekeeping: when the engine's data disk is fuller than the
// high-water mark (Config.ImageGCHigh, 75 % by default), the agent
// removes Kiln's images, least recently used first, until it is below the
// low-water mark (ImageGCLow, 70 %), and the leftovers of jobs: stopped
// sandboxes of this agent whose job is over, and Kiln's untagged images
// (a build's, labelled; or the image a name Kiln pulled was on before a
// later pull moved the name).
// It looks every ImageGCInterval and before a job whose image is not on
// the host (the pull that follows needs the room).
//
// Whose images: those Kiln pulled, which the agent records in a state
// file (ImageState: name → when pulled, when last used, the image it is
// on; a pulled image cannot carry a label of Kiln's, its configuration
// is the registry's), and those labelled sandbox.LabelImage (Kiln's builds). Never another
// image, whatever its age: the base image a project names, if an admin
// put it there, stays. Never an image a container uses (any container on
// the host, running or stopped: the engine would refuse anyway), nor the
// image of a job this agent has claimed and not yet finished, including
// one about to be pulled.
//
// An image "Kiln pulled" is one a job of this agent needed that was not on
// the host when the job was claimed and was there when the job ended:
// the pull happened in between (an admin pulling the same name at that
// moment would have it counted as Kiln's).

// imageGCGrace spares a stopped sandbox younger than this: a container
// between its create and its start is "created", not running.
const imageGCGrace = 10 * time.Minute

// imageState is the state file's content.
type imageState struct {
	Images map[string]*imageRecord `json:"images"`
	// Superseded are the ids of images a name Kiln pulled pointed to
	// before a later pull moved it (a moving tag, `pull: always`), and
	// when: the old image stays behind without its tag, Kiln's leftover.
	Superseded map[string]time.Time `json:"superseded,omitempty"`
}

type imageRecord struct {
	// Pulled is when Kiln pulled the image under this name; nil for a
	// name only recorded for when it was last used (a labelled image).
	Pulled *time.Time `json:"pulled,omitempty"`
	Used   time.Time  `json:"used"`
	// ID is the image the name pointed to when last used.
	ID string `json:"id,omitempty"`
}

// imageGC is the agent's image collector.
type imageGC struct {
	eng     sandbox.Images
	destroy func(ctx context.Context, id string) error // a stopped sandbox
	usage   func(ctx context.Context) (used, total uint64, err error)
	high    float64 // percent
	low     float64
	agentID string
	path    string // the state file; "" keeps it in memory
	log     *slog.Logger
	now     func() time.Time

	run sync.Mutex // one collection at a time

	// mu guards what follows, and is held across each removal, so a
	// job registering its image waits for a removal in progress rather
	// than racing it.
	mu      sync.Mutex
	state   imageState
	claimed map[string]int  // normalized image name → this agent's jobs needing it
	active  map[string]bool // "job/attempt" of this agent's jobs
}

func newImageGC(eng sandbox.Images, destroy func(context.Context, string) error, cfg Config, log *slog.Logger) *imageGC {
	g := &imageGC{
		eng: eng, destroy: destroy, usage: eng.DataDiskUsage,
		high: cfg.ImageGCHigh, low: cfg.ImageGCLow, agentID: cfg.ID, path: cfg.ImageState,
		log: log.With("component", "imagegc"), now: time.Now,
		state:   imageState{Images: map[string]*imageRecord{}},
		claimed: map[string]int{}, active: map[string]bool{},
	}
	if g.path != "" {
		b, err := os.ReadFile(g.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			g.log.Warn("image state file unreadable: images pulled before are not Kiln's to remove", "file", g.path, "err", err)
		default:
			var st imageState
			if err := json.Unmarshal(b, &st); err != nil {
				g.log.Warn("image state file corrupt: images pulled before are not Kiln's to remove", "file", g.path, "err", err)
			} else if st.Images != nil {
				g.state = st
			}
		}
	}
	return g
}

// normRef is an image name in one spelling ("golang:1.23" and
// "docker.io/library/golang:1.23" are one name): Docker lists the short,
// Podman the long one.
func normRef(s string) string {
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return s
	}
	return reference.TagNameOnly(n).String()
}

// names is every name of img, normalized: its tags and digests.
func names(img sandbox.Image) []string {
	out := make([]string, 0, len(img.Refs)+len(img.Digests))
	for _, r := range img.Refs {
		out = append(out, normRef(r))
	}
	for _, d := range img.Digests {
		out = append(out, normRef(d))
	}
	return out
}

func kilnLabelled(img sandbox.Image) bool {
	return img.Labels[sandbox.LabelImage] == "true" || img.Labels[sandbox.LabelManaged] == "true"
}

// jobStarting registers a claimed job's image before the job runs, and
// collects first when the image is not on the host and the disk is past
// the high-water mark. The returned func, called when the job is over,
// records the image as Kiln's if the job pulled it, or when it was last
// used, and ends the registration.
func (g *imageGC) jobStarting(ctx context.Context, asg *protocol.Assignment) (done func()) {
	ref := normRef(asg.Spec.Image)
	key := fmt.Sprintf("%d/%d", asg.JobID, asg.Attempt)
	g.mu.Lock()
	g.claimed[ref]++
	g.active[key] = true
	g.mu.Unlock()
	absent := false
	if imgs, err := g.eng.Images(ctx); err == nil {
		absent = findImage(imgs, ref) == nil
	}
	if absent {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		g.collect(cctx, "before a pull")
		cancel()
	}
	return func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		imgs, err := g.eng.Images(dctx)
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.claimed[ref]--; g.claimed[ref] <= 0 {
			delete(g.claimed, ref)
		}
		delete(g.active, key)
		if err != nil {
			return
		}
		img := findImage(imgs, ref)
		if img == nil {
			return
		}
		now := g.now()
		rec := g.state.Images[ref]
		switch {
		case rec != nil:
			g.followLocked(rec, img.ID)
			rec.Used = now
		case absent:
			g.state.Images[ref] = &imageRecord{Pulled: &now, Used: now, ID: img.ID}
			g.log.Debug("image pulled for a job recorded as Kiln's", "image", ref)
		case kilnLabelled(*img):
			g.state.Images[ref] = &imageRecord{Used: now, ID: img.ID}
		default:
			return // not Kiln's: nothing to record
		}
		g.saveLocked()
	}
}

func findImage(imgs []sandbox.Image, ref string) *sandbox.Image {
	for i := range imgs {
		if slices.Contains(names(imgs[i]), ref) {
			return &imgs[i]
		}
	}
	return nil
}

// loop collects every interval until ctx ends.
func (g *imageGC) loop(ctx context.Context, every time.Duration) {
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		g.collect(ctx, "periodic")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gcResult is what one collection did.
type gcResult struct {
	Images     []string // names removed (untagged or deleted)
	Sandboxes  []string // stopped sandboxes removed
	Freed      int64    // bytes of the images deleted (an upper bound)
	Before     float64  // disk usage, percent
	After      float64
	Collected  bool // the disk was past the high-water mark
	FailedRefs []string
}

func percent(used, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return float64(used) / float64(total) * 100
}

// collect removes Kiln's leftovers and least recently used images when
// the disk is past the high-water mark, until it is below the low one.
func (g *imageGC) collect(ctx context.Context, why string) gcResult {
	g.run.Lock()
	defer g.run.Unlock()
	var res gcResult
	used, total, err := g.usage(ctx)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("image housekeeping: cannot measure the engine's disk", "err", err)
		}
		return res
	}
	res.Before, res.After = percent(used, total), percent(used, total)
	if res.Before < g.high {
		return res
	}
	res.Collected = true
	g.log.Info("image housekeeping: the engine's disk is past its high-water mark", "why", why,
		"used", formatBytes(int64(used)), "of", formatBytes(int64(total)), "percent", round1(res.Before), "high", g.high, "low", g.low)

	ctrs, err := g.eng.Containers(ctx)
	if err != nil {
		g.log.Warn("image housekeeping: cannot list containers; nothing removed", "err", err)
		return res
	}
	// 1. Stopped sandboxes of this agent whose job is over.
	inUse := map[string]bool{}
	for _, c := range ctrs {
		if g.leftover(c) {
			if err := g.destroy(ctx, c.ID); err != nil {
				g.log.Warn("image housekeeping: remove a stopped sandbox", "sandbox", c.Name, "err", err)
				inUse[c.ImageID] = true
			} else {
				g.log.Info("image housekeeping: removed a stopped sandbox whose job is over", "sandbox", c.Name, "job", c.Labels[sandbox.LabelJob])
				res.Sandboxes = append(res.Sandboxes, c.Name)
			}
			continue
		}
		inUse[c.ImageID] = true
	}
	imgs, err := g.eng.Images(ctx)
	if err != nil {
		g.log.Warn("image housekeeping: cannot list images", "err", err)
		return res
	}
	g.mu.Lock()
	g.noteMovesLocked(imgs)
	g.forgetGoneLocked(imgs)
	g.mu.Unlock()

	// 2. Kiln's dangling images (a build's leftovers), then 3. Kiln's
	// named images, least recently used first.
	type candidate struct {
		ref  string // what to remove: a name, or the id of a dangling image
		name string // the normalized name, for the state file ("" if dangling)
		used time.Time
		img  sandbox.Image
	}
	var dangling, named []candidate
	g.mu.Lock()
	for _, img := range imgs {
		if inUse[img.ID] {
			continue
		}
		if len(img.Refs) == 0 {
			// Untagged: a build's leftover, or an image a later pull of
			// its name superseded (it keeps its digest).
			if _, old := g.state.Superseded[img.ID]; old || kilnLabelled(img) {
				dangling = append(dangling, candidate{ref: img.ID, used: img.Created, img: img})
				continue
			}
		}
		// Its tags, Kiln's if recorded as pulled or the image is
		// labelled; its digests only if recorded (an image pulled by
		// digest has no tag).
		for i, r := range append(slices.Clone(img.Refs), img.Digests...) {
			n := normRef(r)
			rec := g.state.Images[n]
			pulled := rec != nil && rec.Pulled != nil
			if !pulled && (i >= len(img.Refs) || !kilnLabelled(img)) {
				continue
			}
			used := img.Created
			if rec != nil {
				used = rec.Used
			}
			named = append(named, candidate{ref: r, name: n, used: used, img: img})
		}
	}
	g.mu.Unlock()
	slices.SortStableFunc(named, func(a, b candidate) int {
		return cmp.Or(a.used.Compare(b.used), cmp.Compare(a.name, b.name))
	})
	for i, c := range append(dangling, named...) {
		if i >= len(dangling) {
			// Named images only while the disk is past the low mark.
			if used, total, err := g.usage(ctx); err != nil {
				g.log.Warn("image housekeeping: cannot measure the engine's disk; stopping", "err", err)
				break
			} else if res.After = percent(used, total); res.After < g.low {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
		g.mu.Lock()
		if g.neededLocked(c.img) {
			g.mu.Unlock()
			continue
		}
		rm, err := g.eng.RemoveImage(ctx, c.ref)
		if err == nil {
			if c.name != "" {
				delete(g.state.Images, c.name)
			} else {
				delete(g.state.Superseded, c.ref)
			}
			g.saveLocked()
		}
		g.mu.Unlock()
		if err != nil {
			g.log.Warn("image housekeeping: remove image", "image", c.ref, "err", err)
			res.FailedRefs = append(res.FailedRefs, c.ref)
			continue
		}
		res.Images = append(res.Images, c.ref)
		res.Freed += rm.Freed
		what := "untagged (the image stays under its other names)"
		if rm.Deleted {
			what = "deleted"
		}
		g.log.Info("image housekeeping: removed image", "image", c.ref, "id", shortID(c.img.ID), "bytes", rm.Freed,
			"size", formatBytes(rm.Freed), "last_used", c.used.UTC().Format(time.RFC3339), "how", what)
	}
	if used, total, err := g.usage(ctx); err == nil {
		res.After = percent(used, total)
	}
	level := slog.LevelInfo
	if res.After >= g.high {
		level = slog.LevelWarn // what Kiln may remove was not enough
	}
	g.log.Log(ctx, level, "image housekeeping: done", "images_removed", len(res.Images), "sandboxes_removed", len(res.Sandboxes),
		"freed_bytes", res.Freed, "freed", formatBytes(res.Freed), "percent_before", round1(res.Before), "percent_after", round1(res.After))
	return res
}

// leftover reports a stopped sandbox of this agent whose job is not
// running here, old enough not to be one being started.
func (g *imageGC) leftover(c sandbox.Container) bool {
	if c.Running || c.Labels[sandbox.LabelManaged] != "true" || c.Labels[sandbox.LabelAgent] != g.agentID {
		return false
	}
	if g.now().Sub(c.Created) < imageGCGrace {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.active[c.Labels[sandbox.LabelJob]+"/"+c.Labels[sandbox.LabelAttempt]]
}

// neededLocked reports an image one of this agent's claimed jobs needs.
func (g *imageGC) neededLocked(img sandbox.Image) bool {
	for _, n := range names(img) {
		if g.claimed[n] > 0 {
			return true
		}
	}
	return false
}

// noteMovesLocked records as superseded the images names Kiln pulled
// pointed to, that those names have left since (a pull of the name by
// anyone: a job's, or an admin's), and follows the names.
func (g *imageGC) noteMovesLocked(imgs []sandbox.Image) {
	byName := map[string]string{} // name → image id
	for _, img := range imgs {
		for _, n := range names(img) {
			byName[n] = img.ID
		}
	}
	changed := false
	for n, rec := range g.state.Images {
		if id, ok := byName[n]; ok && rec.ID != id {
			g.followLocked(rec, id)
			changed = true
		}
	}
	if changed {
		g.saveLocked()
	}
}

// followLocked points rec at the image id its name is on now; the image
// it was on, if Kiln pulled it, is superseded.
func (g *imageGC) followLocked(rec *imageRecord, id string) {
	if rec.ID == id {
		return
	}
	if rec.Pulled != nil && rec.ID != "" {
		if g.state.Superseded == nil {
			g.state.Superseded = map[string]time.Time{}
		}
		g.state.Superseded[rec.ID] = g.now()
	}
	rec.ID = id
}

// forgetGoneLocked drops the records of names no longer on the host.
func (g *imageGC) forgetGoneLocked(imgs []sandbox.Image) {
	present := map[string]bool{}
	for _, img := range imgs {
		for _, n := range names(img) {
			present[n] = true
		}
	}
	changed := false
	for id := range g.state.Superseded {
		if !slices.ContainsFunc(imgs, func(img sandbox.Image) bool { return img.ID == id }) {
			delete(g.state.Superseded, id)
			changed = true
		}
	}
	for n := range g.state.Images {
		if !present[n] && g.claimed[n] == 0 {
			delete(g.state.Images, n)
			changed = true
		}
	}
	if changed {
		g.saveLocked()
	}
}

// saveLocked writes the state file atomically: a temporary file in the
// same directory, synced, renamed over it.
func (g *imageGC) saveLocked() {
	if g.path == "" {
		return
	}
	if err := writeFileAtomic(g.path, g.state); err != nil {
		g.log.Warn("image state file not written", "file", g.path, "err", err)
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func shortID(id string) string {
	if len(id) > 19 {
		return id[:19] // "sha256:" and 12 hex digits
	}
	return id
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
