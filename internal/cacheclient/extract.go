package cacheclient

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Extraction treats the archive as hostile: any job of the project could
// have saved it. Path i's tree is extracted into a fresh temporary sibling
// of dirs[i] and put in place (see finish: into the existing directory,
// never over it) only when the whole archive has been read and checked, so
// a refused, corrupt or interrupted archive leaves nothing behind. Within a tree:
//
//   - an entry's name must be clean and relative ("i/a/b": no "..", ".",
//     "//" or leading "/"), and i a path index;
//   - an entry's parent must be a directory extracted earlier from the
//     archive, so nothing is ever written through a symbolic link (the link
//     itself is kept as it is, whatever it points at), and the writes go
//     through an os.Root on the temporary directory besides;
//   - a name may appear once; files are created with O_EXCL;
//   - only directories, regular files and symbolic links are accepted: a
//     device, pipe or hard link fails the restore;
//   - permission bits and the sticky bit are kept, setuid and setgid are
//     not; owners are restored only when running as root (as tar does);
//     modification times are restored for all three kinds, directories'
//     last, once nothing more is written into them.

// maxWindow bounds the zstd window a restore accepts, and so the memory a
// crafted archive can make the decoder allocate. Save uses 8 MiB.
const maxWindow = 128 << 20

// maxTrailing is how much decompressed data may follow the end of the tar
// stream (zero padding, as GNU tar writes) before the archive is refused.
const maxTrailing = 1 << 20

// checkRestoreTargets requires each of dirs to be absent or an empty
// directory, and returns what it found (nil where absent).
func checkRestoreTargets(dirs []string) ([]fs.FileInfo, error) {
	found := make([]fs.FileInfo, len(dirs))
	for i, d := range dirs {
		fi, err := os.Lstat(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cacheclient: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("cacheclient: cannot restore into %s: not a directory", d)
		}
		f, err := os.Open(d)
		if err != nil {
			return nil, fmt.Errorf("cacheclient: %w", err)
		}
		names, err := f.Readdirnames(1)
		f.Close()
		if len(names) > 0 {
			return nil, fmt.Errorf("cacheclient: cannot restore into %s: not empty", d)
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("cacheclient: %w", err)
		}
		found[i] = fi
	}
	return found, nil
}

type extractor struct {
	ctx    context.Context
	dirs   []string
	before []fs.FileInfo // what each target was (nil: absent)
	trees  []*tree       // per path index; nil until its "i/" entry
	owner  bool          // restore owners (running as root)
	buf    []byte
	st     *Stats
}

// tree is one path's tree being extracted.
type tree struct {
	tmp  string
	root *os.Root
	dirs map[string]bool // directories extracted, "." for the tree's root
	seen map[string]bool // every name extracted
	meta []dirMeta       // directories in creation order
	open []openDir       // roots on recently used directories, oldest first
	// How it was placed (for unplace): renamed whole onto an absent
	// target, or its entries moved into an existing one and the root's
	// metadata applied to it.
	renamed bool
	moved   []string
	metaSet bool
}

// openDir is an os.Root on one directory of a tree.
type openDir struct {
	rel  string
	root *os.Root
}

// maxOpenDirs is how many directories of a tree are kept open. Entries of
// one directory mostly come together, and creating a file through a root
// on its parent is one openat(2), where the tree's root would open every
// directory on the way (a Go module cache is 8 or more levels deep).
const maxOpenDirs = 8

// parent returns a root on directory dir of the tree and the name of rel
// in it; dir must be a directory extracted from the archive.
func (t *tree) parent(rel string) (*os.Root, string, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return t.root, base, nil
	}
	for i, o := range t.open {
		if o.rel == dir {
			if i != len(t.open)-1 {
				t.open = append(append(t.open[:i:i], t.open[i+1:]...), o)
			}
			return o.root, base, nil
		}
	}
	r, err := t.root.OpenRoot(dir)
	if err != nil {
		return nil, "", err
	}
	if len(t.open) == maxOpenDirs {
		t.open[0].root.Close()
		t.open = append(t.open[:0], t.open[1:]...)
	}
	t.open = append(t.open, openDir{dir, r})
	return r, base, nil
}

// close closes the tree's roots.
func (t *tree) close() {
	for _, o := range t.open {
		o.root.Close()
	}
	t.open = nil
	t.root.Close()
}

// dirMeta is what is applied to a directory once it is complete.
type dirMeta struct {
	rel   string
	mode  fs.FileMode
	mtime time.Time
	uid   int
	gid   int
}

