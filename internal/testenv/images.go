package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
)

// TinyImage is the root filesystem of a test-only image to import (`docker
// import`, the engine's ImageImport): one small file of random content, so
// every import makes an image of its own, not another name of one that
// exists. It cannot run anything: for a sandbox, tag BaseImage instead.
func TinyImage() *bytes.Buffer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := []byte(rand.Text())
	_ = tw.WriteHeader(&tar.Header{Name: "kiln-test", Mode: 0o644, Size: int64(len(content))})
	_, _ = tw.Write(content)
	_ = tw.Close()
	return &buf
}
