package diskquota

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A write past the quota fails with ENOSPC; Full says so; Remove leaves
// no mount and no image behind.
func TestDiskQuota(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop mounts need root")
	}
	ctx := context.Background()
	root := t.TempDir()
	dir, img := filepath.Join(root, "ws"), filepath.Join(root, "ws.img")
	d, err := Make(ctx, dir, img, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Remove(ctx) })
	if !Mounted(dir) || d.Full() {
		t.Fatalf("mounted %v, full %v", Mounted(dir), d.Full())
	}
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var werr error
	for i := 0; i < 8 && werr == nil; i++ {
		_, werr = f.Write(buf)
	}
	if werr == nil {
		werr = f.Sync()
	}
	f.Close()
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 8 MiB to a 4 MiB disk: %v, want ENOSPC", werr)
	}
	if !d.Full() {
		t.Errorf("not Full after ENOSPC (used %d)", d.Used())
	}
	if err := d.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if ms, _ := MountsUnder(root); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image left: %v", err)
	}
	if err := Check(ctx, root); err != nil {
		t.Errorf("Check: %v", err)
	}
}