// extract reads a compressed archive from r into dirs (see above).
func extract(ctx context.Context, r io.Reader, dirs []string, before []fs.FileInfo, st *Stats) (err error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return err
	}
	defer zr.Close()
	x := &extractor{ctx: ctx, dirs: dirs, before: before, trees: make([]*tree, len(dirs)),
		owner: os.Geteuid() == 0, buf: make([]byte, copyBufSize), st: st}
	defer func() {
		if err != nil {
			x.cleanup()
		}
	}()
	tr := tar.NewReader(zr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("corrupt archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Read the zstd stream to its end: that verifies its checksum.
	n, err := io.Copy(io.Discard, io.LimitReader(zr, maxTrailing+1))
	if err != nil {
		return fmt.Errorf("corrupt archive: %w", err)
	}
	if n > maxTrailing {
		return errors.New("corrupt archive: data after the end of the tar stream")
	}
	return x.finish()
}

// entry extracts one archive entry, after checking it.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name := strings.TrimSuffix(hdr.Name, "/")
	idxText, rel, _ := strings.Cut(name, "/")
	bad := func(format string, args ...any) error {
		return fmt.Errorf("refused archive entry %q: %s", hdr.Name, fmt.Sprintf(format, args...))
	}
	if msg := checkName(name); msg != "" {
		return bad("%s", msg)
	}
	idx, err := strconv.Atoi(idxText)
	if err != nil || strconv.Itoa(idx) != idxText || idx < 0 || idx >= len(x.dirs) {
		return bad("the archive holds paths 0 to %d", len(x.dirs)-1)
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return bad("a path's top-level entry must be a directory")
		}
		if x.trees[idx] != nil {
			return bad("repeated")
		}
		t, err := x.newTree(idx)
		if err != nil {
			return err
		}
		t.meta = append(t.meta, metaOf(".", hdr))
		x.st.Entries++
		return nil
	}
	t := x.trees[idx]
	switch {
	case t == nil:
		return bad("comes before its top-level directory")
	case !t.dirs[path.Dir(rel)]:
		return bad("its parent is not a directory of the archive")
	case t.seen[rel]:
		return bad("repeated")
	}
	t.seen[rel] = true
	x.st.Entries++
	switch hdr.Typeflag {
	case tar.TypeDir:
		p, base, err := t.parent(rel)
		if err == nil {
			err = p.Mkdir(base, 0o700)
		}
		if err != nil {
			return err
		}
		t.dirs[rel] = true
		t.meta = append(t.meta, metaOf(rel, hdr))
		return nil
	case tar.TypeReg, tar.TypeRegA:
		return x.file(t, rel, hdr, r)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return bad("bad link target")
		}
		return x.symlink(t, rel, hdr)
	default:
		return bad("type %q is not a directory, regular file or symbolic link", hdr.Typeflag)
	}
}

// checkName checks an entry's name (without a trailing "/").
func checkName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case strings.HasPrefix(name, "/"):
		return "absolute name"
	case strings.ContainsRune(name, 0):
		return "NUL in name"
	case path.Clean(name) != name:
		return `name not clean ("//", "." or ".." elements)`
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return `".." in name`
		}
	}
	return ""
}

func metaOf(rel string, hdr *tar.Header) dirMeta {
	mode := fs.FileMode(hdr.Mode) & fs.ModePerm
	if hdr.Mode&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return dirMeta{rel: rel, mode: mode, mtime: hdr.ModTime, uid: hdr.Uid, gid: hdr.Gid}
}

// newTree creates the temporary sibling that path idx is extracted into.
func (x *extractor) newTree(idx int) (*tree, error) {
	target := x.dirs[idx]
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(target), "."+filepath.Base(target)+".restore-")
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	t := &tree{tmp: tmp, root: root, dirs: map[string]bool{".": true}, seen: map[string]bool{}}
	x.trees[idx] = t
	return t, nil
}

func (x *extractor) file(t *tree, rel string, hdr *tar.Header, r io.Reader) error {
	p, base, err := t.parent(rel)
	if err != nil {
		return err
	}
	f, err := p.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	src := &readErr{r: r}
	n, err := io.CopyBuffer(f, src, x.buf)
	if src.err != nil {
		f.Close()
		return fmt.Errorf("corrupt archive: %s: %w", rel, src.err)
	}
	if err == nil && x.owner {
		err = f.Chown(hdr.Uid, hdr.Gid)
	}
	if err == nil {
		err = f.Chmod(fs.FileMode(hdr.Mode) & fs.ModePerm) // not subject to the umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.Chtimes(base, hdr.ModTime, hdr.ModTime)
	}
	if err != nil {
		return fmt.Errorf("extract %s: %w", rel, err)
	}
	x.st.Bytes += n
	return nil
}

func (x *extractor) symlink(t *tree, rel string, hdr *tar.Header) error {
	p, base, err := t.parent(rel)
	if err == nil {
		err = p.Symlink(hdr.Linkname, base)
	}
	if err == nil && x.owner {
		err = p.Lchown(base, hdr.Uid, hdr.Gid)
	}
	if err == nil {
		ts := unix.NsecToTimespec(hdr.ModTime.UnixNano())
		err = unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(t.tmp, rel), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fmt.Errorf("extract %s: %w", rel, err)
	}
	return nil
}

