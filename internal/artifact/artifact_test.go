package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestRoundTrip(t *testing.T) {
	ws, outside := t.TempDir(), t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(ws, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("dist/app", "binary")
	write("dist/sub/readme.txt", "hello")
	write("dist/tmp/junk", "junk")
	write("report.xml", "<r/>")
	write("other.txt", "not selected")
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A link out of the workspace is left out; one inside is the file.
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ws, "dist/escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../report.xml", filepath.Join(ws, "dist/report-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(ws, "dist/outdir")); err != nil {
		t.Fatal(err)
	}
	set, err := Collect(ws, []string{"dist", "*.xml", "!dist/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	want := []File{{"dist/app", 6}, {"dist/report-link", 4}, {"dist/sub/readme.txt", 5}, {"report.xml", 4}}
	if !reflect.DeepEqual(set.Skipped, []string{"dist/escape", "dist/outdir"}) {
		t.Errorf("skipped %v, want the links out of the workspace", set.Skipped)
	}
	if !reflect.DeepEqual(set.Files, want) || set.Bytes != 19 {
		t.Fatalf("collected %+v (%d bytes), want %+v", set.Files, set.Bytes, want)
	}
	var buf bytes.Buffer
	files, n, err := Write(context.Background(), &buf, ws, set)
	if err != nil || files != 4 || n != 19 {
		t.Fatalf("write: %d files %d bytes %v", files, n, err)
	}
	entries, err := Entries(bytes.NewReader(buf.Bytes()))
	if err != nil || !reflect.DeepEqual(entries, want) {
		t.Fatalf("entries %+v %v", entries, err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if files, n, err := Extract(bytes.NewReader(buf.Bytes()), dst); err != nil || files != 4 || n != 19 {
		t.Fatalf("extract: %d %d %v", files, n, err)
	}
	for _, f := range want {
		got, err := os.ReadFile(filepath.Join(dst, f.Path))
		if err != nil || int64(len(got)) != f.Size {
			t.Errorf("%s: %q %v", f.Path, got, err)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "dist/report-link")); string(got) != "<r/>" {
		t.Errorf("the link inside the workspace was not kept as its file: %q", got)
	}
}

func TestCollectBadGlob(t *testing.T) {
	if _, err := Collect(t.TempDir(), []string{"../x"}); err == nil || !strings.Contains(err.Error(), `".."`) {
		t.Fatalf("err %v", err)
	}
}

// TestExtractRefusesHostileArchives: an archive made by anyone but Write
// (a tampered blob) cannot write outside the target or make links.
func TestExtractRefusesHostileArchives(t *testing.T) {
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeReg, Name: "../escape", Size: 1},
		{Typeflag: tar.TypeReg, Name: "/abs", Size: 1},
		{Typeflag: tar.TypeReg, Name: "a/../../b", Size: 1},
		{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc/passwd"},
		{Typeflag: tar.TypeLink, Name: "hard", Linkname: "/etc/passwd"},
		{Typeflag: tar.TypeChar, Name: "dev"},
	} {
		var buf bytes.Buffer
		zw, _ := zstd.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("x"))
		}
		tw.Close()
		zw.Close()
		parent := t.TempDir()
		dst := filepath.Join(parent, "out")
		if _, _, err := Extract(&buf, dst); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s %q: err %v, want refused", string(h.Typeflag), h.Name, err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Errorf("%q: wrote beside the target: %v", h.Name, ents)
		}
	}
}
