// Package sticky keeps per-project cache volumes on a build host: the
// directories that `.kiln.yml`'s `cache: [{path: …}]` entries bind-mount
// into a job's sandbox, kept from one job to the next.
//
// # Generations and views
//
// A volume (one per project and cache path) is a series of immutable
// generations. A job never sees a generation itself: Acquire gives it a
// View, a copy-on-write overlay whose lower layer is the volume's current
// generation and whose upper layer is the job's own. When the job succeeds,
// Commit builds a new generation from the lower one and the job's upper
// layer and makes it current with one rename(2); when it fails, Discard
// throws the upper layer away. Jobs acquired later see the newest
// generation; jobs already running keep the one they started from.
//
// # Concurrent jobs: last writer wins
//
// Two jobs of one project may hold views of the same volume at once. Each
// sees the generation it started from plus its own writes, never the other
// job's. Each Commit builds its generation from ITS OWN base, so if jobs A
// and B both start from generation 5 and A commits (6 = 5+A) before B
// (7 = 5+B), generation 7 does not contain A's writes: the last successful
// job wins, and the tree it leaves is always one job's consistent result,
// never a mix. Merging would keep more, but a cache is safe to lose and a
// merge of two build caches is not guaranteed to be consistent.
//
// # On disk
//
//	<Dir>/volumes/<key>/           key = hash of (project, path): no name from a user reaches a path
//	    lock                       flock: short critical sections (acquire, switch, GC, prune)
//	    meta.json                  project and path, for Projects and for people
//	    used                       mtime = last acquire or commit, for Prune
//	    current -> gens/<n>        the current generation; replaced only by rename(2)
//	    gens/<n>/tree              a generation (never written after it is made)
//	    gens/<n>/info.json         its size
//	    gens/<n>/lock              flock, shared by every view based on it
//	    jobs/<jobKey>/lock         flock, exclusive while the view is alive
//	    jobs/<jobKey>/{upper,work,merged,empty}   overlay mode
//	    jobs/<jobKey>/copy                        copy mode
//	    jobs/<jobKey>/next/        the generation Commit is building
//	<Dir>/tmp/                     overlay probes
//	<Dir>/trash/                   directories being deleted
//
// # Crash safety
//
// Every piece of state that says "in use" is a flock(2) lock, so it vanishes
// with the process that held it: a crashed agent leaves no stale reference
// count behind. Everything a job owns, including a half-built generation,
// lives under its job directory, so Recover removes a dead job's leftovers
// by removing that directory (after unmounting its overlay). A generation
// becomes reachable only by two renames (jobs/<k>/next to gens/<n>, then
// the current symlink) made after syncfs(2), so after a crash `current`
// names either the old or the new generation, complete either way.
//
// A job still writing must never be promoted: Commit remounts an overlay
// view read-only (the superblock, so every bind mount of it too) before
// reading it, which the kernel refuses while a file in it is open for
// writing.
//
// Volumes keeps no state in memory: several Volumes, in one process or in
// several, may share a Dir.
package sticky

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultMaxBytes is the size budget of one volume when Config.MaxBytes is 0.
const DefaultMaxBytes int64 = 10 << 30

// Error kinds, wrapped with %w.
var (
	// ErrInvalid: a project, path or job key that cannot name a volume or
	// view (empty, relative, unclean, "..", unsafe characters).
	ErrInvalid = errors.New("sticky: invalid argument")
	// ErrViewBusy: a live view with this job key already exists on the volume.
	ErrViewBusy = errors.New("sticky: job key already has a live view")
	// ErrReleased: Commit on a view already committed or discarded.
	ErrReleased = errors.New("sticky: view already released")
)

// Config configures Volumes.
type Config struct {
	// Dir holds every volume. It must be one filesystem (generations are
	// hard links and renames) and, for overlay mode, must not contain ','
	// or ':' (the overlay option separators).
	Dir string
	// MaxBytes is the largest generation a volume keeps (apparent size of
	// its regular files, hard links counted once). A Commit whose result
	// is larger keeps the old generation. 0 means DefaultMaxBytes; a
	// negative value means no limit.
	MaxBytes int64
	// ForceCopy makes every view a full copy of its generation instead of
	// an overlay mount. Views fall back to copies anyway when overlayfs
	// does not work on Dir.
	ForceCopy bool
	// Logger receives the few events worth an operator's attention (copy
	// fallback, over-budget commits, recovered leftovers). nil: slog.Default().
	Logger *slog.Logger
}

// Volumes is the set of sticky volumes under one directory. It is safe for
// use by many goroutines, and by several processes sharing the directory.
type Volumes struct {
	root     string
	maxBytes int64
	log      *slog.Logger
	// overlayOpts is the option suffix every overlay mount gets, "" in
	// copy mode (overlay false).
	overlay     bool
	overlayOpts string
}

