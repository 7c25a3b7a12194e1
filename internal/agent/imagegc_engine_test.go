package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	dockerclient "github.com/docker/docker/client"

	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/testenv"
)

// testImagesPrefix names every image this test makes. The collector under
// test sees only those (onlyTestImages): whatever else the engines hold,
// the base image other tests need included, is out of its reach.
const testImagesPrefix = "localhost/kiln-test-imagegc/"

// onlyTestImages shows the collector the test's images alone, each with
// its test names only.
type onlyTestImages struct {
	engine   sandbox.Images
	dangling map[string]bool // ids of the test's dangling images
}

func (o onlyTestImages) Containers(ctx context.Context) ([]sandbox.Container, error) {
	return o.engine.Containers(ctx)
}

func (o onlyTestImages) RemoveImage(ctx context.Context, ref string) (sandbox.Removal, error) {
	return o.engine.RemoveImage(ctx, ref)
}

func (o onlyTestImages) DataDiskUsage(ctx context.Context) (uint64, uint64, error) {
	return o.engine.DataDiskUsage(ctx)
}

func (o onlyTestImages) Images(ctx context.Context) ([]sandbox.Image, error) {
	imgs, err := o.engine.Images(ctx)
	var out []sandbox.Image
	for _, img := range imgs {
		if len(img.Refs) == 0 && o.dangling[img.ID] {
			out = append(out, img)
			continue
		}
		img.Refs = slices.DeleteFunc(img.Refs, func(r string) bool { return !strings.HasPrefix(r, testImagesPrefix) })
		img.Digests = nil
		if len(img.Refs) > 0 {
			out = append(out, img)
		}
	}
	return out, err
}

