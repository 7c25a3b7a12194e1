package cacheclient

import (
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
	"github.com/kilnci/kiln/internal/cache"
)

// TestSaveRestoreS3: with the service's archives in S3, the agent's
// client saves through the service and restores from S3's presigned URL
// (no download reaches the service), the tree intact.
func TestSaveRestoreS3(t *testing.T) {
	blobs := blobstoretest.S3(t)
	te := newTestEnvWith(t, func(c *cache.Config) { c.Blobs = blobs })
	c := te.client(t, mainScope)
	src := t.TempDir()
	richTree(t, filepath.Join(src, "a"))
	version := Version([]string{"/root/a"})
	if _, err := c.Save(ctx, "s3-1", version, []string{filepath.Join(src, "a")}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "a")
	te.requests() // resets the record
	matched, _, err := c.Restore(ctx, "s3-1", nil, version, []string{dst})
	if err != nil || matched != "s3-1" {
		t.Fatalf("restore: %q, %v", matched, err)
	}
	if got := te.requests(); !slices.Equal(got, []string{"POST GetCacheEntryDownloadURL"}) {
		t.Fatalf("restore reached the service with %q; the download should go to S3", got)
	}
	want := snapshot(t, filepath.Join(src, "a"))
	n := want["setuid"] // not restored, as on disk (TestSaveRestore)
	n.Mode &^= fs.ModeSetuid
	want["setuid"] = n
	compareTrees(t, want, snapshot(t, dst))
}