// New returns the volumes under cfg.Dir, creating it if missing. Unless
// cfg.ForceCopy, it mounts a small overlay to learn whether overlayfs
// works there and which safety options the kernel knows; if it does not
// work, every view is a copy and New logs why.
func New(cfg Config) (*Volumes, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Config.Dir is empty", ErrInvalid)
	}
	root, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("sticky: %w", err)
	}
	if !cfg.ForceCopy && strings.ContainsAny(root, ",:\\") {
		return nil, fmt.Errorf("%w: Config.Dir %q contains ',', ':' or '\\', which overlay mount options cannot carry", ErrInvalid, root)
	}
	for _, d := range []string{root, filepath.Join(root, "volumes"), filepath.Join(root, "tmp"), filepath.Join(root, "trash")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("sticky: %w", err)
		}
	}
	v := &Volumes{root: root, maxBytes: cfg.MaxBytes, log: cfg.Logger}
	if v.maxBytes == 0 {
		v.maxBytes = DefaultMaxBytes
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	if cfg.ForceCopy {
		v.log.Info("sticky: views are full copies (ForceCopy)", "dir", root)
		return v, nil
	}
	opts, err := probeOverlay(filepath.Join(root, "tmp"))
	if err != nil {
		v.log.Warn("sticky: overlayfs does not work here; views are full copies, slower and using more disk", "dir", root, "err", err)
		return v, nil
	}
	v.overlay, v.overlayOpts = true, opts
	v.log.Debug("sticky: views are overlay mounts", "dir", root, "options", opts)
	return v, nil
}

// Mode says how views are made: "overlay", or "copy".
func (v *Volumes) Mode() string {
	if v.overlay {
		return "overlay"
	}
	return "copy"
}

// meta is meta.json.
type meta struct {
	Project string `json:"project"`
	Path    string `json:"path"`
}

// volumeDir returns the directory of (project, path), after checking both.
// The name is a hash, so no project name or path ever becomes a path
// component here.
func (v *Volumes) volumeDir(project, p string) (string, error) {
	if err := checkProject(project); err != nil {
		return "", err
	}
	if err := checkPath(p); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(project + "\x00" + p))
	return filepath.Join(v.root, "volumes", hex.EncodeToString(sum[:16])), nil
}

func checkProject(project string) error {
	if project == "" || len(project) > 512 || !utf8.ValidString(project) || strings.ContainsRune(project, 0) {
		return fmt.Errorf("%w: project %q: must be 1 to 512 bytes of UTF-8 without NUL", ErrInvalid, project)
	}
	return nil
}

// checkPath accepts an absolute, clean path in the sandbox other than "/".
func checkPath(p string) error {
	bad := func(why string) error { return fmt.Errorf("%w: cache path %q: %s", ErrInvalid, p, why) }
	switch {
	case !strings.HasPrefix(p, "/"):
		return bad("must be absolute")
	case len(p) > 4096 || strings.ContainsRune(p, 0):
		return bad("too long or contains NUL")
	case p == "/":
		return bad("cannot be the root")
	case path.Clean(p) != p:
		return bad("must be clean (no '.', '..', '//' or trailing '/')")
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return bad("must not contain '..'")
		}
	}
	return nil
}

// checkJobKey accepts names safe as one path component.
func checkJobKey(k string) error {
	ok := k != "" && len(k) <= 128 && k[0] != '.' && k[0] != '-'
	for i := 0; ok && i < len(k); i++ {
		c := k[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: job key %q: want 1 to 128 of [A-Za-z0-9._-], not starting with '.' or '-'", ErrInvalid, k)
	}
	return nil
}

// volumeDirs lists the volume directories present.
func (v *Volumes) volumeDirs() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(v.root, "volumes"))
	if err != nil {
		return nil, fmt.Errorf("sticky: %w", err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(v.root, "volumes", e.Name()))
		}
	}
	return dirs, nil
}

// Projects returns, sorted, the projects with at least one volume here
// that holds a generation (a volume only ever acquired cold and never
// committed is no reason to prefer this host).
func (v *Volumes) Projects() []string {
	dirs, err := v.volumeDirs()
	if err != nil {
		v.log.Warn("sticky: listing volumes", "err", err)
		return nil
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if gen, _ := readCurrent(d); gen == 0 {
			continue
		}
		var m meta
		if b, err := os.ReadFile(filepath.Join(d, "meta.json")); err == nil && json.Unmarshal(b, &m) == nil && m.Project != "" {
			seen[m.Project] = true
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// touchUsed records that the volume was used now, for Prune.
func touchUsed(vdir string) error {
	p := filepath.Join(vdir, "used")
	now := time.Now()
	err := os.Chtimes(p, now, now)
	if errors.Is(err, os.ErrNotExist) {
		err = os.WriteFile(p, nil, 0o600)
	}
	return err
}

// writeFileAtomic writes b to p through a temporary file, fsync and
// rename, so a reader sees the old content or the new, never a part.
func writeFileAtomic(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
