package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
)

// fakeImages is an engine's images and containers in memory: removing an
// image frees its size from a disk whose usage the test reads.
type fakeImages struct {
	mu        sync.Mutex
	imgs      []sandbox.Image
	ctrs      []sandbox.Container
	used      uint64
	total     uint64
	removed   []string
	destroyed []string
}

func (f *fakeImages) Images(context.Context) ([]sandbox.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.imgs), nil
}

func (f *fakeImages) Containers(context.Context) ([]sandbox.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ctrs), nil
}

func (f *fakeImages) RemoveImage(_ context.Context, ref string) (sandbox.Removal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, img := range f.imgs {
		if img.ID == ref || slices.Contains(img.Refs, ref) || slices.Contains(img.Digests, ref) {
			f.removed = append(f.removed, ref)
			img.Refs = slices.DeleteFunc(slices.Clone(img.Refs), func(r string) bool { return r == ref })
			img.Digests = slices.DeleteFunc(slices.Clone(img.Digests), func(r string) bool { return r == ref })
			if len(img.Refs)+len(img.Digests) > 0 && img.ID != ref {
				f.imgs[i] = img
				return sandbox.Removal{}, nil
			}
			f.imgs = slices.Delete(f.imgs, i, i+1)
			f.used -= uint64(img.Size)
			return sandbox.Removal{Deleted: true, Freed: img.Size}, nil
		}
	}
	return sandbox.Removal{}, nil
}

func (f *fakeImages) DataDiskUsage(context.Context) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used, f.total, nil
}

func (f *fakeImages) destroy(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroyed = append(f.destroyed, id)
	f.ctrs = slices.DeleteFunc(f.ctrs, func(c sandbox.Container) bool { return c.ID == id })
	return nil
}

