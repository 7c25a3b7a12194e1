package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/testenv"
)

// importTestImage imports a one-file image as ref ("" for a dangling one)
// with the Dockerfile changes given, and removes it when the test ends.
// It returns the image's id. Only test-only images are made and removed:
// never the base image other tests need.
func importTestImage(t *testing.T, r *Runtime, ref string, changes ...string) string {
	t.Helper()
	ctx := t.Context()
	body, err := r.cli.ImageImport(ctx, image.ImportSource{Source: testenv.TinyImage(), SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	var out bytes.Buffer
	out.ReadFrom(body)
	body.Close()
	id := ""
	if ref != "" {
		inspect, err := r.cli.ImageInspect(ctx, ref)
		if err != nil {
			t.Fatalf("import %s: %v (%s)", ref, err, out.String())
		}
		id = inspect.ID
	} else {
		// The import's answer names the image it made (Docker: a status
		// "sha256:…"; Podman: a stream with its id).
		for _, img := range mustImages(t, r) {
			if strings.Contains(out.String(), strings.TrimPrefix(img.ID, "sha256:")) {
				id = img.ID
			}
		}
		if id == "" {
			t.Fatalf("dangling import: no image named in %q", out.String())
		}
	}
	t.Cleanup(func() {
		_, _ = r.cli.ImageRemove(context.Background(), id, image.RemoveOptions{Force: true})
	})
	return id
}

func mustImages(t *testing.T, r *Runtime) []sandbox.Image {
	t.Helper()
	imgs, err := r.Images(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

func findID(imgs []sandbox.Image, id string) *sandbox.Image {
	for i := range imgs {
		if imgs[i].ID == id {
			return &imgs[i]
		}
	}
	return nil
}

func testName(what string) string {
	var b [4]byte
	rand.Read(b[:])
	return "localhost/kiln-test-images/" + what + ":" + hex.EncodeToString(b[:])
}

// TestImages: the engine side of image housekeeping on both engines:
// images listed with names, sizes and labels; a name of an image with
// another only untagged, the last one deleting it; an image a container
// uses refused; containers listed stopped or running; the data disk
// measured.
func TestImages(t *testing.T) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			r := newRuntime(t, e.Host)
			ctx := t.Context()
			a, b := testName("a"), testName("b")
			id := importTestImage(t, r, a, "LABEL "+sandbox.LabelImage+"=true")
			if err := r.cli.ImageTag(ctx, a, b); err != nil {
				t.Fatal(err)
			}
			img := findID(mustImages(t, r), id)
			if img == nil {
				t.Fatalf("image %s not listed", id)
			}
			if img.Labels[sandbox.LabelImage] != "true" || img.Size <= 0 || img.Created.IsZero() {
				t.Errorf("listed as %+v", img)
			}
			for _, n := range []string{a, b} {
				if !slices.ContainsFunc(img.Refs, func(r string) bool { return strings.HasSuffix(r, strings.TrimPrefix(n, "localhost/")) }) {
					t.Errorf("refs %v lack %s", img.Refs, n)
				}
			}

			rm, err := r.RemoveImage(ctx, a)
			if err != nil || rm.Deleted || rm.Freed != 0 {
				t.Fatalf("remove %s (another name left): %+v, %v; want untagged", a, rm, err)
			}
			if img := findID(mustImages(t, r), id); img == nil || len(img.Refs) != 1 {
				t.Fatalf("after untagging: %+v", img)
			}
			// A container (stopped) uses it: refused, kept.
			c, err := r.cli.ContainerCreate(ctx, &container.Config{Image: b, Cmd: []string{"/kiln-test"}}, nil, nil, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			ctrs, err := r.Containers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if i := slices.IndexFunc(ctrs, func(x sandbox.Container) bool { return x.ID == c.ID }); i < 0 || ctrs[i].Running || ctrs[i].ImageID != id {
				t.Errorf("container %s listed as %+v", c.ID, ctrs)
			}
			if rm, err := r.RemoveImage(ctx, b); err == nil {
				t.Errorf("removed %s under a container: %+v", b, rm)
			}
			if findID(mustImages(t, r), id) == nil {
				t.Fatal("image a container uses is gone")
			}
			if err := r.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			rm, err = r.RemoveImage(ctx, b)
			if err != nil || !rm.Deleted || rm.Freed <= 0 {
				t.Fatalf("remove %s (its last name): %+v, %v; want deleted", b, rm, err)
			}
			if findID(mustImages(t, r), id) != nil {
				t.Error("image still listed")
			}
			if rm, err := r.RemoveImage(ctx, b); err != nil || rm != (sandbox.Removal{}) {
				t.Errorf("remove a name already gone: %+v, %v", rm, err)
			}

			// A dangling image is removed by its id.
			did := importTestImage(t, r, "", "LABEL "+sandbox.LabelImage+"=true")
			if img := findID(mustImages(t, r), did); img == nil || len(img.Refs) != 0 {
				t.Fatalf("dangling image listed as %+v", img)
			}
			if rm, err := r.RemoveImage(ctx, did); err != nil || !rm.Deleted {
				t.Errorf("remove dangling %s: %+v, %v", did, rm, err)
			}

			used, total, err := r.DataDiskUsage(ctx)
			if err != nil || used == 0 || total < used {
				t.Errorf("data disk usage: %d of %d, %v", used, total, err)
			}
		})
	}
}