// TestImageGCOnEngines: on each engine, with the disk's usage forced past
// the high mark, the collector removes an image Kiln pulled (recorded in
// the state file) and a dangling image Kiln labelled, and keeps an image
// a running sandbox uses (though recorded as pulled) and one not Kiln's.
func TestImageGCOnEngines(t *testing.T) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			ctx := t.Context()
			rt, err := docker.New(e.Host)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Close() })
			cli, err := dockerclient.NewClientWithOpts(dockerclient.WithHost(e.Host), dockerclient.WithAPIVersionNegotiation())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			var b [4]byte
			rand.Read(b[:])
			tag := hex.EncodeToString(b[:])
			pulled, busy, foreign := testImagesPrefix+"pulled:"+tag, testImagesPrefix+"busy:"+tag, testImagesPrefix+"foreign:"+tag

			importImage(t, cli, pulled)
			importImage(t, cli, foreign)
			danglingID := importImage(t, cli, "", "LABEL "+sandbox.LabelImage+"=true")
			// busy is the base image under a test name: the same image,
			// so only the test's name is ever removed.
			if err := cli.ImageTag(ctx, testenv.BaseImage, busy); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), busy, image.RemoveOptions{}) })
			sbName := "kiln-test-imagegc-" + e.Name + "-" + tag
			if _, err := rt.Create(ctx, sandbox.Spec{Name: sbName, Image: busy,
				Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: "agent-imagegc-test"}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rt.Destroy(context.Background(), sbName) })

			// A sandbox of this agent that stopped and outlived its job.
			leftName := "kiln-test-imagegc-left-" + e.Name + "-" + tag
			left, err := cli.ContainerCreate(ctx, &container.Config{Image: busy, Cmd: []string{"true"}, Labels: map[string]string{
				sandbox.LabelManaged: "true", sandbox.LabelAgent: "agent-imagegc-test", sandbox.LabelJob: "77", sandbox.LabelAttempt: "1"}}, nil, nil, nil, leftName)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), left.ID, container.RemoveOptions{Force: true}) })

			state := filepath.Join(t.TempDir(), "images.json")
			long := time.Now().Add(-time.Hour)
			writeState(t, state, map[string]time.Time{normRef(pulled): long, normRef(busy): long.Add(-time.Hour)})
			var logBuf bytes.Buffer
			cfg := DefaultConfig()
			cfg.ID, cfg.ImageState = "agent-imagegc-test", state
			only := onlyTestImages{engine: rt, dangling: map[string]bool{danglingID: true}}
			g := newImageGC(only, rt.Destroy, cfg,
				slog.New(slog.NewTextHandler(&logBuf, nil)))
			// A name Kiln pulled, moved to another image by a later pull
			// (here an import under the same name): the old image stays,
			// untagged, and is Kiln's leftover.
			moved := testImagesPrefix + "moved:" + tag
			oldID := importImage(t, cli, moved)
			g.state.Images[normRef(moved)] = &imageRecord{Pulled: &long, Used: long, ID: oldID}
			importImage(t, cli, moved)
			only.dangling[oldID] = true
			g.jobStarting(ctx, &protocol.Assignment{JobID: 1, Attempt: 1, Spec: pipeline.JobSpec{Image: moved}})()
			if _, ok := g.state.Superseded[oldID]; !ok {
				t.Fatalf("the image %s moved off is not recorded as superseded: %+v", oldID, g.state)
			}
			g.usage = func(context.Context) (uint64, uint64, error) { return 99, 100, nil } // always past the high mark
			g.now = func() time.Time { return time.Now().Add(time.Hour) }                   // the leftover is past its grace

			res := g.collect(ctx, "test")
			t.Logf("collected: %+v\n%s", res, logBuf.String())
			has := func(ref string) bool {
				_, err := cli.ImageInspect(ctx, ref)
				return err == nil
			}
			if has(pulled) {
				t.Errorf("%s (Kiln pulled it, unused) kept", pulled)
			}
			if has(oldID) {
				t.Errorf("superseded image %s kept", oldID)
			}
			if has(danglingID) {
				t.Errorf("dangling Kiln image %s kept", danglingID)
			}
			if !has(busy) {
				t.Errorf("%s (a running sandbox's image) removed", busy)
			}
			if !has(foreign) {
				t.Errorf("%s (not Kiln's) removed", foreign)
			}
			if _, err := cli.ContainerInspect(ctx, left.ID); err == nil || !slices.Equal(res.Sandboxes, []string{leftName}) {
				t.Errorf("stopped sandbox %s: removed %v, inspect %v", leftName, res.Sandboxes, err)
			}
			if !has(testenv.BaseImage) {
				t.Fatalf("the base image %s is gone", testenv.BaseImage)
			}
			if !strings.Contains(logBuf.String(), "image="+pulled) && !strings.Contains(logBuf.String(), `image=`+strings.TrimPrefix(pulled, "localhost/")) {
				t.Errorf("the log does not say %s was removed", pulled)
			}
		})
	}
}

// importImage imports a one-file image as ref ("": dangling), removed when
// the test ends, and returns its id.
func importImage(t *testing.T, cli *dockerclient.Client, ref string, changes ...string) string {
	t.Helper()
	ctx := t.Context()
	before := map[string]bool{}
	if ref == "" {
		list, err := cli.ImageList(ctx, image.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			before[s.ID] = true
		}
	}
	body, err := cli.ImageImport(ctx, image.ImportSource{Source: testenv.TinyImage(), SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	out, _ := io.ReadAll(body)
	body.Close()
	var id string
	if ref != "" {
		inspect, err := cli.ImageInspect(ctx, ref)
		if err != nil {
			t.Fatalf("import %s: %v (%s)", ref, err, out)
		}
		id = inspect.ID
	} else {
		list, err := cli.ImageList(ctx, image.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if !before[s.ID] && strings.Contains(string(out), strings.TrimPrefix(s.ID, "sha256:")) {
				id = s.ID
			}
		}
		if id == "" {
			t.Fatalf("dangling import: no new image named in %q", out)
		}
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), id, image.RemoveOptions{Force: true}) })
	return id
}