func testGC(t *testing.T, f *fakeImages, state string) (*imageGC, *bytes.Buffer) {
	t.Helper()
	var logBuf bytes.Buffer
	cfg := DefaultConfig()
	cfg.ID, cfg.ImageState = "agent-1", state
	g := newImageGC(f, f.destroy, cfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
	return g, &logBuf
}

func writeState(t *testing.T, path string, recs map[string]time.Time) {
	t.Helper()
	st := imageState{Images: map[string]*imageRecord{}}
	for n, used := range recs {
		st.Images[n] = &imageRecord{Pulled: &used, Used: used}
	}
	if err := writeFileAtomic(path, st); err != nil {
		t.Fatal(err)
	}
}

const mib = 1 << 20

// TestImageGCPolicy: past the high mark, Kiln's images go least recently
// used first until the disk is below the low mark; images not Kiln's, in
// use by a container, or needed by a claimed job stay; leftovers go.
func TestImageGCPolicy(t *testing.T) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeImages{total: 1000 * mib, used: 800 * mib}
	f.imgs = []sandbox.Image{
		{ID: "sha256:old", Refs: []string{"golang:1.21"}, Size: 60 * mib},               // Kiln's, oldest
		{ID: "sha256:mid", Refs: []string{"docker.io/library/node:20"}, Size: 60 * mib}, // Kiln's (Podman's spelling)
		{ID: "sha256:new", Refs: []string{"golang:1.23"}, Size: 60 * mib},               // Kiln's, newest: not needed
		{ID: "sha256:admin", Refs: []string{"debian:12"}, Size: 300 * mib},              // not Kiln's
		{ID: "sha256:busy", Refs: []string{"alpine:3"}, Size: 60 * mib},                 // Kiln's, a container uses it
		{ID: "sha256:claimed", Refs: []string{"rust:1"}, Size: 60 * mib},                // Kiln's, a claimed job needs it
		{ID: "sha256:built", Refs: []string{"registry.example/web:1"}, Size: 10 * mib, // built by Kiln, labelled
			Created: day.Add(-48 * time.Hour), Labels: map[string]string{sandbox.LabelImage: "true"}},
		{ID: "sha256:dangling", Size: 5 * mib, Labels: map[string]string{sandbox.LabelImage: "true"}}, // a build's leftover
		{ID: "sha256:strayed", Size: 5 * mib}, // dangling, not Kiln's
		{ID: "sha256:bydigest", Digests: []string{"golang@sha256:" + strings.Repeat("ab", 32)}, Size: 20 * mib},    // Kiln pulled it by digest
		{ID: "sha256:foreigndigest", Digests: []string{"node@sha256:" + strings.Repeat("cd", 32)}, Size: 20 * mib}, // pulled by digest, not by Kiln
	}
	old := day.Add(-10 * 24 * time.Hour)
	f.ctrs = []sandbox.Container{
		{ID: "c-busy", Name: "someone", ImageID: "sha256:busy", Running: true},
		{ID: "c-left", Name: "kiln-7-1-agent-1", ImageID: "sha256:busy", Created: old,
			Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: "agent-1", sandbox.LabelJob: "7", sandbox.LabelAttempt: "1"}},
		{ID: "c-running-job", Name: "kiln-8-1-agent-1", ImageID: "sha256:admin", Created: old,
			Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: "agent-1", sandbox.LabelJob: "8", sandbox.LabelAttempt: "1"}},
		{ID: "c-other-agent", Name: "kiln-9-1-agent-2", ImageID: "sha256:admin", Created: old,
			Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: "agent-2", sandbox.LabelJob: "9", sandbox.LabelAttempt: "1"}},
	}
	state := filepath.Join(t.TempDir(), "images.json")
	writeState(t, state, map[string]time.Time{
		"docker.io/library/golang:1.21":                               day.Add(-72 * time.Hour),
		"docker.io/library/node:20":                                   day.Add(-24 * time.Hour),
		"docker.io/library/golang:1.23":                               day,
		"docker.io/library/alpine:3":                                  day.Add(-100 * time.Hour),
		"docker.io/library/rust:1":                                    day.Add(-100 * time.Hour),
		"docker.io/library/golang@sha256:" + strings.Repeat("ab", 32): day.Add(-200 * time.Hour),
	})
	g, logBuf := testGC(t, f, state)
	g.now = func() time.Time { return day }
	// Job 8 is running (its sandbox is stopped for a moment: still its).
	done := g.jobStarting(t.Context(), &protocol.Assignment{JobID: 8, Attempt: 1, Spec: pipeline.JobSpec{Image: "rust:1"}})

	res := g.collect(t.Context(), "test")
	// Freed: leftovers (c-left; then the dangling image, 5), then
	// oldest first, rust:1 (claimed) and alpine:3 (in use) passed over:
	// the image pulled by digest, golang:1.21, the built image (by its
	// creation) — 800-5-20-60-10 = 705 MiB, 70.5 % — then node:20: 645
	// MiB, under 70 %.
	if want := []string{"sha256:dangling", "golang@sha256:" + strings.Repeat("ab", 32), "golang:1.21", "registry.example/web:1", "docker.io/library/node:20"}; !slices.Equal(res.Images, want) {
		t.Errorf("removed %v, want %v", res.Images, want)
	}
	if want := []string{"kiln-7-1-agent-1"}; !slices.Equal(res.Sandboxes, want) {
		t.Errorf("sandboxes removed %v, want %v", res.Sandboxes, want)
	}
	if res.Freed != 155*mib || res.After >= 70 {
		t.Errorf("freed %d, after %.1f%%", res.Freed, res.After)
	}
	for _, keep := range []string{"debian:12", "alpine:3", "rust:1", "golang:1.23"} {
		if !slices.ContainsFunc(f.imgs, func(i sandbox.Image) bool { return slices.Contains(i.Refs, keep) }) {
			t.Errorf("%s removed", keep)
		}
	}
	for _, id := range []string{"sha256:strayed", "sha256:foreigndigest"} {
		if !slices.ContainsFunc(f.imgs, func(i sandbox.Image) bool { return i.ID == id }) {
			t.Errorf("%s, not Kiln's, was removed", id)
		}
	}
	logs := logBuf.String()
	for _, want := range []string{`image=golang:1.21`, `bytes=62914560`, `freed_bytes=162529280`, "removed a stopped sandbox"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// The state file forgets what went, keeps the rest.
	st := readState(t, state)
	if _, ok := st.Images["docker.io/library/golang:1.21"]; ok {
		t.Error("golang:1.21 still recorded")
	}
	if _, ok := st.Images["docker.io/library/golang:1.23"]; !ok {
		t.Error("golang:1.23 forgotten")
	}

	// Under the high mark: nothing happens.
	done()
	if res := g.collect(t.Context(), "test"); res.Collected || len(res.Images) > 0 {
		t.Errorf("below the high mark: %+v", res)
	}
}

