package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// TestKeyedCacheInS3: with the server's cache archives in S3, a keyed
// cache saved by one build is restored by the next (the agent downloading
// from S3's presigned URL), the archive is an object in the bucket, and
// the server's disk holds none.
func TestKeyedCacheInS3(t *testing.T) {
	s3 := blobstoretest.S3Config(t)
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		cfg := s3
		cfg.Prefix += "/" + e.Name
		var dataDir string
		h := startServerWith(t, e, func(c *server.Config) { c.CacheS3 = cfg; dataDir = c.DataDir })
		h.startAgent("host1", nil)
		keyed := "cache:\n  - key: \"deps-${{ hashFiles('lock.txt') }}\"\n    paths: [/deps]\n"
		step := `if [ -f /deps/data ]; then echo "restored $(cat /deps/data)"; else echo "fresh" ; echo from-s3 > /deps/data; fi`
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile(keyed, step), "lock.txt": "a\n"})
		h.addProject("app", repo, projectOpts{})

		b := h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "fresh") || !strings.Contains(log, ": saved") {
			t.Fatalf("first build %s:\n%s", b.Status, log)
		}
		b = h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "restored from-s3") || !strings.Contains(log, "hit on exact key") {
			t.Fatalf("second build %s:\n%s", b.Status, log)
		}
		st, err := blobstore.NewS3(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if names, err := st.List(context.Background()); err != nil || len(names) != 1 {
			t.Fatalf("objects in the bucket: %v %v", names, err)
		}
		if blobs, _ := os.ReadDir(filepath.Join(dataDir, "cache", "blobs")); len(blobs) != 0 {
			t.Fatalf("archives on the server's disk: %v", blobs)
		}
	})
}
