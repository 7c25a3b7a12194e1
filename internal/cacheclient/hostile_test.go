package cacheclient

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ent is one entry of a crafted archive.
type ent struct {
	name string
	typ  byte
	body string
	link string
}

func dir(name string) ent               { return ent{name: name, typ: tar.TypeDir} }
func file(name, body string) ent        { return ent{name: name, typ: tar.TypeReg, body: body} }
func link(name, target string) ent      { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func special(name string, typ byte) ent { return ent{name: name, typ: typ} }

// craft builds a compressed archive of ents, as an attacker's job could.
func craft(t *testing.T, ents []ent, trailing []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := newEncoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Size: int64(len(e.body)), Mode: 0o755, ModTime: time.Unix(1, 0), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		io.WriteString(tw, e.body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Write(trailing)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// uploadRaw stores data as an entry, bypassing Save's archiver.
func uploadRaw(t *testing.T, c *Client, key, version string, data []byte) {
	t.Helper()
	if _, err := c.upload(ctx, key, version, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHostileArchives: archives crafted to write outside their directory,
// through symbolic links, or to create devices are refused; nothing is
// written outside, the targets stay absent, and no temporary directory is
// left behind, even when the bad entry comes after good ones.
func TestHostileArchives(t *testing.T) {
	te := newTestEnv(t)
	c := te.client(t, mainScope)
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	mkdir(t, outside)
	sentinel := filepath.Join(outside, "sentinel")
	mkfile(t, sentinel, "untouched", 0o644, time.Unix(1, 0))
	targets := []string{filepath.Join(base, "target"), filepath.Join(base, "nested", "target2")}
	version := Version([]string{"/hostile", "/hostile2"})

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	valid := craft(t, []ent{dir("0/"), file("0/a", big), file("0/b", big), file("0/c", big)}, nil)

	for i, tc := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"dotdot inside", craft(t, []ent{dir("0/"), file("0/../escape", "x")}, nil), "not clean"},
		{"dotdot on top", craft(t, []ent{file("../escape", "x")}, nil), `".." in name`},
		{"dotdot deep", craft(t, []ent{dir("0/"), dir("0/a/"), file("0/a/../../../escape", "x")}, nil), "not clean"},
		{"absolute", craft(t, []ent{dir("0/"), file(filepath.Join(base, "escape"), "x")}, nil), "absolute"},
		{"double slash", craft(t, []ent{dir("0/"), file("0//escape", "x")}, nil), "not clean"},
		{"dot", craft(t, []ent{dir("0/"), file("0/./escape", "x")}, nil), "not clean"},
		{"write through absolute link", craft(t, []ent{dir("0/"), link("0/l", outside), file("0/l/pwned", "x")}, nil), "parent is not a directory"},
		{"write through relative link", craft(t, []ent{dir("0/"), link("0/l", "../outside"), file("0/l/pwned", "x")}, nil), "parent is not a directory"},
		{"mkdir through link", craft(t, []ent{dir("0/"), link("0/l", outside), dir("0/l/sub/")}, nil), "parent is not a directory"},
		{"link replaces a dir", craft(t, []ent{dir("0/"), dir("0/d/"), link("0/d", outside), file("0/d/pwned", "x")}, nil), "repeated"},
		{"file over a link", craft(t, []ent{dir("0/"), link("0/f", sentinel), file("0/f", "overwritten")}, nil), "repeated"},
		{"link in a link's place", craft(t, []ent{dir("0/"), link("0/l", "a"), link("0/l", outside)}, nil), "repeated"},
		{"char device", craft(t, []ent{dir("0/"), special("0/null", tar.TypeChar)}, nil), "not a directory, regular file or symbolic link"},
		{"block device", craft(t, []ent{dir("0/"), special("0/sda", tar.TypeBlock)}, nil), "not a directory, regular file or symbolic link"},
		{"fifo", craft(t, []ent{dir("0/"), special("0/fifo", tar.TypeFifo)}, nil), "not a directory, regular file or symbolic link"},
		{"hard link", craft(t, []ent{dir("0/"), {name: "0/h", typ: tar.TypeLink, link: sentinel}}, nil), "not a directory, regular file or symbolic link"},
		{"index out of range", craft(t, []ent{dir("2/"), file("2/x", "x")}, nil), "paths 0 to 1"},
		{"index not canonical", craft(t, []ent{dir("00/")}, nil), "paths 0 to 1"},
		{"index not a number", craft(t, []ent{dir("etc/")}, nil), "paths 0 to 1"},
		{"entry before its top", craft(t, []ent{file("0/x", "x"), dir("0/")}, nil), "before its top-level directory"},
		{"top-level file", craft(t, []ent{file("0", "x")}, nil), "must be a directory"},
		{"top-level repeated", craft(t, []ent{dir("0/"), dir("0/")}, nil), "repeated"},
		{"good, then bad", craft(t, []ent{dir("0/"), file("0/ok", "fine"), dir("1/"), file("1/ok", "fine"), link("1/l", outside), file("1/l/x", "x")}, nil), "parent is not a directory"},
		{"trailing data", craft(t, []ent{dir("0/"), file("0/ok", "fine")}, make([]byte, 2<<20)), "after the end"},
		{"not zstd", []byte(strings.Repeat("not an archive ", 1000)), "magic"},
		{"truncated", valid[:len(valid)/2], "corrupt archive"},
	} {
		key := "hostile-" + string(rune('a'+i))
		uploadRaw(t, c, key, version, tc.data)
		matched, _, err := c.Restore(ctx, key, nil, version, targets)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: restore = %q, %v; want an error with %q", tc.name, matched, err, tc.msg)
		}
		if got := entries(t, base); !slices.Equal(got, []string{"nested", "outside"}) && !slices.Equal(got, []string{"outside"}) {
			t.Errorf("%s: beside the targets: %q", tc.name, got)
		}
		if got := entries(t, filepath.Join(base, "nested")); len(got) != 0 {
			t.Errorf("%s: beside the second target: %q", tc.name, got)
		}
		if got := entries(t, outside); !slices.Equal(got, []string{"sentinel"}) {
			t.Errorf("%s: outside: %q", tc.name, got)
		}
		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "untouched" {
			t.Errorf("%s: sentinel: %q, %v", tc.name, b, err)
		}
	}

	// The same crafted names, well-formed, restore: the checks are not
	// refusing everything. A link may point anywhere; it is only never
	// written through.
	uploadRaw(t, c, "benign", version, craft(t, []ent{dir("0/"), link("0/l", outside), file("0/f", "ok"), dir("1/")}, nil))
	if _, _, err := c.Restore(ctx, "benign", nil, version, targets); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(targets[0], "l")); err != nil || l != outside {
		t.Errorf("link: %q, %v", l, err)
	}
}