// TestImageGCNoticesMovedTags: a name Kiln pulled that another pull
// moved (an admin's, no job since) leaves its old image, untagged, to be
// removed as Kiln's leftover; an untagged image never Kiln's stays.
func TestImageGCNoticesMovedTags(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeImages{total: 100, used: 80, imgs: []sandbox.Image{
		{ID: "sha256:old", Digests: []string{"golang@sha256:" + strings.Repeat("01", 32)}, Size: 20},
		{ID: "sha256:new", Refs: []string{"golang:1.23"}, Size: 20},
		{ID: "sha256:stray", Digests: []string{"node@sha256:" + strings.Repeat("02", 32)}, Size: 20},
	}}
	state := filepath.Join(t.TempDir(), "images.json")
	if err := writeFileAtomic(state, imageState{Images: map[string]*imageRecord{
		"docker.io/library/golang:1.23": {Pulled: &t0, Used: t0, ID: "sha256:old"},
	}}); err != nil {
		t.Fatal(err)
	}
	g, _ := testGC(t, f, state)
	// 80 → 60 once the old image goes: under the low mark, golang:1.23 stays.
	if res := g.collect(t.Context(), "test"); !slices.Equal(res.Images, []string{"sha256:old"}) {
		t.Errorf("removed %v, want the image the tag moved off", res.Images)
	}
	if st := readState(t, state); st.Images["docker.io/library/golang:1.23"].ID != "sha256:new" || len(st.Superseded) != 0 {
		t.Errorf("state after: %+v", st)
	}
}

func readState(t *testing.T, path string) imageState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st imageState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestImageGCRecordsPulls: an image absent at a job's claim and present at
// its end was pulled by Kiln and is recorded, across a restart; an image
// that was there before is not; a recorded one has its last use updated;
// and a job whose image is to be pulled collects first.
func TestImageGCRecordsPulls(t *testing.T) {
	f := &fakeImages{total: 100, used: 90}
	f.imgs = []sandbox.Image{
		{ID: "sha256:admin", Refs: []string{"debian:12"}, Size: 1},
		{ID: "sha256:stale", Refs: []string{"golang:1.20"}, Size: 30},
	}
	state := filepath.Join(t.TempDir(), "images.json")
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	writeState(t, state, map[string]time.Time{"docker.io/library/golang:1.20": t0})
	g, _ := testGC(t, f, state)
	g.now = func() time.Time { return t0.Add(time.Hour) }

	// golang:1.23 is not on the host: a collection runs before its pull.
	done := g.jobStarting(t.Context(), &protocol.Assignment{JobID: 1, Attempt: 1, Spec: pipeline.JobSpec{Image: "golang:1.23"}})
	if want := []string{"golang:1.20"}; !slices.Equal(f.removed, want) {
		t.Fatalf("before the pull, removed %v, want %v", f.removed, want)
	}
	f.mu.Lock()
	f.imgs = append(f.imgs, sandbox.Image{ID: "sha256:pulled", Refs: []string{"golang:1.23"}, Size: 10})
	f.mu.Unlock()
	done()
	// A later pull moves the tag: the old image stays, untagged, with its
	// digest; it is recorded as superseded.
	done = g.jobStarting(t.Context(), &protocol.Assignment{JobID: 4, Attempt: 1, Spec: pipeline.JobSpec{Image: "golang:1.23"}})
	f.mu.Lock()
	f.imgs[len(f.imgs)-1] = sandbox.Image{ID: "sha256:pulled", Digests: []string{"golang@sha256:" + strings.Repeat("01", 32)}, Size: 10}
	f.imgs = append(f.imgs, sandbox.Image{ID: "sha256:pulled2", Refs: []string{"golang:1.23"}, Size: 10})
	f.mu.Unlock()
	done()
	if _, ok := readState(t, state).Superseded["sha256:pulled"]; !ok {
		t.Errorf("the superseded image is not recorded: %+v", readState(t, state))
	}
	f.removed, f.used = nil, 76 // past the high mark; under the low one once the old image goes
	if res := g.collect(t.Context(), "test"); !slices.Equal(res.Images, []string{"sha256:pulled"}) {
		t.Errorf("collect after a pull moved the tag: removed %v, want the superseded image", res.Images)
	}
	if st := readState(t, state); len(st.Superseded) != 0 || st.Images["docker.io/library/golang:1.23"].ID != "sha256:pulled2" {
		t.Errorf("state after: %+v", st)
	}
	done2 := g.jobStarting(t.Context(), &protocol.Assignment{JobID: 2, Attempt: 1, Spec: pipeline.JobSpec{Image: "debian:12"}})
	done2()

	g2, _ := testGC(t, f, state) // a restarted agent
	rec := g2.state.Images["docker.io/library/golang:1.23"]
	if rec == nil || rec.Pulled == nil || !rec.Used.Equal(t0.Add(time.Hour)) || rec.ID != "sha256:pulled2" {
		t.Fatalf("pulled image's record: %+v", rec)
	}
	if _, ok := g2.state.Images["docker.io/library/debian:12"]; ok {
		t.Error("an image on the host before its job recorded as Kiln's")
	}
	g2.now = func() time.Time { return t0.Add(2 * time.Hour) }
	g2.jobStarting(t.Context(), &protocol.Assignment{JobID: 3, Attempt: 1, Spec: pipeline.JobSpec{Image: "docker.io/library/golang:1.23"}})()
	if rec := readState(t, state).Images["docker.io/library/golang:1.23"]; rec == nil || !rec.Used.Equal(t0.Add(2*time.Hour)) || !rec.Pulled.Equal(t0.Add(time.Hour)) {
		t.Errorf("after another use: %+v", rec)
	}
}