// finish sets the directories' owners, modes and times, deepest first so
// that a read-only directory is made so after what is below it, and puts
// each tree in place. If placing one fails, the trees already in place are
// taken back out and their targets restored.
//
// A target that exists (an empty directory) is filled in place: the
// tree's top-level entries are renamed into it, one by one, and the tree's
// root's owner, mode and times are applied to it. The target is never
// replaced, because it may be bind-mounted into a sandbox already: a
// container keeps the directory it mounted, and a directory renamed over
// it would be invisible there (the sandbox would see the old one, unlinked
// and empty, where nothing can be created). An absent target gets the
// whole tree renamed into place, atomically.
func (x *extractor) finish() error {
	for i, t := range x.trees {
		if t == nil {
			continue
		}
		for k := len(t.meta) - 1; k >= 0; k-- {
			m := t.meta[k]
			if x.before[i] != nil && !strings.Contains(m.rel, "/") {
				// The root and its top-level directories: applied once
				// they are in the target (place), since moving a
				// read-only directory to another parent is refused.
				continue
			}
			p, base, err := t.parent(m.rel)
			if err == nil {
				err = x.applyMeta(p, base, m)
			}
			if err != nil {
				return fmt.Errorf("extract %s: %w", m.rel, err)
			}
		}
		t.close()
	}
	for i, t := range x.trees {
		if t == nil {
			continue
		}
		if err := x.place(i, t); err != nil {
			x.unplace(i + 1)
			return fmt.Errorf("restore into %s: %w", x.dirs[i], err)
		}
	}
	for _, t := range x.trees {
		if t != nil {
			t.root.Close()
		}
	}
	return nil
}

// applyMeta sets a directory's owner (when restoring owners), mode and times.
func (x *extractor) applyMeta(p *os.Root, base string, m dirMeta) error {
	var err error
	if x.owner {
		err = p.Lchown(base, m.uid, m.gid)
	}
	if err == nil {
		err = p.Chmod(base, m.mode)
	}
	if err == nil {
		err = p.Chtimes(base, m.mtime, m.mtime)
	}
	return err
}

// place puts tree i into its target: renamed whole when the target is
// absent, its entries moved into it when it exists (see finish).
func (x *extractor) place(i int, t *tree) error {
	dst := x.dirs[i]
	if x.before[i] == nil {
		// rename(2) fails if another process filled the target meanwhile
		// (an empty directory made meanwhile is replaced: nothing can have
		// mounted it yet for this restore).
		if err := syscall.Rename(t.tmp, dst); err != nil {
			return err
		}
		t.renamed = true
		return nil
	}
	f, err := os.Open(t.tmp)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := renameNoReplace(filepath.Join(t.tmp, name), filepath.Join(dst, name)); err != nil {
			return err
		}
		t.moved = append(t.moved, name)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	t.metaSet = true
	// Top-level directories, then the target itself (meta[0]).
	for k := len(t.meta) - 1; k >= 0; k-- {
		if m := t.meta[k]; !strings.Contains(m.rel, "/") {
			if err := x.applyMeta(root, m.rel, m); err != nil {
				return err
			}
		}
	}
	_ = os.Remove(t.tmp) // empty now
	return nil
}

// renameNoReplace renames src to dst, failing if dst exists (another
// process wrote into the target meanwhile).
func renameNoReplace(src, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		// A filesystem without RENAME_NOREPLACE: check, then rename.
		if _, lerr := os.Lstat(dst); lerr == nil {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: fs.ErrExist}
		}
		return os.Rename(src, dst)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
	}
	return nil
}

// unplace takes the trees before index n back out of their targets (into
// their temporary names, which cleanup removes) and restores the targets
// as they were: absent, or an empty directory with its mode and times.
func (x *extractor) unplace(n int) {
	for i, t := range x.trees[:n] {
		if t == nil {
			continue
		}
		fi := x.before[i]
		if t.renamed { // onto an absent target
			if syscall.Rename(x.dirs[i], t.tmp) == nil {
				t.renamed = false
			}
			continue
		}
		if fi == nil {
			continue
		}
		if t.metaSet && x.owner {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				os.Lchown(x.dirs[i], int(st.Uid), int(st.Gid))
			}
		}
		// The mode first: the entries are moved out of the target again.
		os.Chmod(x.dirs[i], fi.Mode()&(fs.ModePerm|fs.ModeSticky))
		os.MkdirAll(t.tmp, 0o700)
		for _, name := range t.moved {
			p := filepath.Join(x.dirs[i], name)
			if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
				os.Chmod(p, 0o700) // a read-only directory cannot change parents
			}
			os.Rename(p, filepath.Join(t.tmp, name))
		}
		t.moved, t.metaSet = nil, false
		os.Chtimes(x.dirs[i], fi.ModTime(), fi.ModTime())
	}
}

// readErr remembers a read error, to tell a corrupt or truncated archive
// from a failure to write the file.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// cleanup removes every temporary tree.
func (x *extractor) cleanup() {
	for _, t := range x.trees {
		if t != nil {
			t.close()
			removeTree(t.tmp)
		}
	}
}

// removeTree removes a tree that may hold read-only directories (which a
// non-root user cannot empty until they are made writable again).
func removeTree(p string) {
	if os.RemoveAll(p) == nil {
		return
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	os.RemoveAll(p)
}