// TestImageGCCorruptState: a state file that cannot be read makes no
// image Kiln's (nothing pulled before is removed), and is replaced whole.
func TestImageGCCorruptState(t *testing.T) {
	state := filepath.Join(t.TempDir(), "images.json")
	if err := os.WriteFile(state, []byte(`{"images": {"golang:1.2`), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fakeImages{total: 100, used: 99, imgs: []sandbox.Image{{ID: "sha256:x", Refs: []string{"golang:1.21"}, Size: 50}}}
	g, logBuf := testGC(t, f, state)
	if res := g.collect(t.Context(), "test"); len(res.Images) > 0 {
		t.Errorf("removed %v with a corrupt state file", res.Images)
	}
	if !strings.Contains(logBuf.String(), "corrupt") {
		t.Errorf("log: %s", logBuf)
	}
	done := g.jobStarting(t.Context(), &protocol.Assignment{JobID: 1, Attempt: 1, Spec: pipeline.JobSpec{Image: "node:20"}})
	f.imgs = append(f.imgs, sandbox.Image{ID: "sha256:n", Refs: []string{"node:20"}})
	done()
	_ = readState(t, state) // valid JSON again
	entries, _ := os.ReadDir(filepath.Dir(state))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// TestImageGCConfig: marks out of order are refused; 0 turns it off.
func TestImageGCConfig(t *testing.T) {
	base := DefaultConfig()
	base.ID, base.Server, base.Token, base.WorkDir = "a", "http://127.0.0.1:1", "t", t.TempDir()
	for _, tc := range []struct {
		high, low float64
		ok        bool
	}{{75, 70, true}, {0, 0, true}, {70, 75, false}, {101, 70, false}, {75, 0, false}} {
		cfg := base
		cfg.ImageGCHigh, cfg.ImageGCLow = tc.high, tc.low
		_, err := New(cfg, nil, nil, nil, slog.New(slog.DiscardHandler))
		if (err == nil) != tc.ok {
			t.Errorf("high %g, low %g: %v", tc.high, tc.low, err)
		}
	}
}

// imagesRuntime is a Runtime that can also do housekeeping.
type imagesRuntime struct {
	sandbox.Runtime
	*fakeImages
}

// TestImageGCWiring: an agent on a runtime that can list and remove
// images does housekeeping unless it is turned off; on one that cannot,
// it does none.
func TestImageGCWiring(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID, cfg.Server, cfg.Token, cfg.WorkDir = "a", "http://127.0.0.1:1", "t", t.TempDir()
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		rt   sandbox.Runtime
		high float64
		on   bool
	}{
		{"images runtime", imagesRuntime{fakeImages: &fakeImages{}}, 75, true},
		{"turned off", imagesRuntime{fakeImages: &fakeImages{}}, 0, false},
		{"plain runtime", struct{ sandbox.Runtime }{}, 75, false},
	} {
		c := cfg
		c.ImageGCHigh = tc.high
		a, err := New(c, tc.rt, nil, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		if (a.images != nil) != tc.on {
			t.Errorf("%s: housekeeping %v, want %v", tc.name, a.images != nil, tc.on)
		}
	}
}
