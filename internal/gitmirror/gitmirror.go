// Package gitmirror keeps a per-host cache of bare mirrors of git
// repositories, so that a job's clone is a local copy and a pipeline file is
// read without a clone at all.
//
// It drives the git CLI. Every command runs without the user's or the
// system's git configuration, never prompts, and names its repository
// explicitly (GIT_DIR), so neither a developer's ~/.gitconfig nor a
// repository around the mirror directory changes what it does.
//
// A commit already in a mirror is served without touching the network:
// only a missing commit, or Resolve of a branch or tag, fetches.
package gitmirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Error kinds, wrapped with %w. A missing file, commit or ref is the user's
// problem (a wrong SHA, no pipeline file); ErrFetch is an infrastructure
// fault worth retrying.
var (
	ErrFileNotFound   = errors.New("file not found")
	ErrCommitNotFound = errors.New("commit not found")
	ErrRefNotFound    = errors.New("ref not found")
	ErrFetch          = errors.New("fetch failed")
	ErrSymlink        = errors.New("is a symbolic link")
	// ErrCommitGone: a ref (a request's head) no longer has the commit
	// it was asked for (it was force-pushed away).
	ErrCommitGone = errors.New("commit is no longer on its ref")
)

// SymlinkError is ReadFile's answer for a path that is a symbolic link.
type SymlinkError struct {
	Path   string // in the repository
	Target string // what the link points to, as committed
}

func (e *SymlinkError) Error() string {
	return fmt.Sprintf("%s is a symlink (to %q), not a file", e.Path, e.Target)
}

func (e *SymlinkError) Unwrap() error { return ErrSymlink }

// Mirrors is a cache of bare mirrors under one directory. It is safe for
// use by many goroutines, and by several processes sharing the directory.
type Mirrors struct {
	cfg     Config
	root    string
	env     []string
	fetches atomic.Int64

	mu      sync.Mutex
	mirrors map[string]*mirror // by key
}

// mirror is one repository's bare mirror.
type mirror struct {
	dir      string // <root>/<key>.git
	lockPath string // <root>/<key>.lock
	rw       *rwLock

	// Fetch bookkeeping, to let a Resolve that waited behind another
	// fetch of the same mirror use its result. Guarded by Mirrors.mu.
	fetchesStarted int64
	lastGoodFetch  int64 // the fetchesStarted number of the last fetch that succeeded
}

// Config bounds what the mirrors do. Zero durations take the defaults.
type Config struct {
	// FetchTimeout bounds each fetch from a remote: a server that accepts
	// the connection and never answers costs this much, not forever.
	FetchTimeout time.Duration
	// LocalTimeout bounds each git command on this host's repositories
	// (reads of a mirror, a checkout's clone and its checkout).
	LocalTimeout time.Duration
	// AllowFileRemotes lets file:// remotes be fetched; local paths always are.
	AllowFileRemotes bool
}

// DefaultConfig is what New uses.
func DefaultConfig() Config {
	return Config{FetchTimeout: 3 * time.Minute, LocalTimeout: 3 * time.Minute}
}

// New returns a mirror cache rooted at dir with the default configuration,
// creating it if missing.
func New(dir string) (*Mirrors, error) { return Open(dir, DefaultConfig()) }

// Open returns a mirror cache rooted at dir, creating it if missing.
func Open(dir string, cfg Config) (*Mirrors, error) {
	def := DefaultConfig()
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = def.FetchTimeout
	}
	if cfg.LocalTimeout <= 0 {
		cfg.LocalTimeout = def.LocalTimeout
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("gitmirror: %w", err)
	}
	home := filepath.Join(root, ".home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("gitmirror: %w", err)
	}
	return &Mirrors{
		cfg:     cfg,
		root:    root,
		env:     gitEnv(home),
		mirrors: make(map[string]*mirror),
	}, nil
}

// remote checks url against the allowed transports and parses it, with
// the credentials of opts.
func (m *Mirrors) remote(url string, opts []Option) (*remote, error) {
	if err := CheckURL(url, m.cfg.AllowFileRemotes); err != nil {
		return nil, fmt.Errorf("gitmirror: %w", err)
	}
	r, err := parseRemote(url)
	if err != nil {
		return nil, err
	}
	if err := r.withCredentials(opts); err != nil {
		return nil, err
	}
	return r, nil
}

// Fetches returns how many git fetch commands this Mirrors has run.
func (m *Mirrors) Fetches() int64 { return m.fetches.Load() }

func (m *Mirrors) mirror(r *remote) *mirror {
	m.mu.Lock()
	defer m.mu.Unlock()
	mr := m.mirrors[r.key]
	if mr == nil {
		mr = &mirror{
			dir:      filepath.Join(m.root, r.key+".git"),
			lockPath: filepath.Join(m.root, r.key+".lock"),
			rw:       newRWLock(),
		}
		m.mirrors[r.key] = mr
	}
	return mr
}

// lock takes the mirror's lock in this process and across processes.
func (mr *mirror) lock(ctx context.Context, exclusive bool) (func(), error) {
	if err := mr.rw.lock(ctx, exclusive); err != nil {
		return nil, err
	}
	release, err := fileLock(ctx, mr.lockPath, exclusive)
	if err != nil {
		mr.rw.unlock(exclusive)
		return nil, err
	}
	return func() {
		release()
		mr.rw.unlock(exclusive)
	}, nil
}

var (
	fullSHA = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
	someSHA = regexp.MustCompile(`^[0-9a-f]{4,64}$`)
)

// Resolve fetches url and returns the full commit SHA that ref names: a
// branch ("main" or "refs/heads/main"), a tag (annotated tags are peeled),
// any other full ref name, or a SHA. A full SHA already in the mirror is
// returned without fetching; a short one is looked up after fetching.
// Branches come before tags of the same name.
func (m *Mirrors) Resolve(ctx context.Context, url, ref string, opts ...Option) (string, error) {
	r, err := m.remote(url, opts)
	if err != nil {
		return "", err
	}
	if ref == "" || strings.HasPrefix(ref, "-") || strings.ContainsAny(ref, "\x00\n :") {
		return "", fmt.Errorf("gitmirror: invalid ref %q", ref)
	}
	if fullSHA.MatchString(ref) {
		var sha string
		err := m.withCommit(ctx, r, ref, func(*mirror) error { sha = ref; return nil })
		return sha, err
	}

	mr := m.mirror(r)
	m.mu.Lock()
	askedAfter := mr.fetchesStarted
	m.mu.Unlock()
	unlock, err := mr.lock(ctx, true)
	if err != nil {
		return "", err
	}
	defer unlock()
	recreated, err := m.ensureRepo(ctx, mr)
	if err != nil {
		return "", err
	}
	// A fetch that started after this call and succeeded while we waited
	// for the lock is as fresh as ours would be.
	m.mu.Lock()
	fresh := mr.lastGoodFetch > askedAfter && !recreated
	m.mu.Unlock()
	if !fresh {
		if err := m.fetch(ctx, r, mr); err != nil {
			return "", err
		}
	}

	candidates := []string{ref}
	if !strings.HasPrefix(ref, "refs/") {
		candidates = []string{"refs/heads/" + ref, "refs/tags/" + ref}
		if someSHA.MatchString(ref) {
			candidates = append(candidates, ref)
		}
	}
	for _, c := range candidates {
		out, err := m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"rev-parse", "--verify", "--quiet", c + "^{commit}"}})
		if err == nil {
			return strings.TrimSpace(string(out)), nil
		}
		if exitCode(err) != 1 {
			return "", fmt.Errorf("gitmirror: resolve %q in %s: %w", ref, r.redacted, err)
		}
	}
	return "", fmt.Errorf("gitmirror: %w: %q in %s", ErrRefNotFound, ref, r.redacted)
}

// ReadFile returns the content of path (relative to the repository's root)
// at commit, a full SHA, fetching only if the commit is not in the mirror
// yet. A path that does not exist at that commit, or is a directory, gives
// an error that wraps ErrFileNotFound; a commit that is not in the
// repository after fetching, ErrCommitNotFound. A symbolic link is not
// followed: it gives a *SymlinkError (which wraps ErrSymlink).
func (m *Mirrors) ReadFile(ctx context.Context, url, commit, path string, opts ...Option) ([]byte, error) {
	r, err := m.remote(url, opts)
	if err != nil {
		return nil, err
	}
	p, err := cleanPath(path)
	if err != nil {
		return nil, err
	}
	var data []byte
	err = m.withCommit(ctx, r, commit, func(mr *mirror) error {
		// cat-file --batch tells "missing" apart from a failure without
		// parsing error messages.
		out, err := m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"cat-file", "--batch"},
			stdin: strings.NewReader(commit + ":" + p + "\n")})
		if err != nil {
			return fmt.Errorf("gitmirror: read %s at %s in %s: %w", p, commit, r.redacted, err)
		}
		data, err = parseBatch(out)
		if err != nil {
			return fmt.Errorf("gitmirror: %s at %s in %s: %w", p, commit, r.redacted, err)
		}
		// A blob may be a symbolic link's target; only the tree says which.
		out, err = m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"ls-tree", "-z", commit, "--", p}})
		if err != nil {
			return fmt.Errorf("gitmirror: read %s at %s in %s: %w", p, commit, r.redacted, err)
		}
		if strings.HasPrefix(string(out), "120000 ") {
			return &SymlinkError{Path: p, Target: string(data)}
		}
		return nil
	})
	return data, err
}

// parseBatch parses the output of `git cat-file --batch` for one object.
func parseBatch(out []byte) ([]byte, error) {
	header, body, _ := bytes.Cut(out, []byte{'\n'})
	fields := strings.Fields(string(header))
	switch {
	case len(fields) == 2 && fields[1] == "missing":
		return nil, ErrFileNotFound
	case len(fields) != 3:
		return nil, fmt.Errorf("unexpected cat-file output %q", header)
	case fields[1] == "tree":
		return nil, fmt.Errorf("%w: is a directory", ErrFileNotFound)
	case fields[1] != "blob":
		return nil, fmt.Errorf("%w: is a %s", ErrFileNotFound, fields[1])
	}
	size, err := strconv.Atoi(fields[2])
	if err != nil || size > len(body) {
		return nil, fmt.Errorf("unexpected cat-file output %q", header)
	}
	return body[:size], nil
}

// Checkout makes dest a working tree of url at commit (a full SHA), with a
// detached HEAD. dest must not exist or be an empty directory. The clone is
// made from the mirror (fetching only if the commit is missing) with
// copied objects, and its .git stands on its own: no alternates into the
// mirror and no hard links to its files, so dest can be bind-mounted into a
// sandbox whose job may write anything in it without touching the mirror.
// Its origin is url without credentials.
func (m *Mirrors) Checkout(ctx context.Context, url, commit, dest string, opts ...Option) error {
	r, err := m.remote(url, opts)
	if err != nil {
		return err
	}
	dest, err = filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	existed, err := emptyDest(dest)
	if err != nil {
		return err
	}
	err = m.withCommit(ctx, r, commit, func(mr *mirror) error {
		return m.cloneAt(ctx, r, mr, commit, dest)
	})
	if err != nil {
		cleanDest(dest, existed)
	}
	return err
}

// emptyDest checks that dest does not exist or is an empty directory, and
// reports whether it exists.
func emptyDest(dest string) (bool, error) {
	f, err := os.Open(dest)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("gitmirror: checkout: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("gitmirror: checkout into %s: %w", dest, err)
	}
	return false, fmt.Errorf("gitmirror: checkout into %s: not empty (has %s)", dest, names[0])
}

// cleanDest undoes a failed checkout.
func cleanDest(dest string, existed bool) {
	if !existed {
		os.RemoveAll(dest)
		return
	}
	entries, _ := os.ReadDir(dest)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dest, e.Name()))
	}
}

// cloneAt clones the mirror into dest and checks out commit. Called with
// the mirror locked (shared or exclusive) and commit in it.
func (m *Mirrors) cloneAt(ctx context.Context, r *remote, mr *mirror, commit, dest string) error {
	// --no-hardlinks: the checkout is bind-mounted into a sandbox where the
	// job runs as root, and root can write through a hard link into the
	// mirror's object files, poisoning later builds of the repository. A
	// copy costs one local file copy of the packs; no network either way.
	clone := []string{"clone", "--quiet", "--no-hardlinks", "--no-checkout", "--", mr.dir, dest}
	_, err := m.run(ctx, gitCmd{args: clone})
	if err != nil {
		return fmt.Errorf("gitmirror: clone %s: %w", r.redacted, err)
	}
	gitDir := filepath.Join(dest, ".git")
	steps := [][]string{
		{"remote", "set-url", "origin", r.public},
		{"checkout", "--quiet", "--detach", commit},
	}
	for _, args := range steps {
		if _, err := m.run(ctx, gitCmd{dir: dest, gitDir: gitDir, work: dest, args: args, remote: r}); err != nil {
			return fmt.Errorf("gitmirror: checkout %s at %s: %w", r.redacted, commit, err)
		}
	}
	return nil
}

// FetchRef makes sure commit is in the mirror of url, fetching ref for it
// when it is not: a ref the mirror does not keep (a pull request's head,
// refs/pull/N/head, or a merge request's, refs/merge-requests/N/head),
// which the base repository serves even when the commit comes from a
// fork. The ref is kept in the mirror under its own name. When the ref,
// fetched, does not have commit (force-pushed since), the error wraps
// ErrCommitGone and names where the ref points now.
func (m *Mirrors) FetchRef(ctx context.Context, url, ref, commit string, opts ...Option) error {
	r, err := m.remote(url, opts)
	if err != nil {
		return err
	}
	if !fullSHA.MatchString(commit) {
		return fmt.Errorf("gitmirror: %q is not a full commit SHA", commit)
	}
	if !strings.HasPrefix(ref, "refs/") || strings.HasPrefix(ref, "refs/heads/") || strings.HasPrefix(ref, "refs/tags/") || strings.HasPrefix(ref, "refs/kiln/") ||
		strings.ContainsAny(ref, "\x00\n :*^~?[\\") || strings.Contains(ref, "..") {
		return fmt.Errorf("gitmirror: FetchRef: %q is not a ref outside branches and tags", ref)
	}
	mr := m.mirror(r)
	unlock, err := mr.lock(ctx, false)
	if err != nil {
		return err
	}
	have := m.hasCommit(ctx, mr, commit)
	unlock()
	if have {
		return nil
	}
	unlock, err = mr.lock(ctx, true)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := m.ensureRepo(ctx, mr); err != nil {
		return err
	}
	if m.hasCommit(ctx, mr, commit) {
		return nil
	}
	if err := m.fetchRefspecs(ctx, r, mr, false, "+"+ref+":"+ref); err != nil {
		return fetchError(ref+" of "+r.redacted, err)
	}
	if m.hasCommit(ctx, mr, commit) {
		return nil
	}
	now := "nothing"
	if out, err := m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"rev-parse", "--verify", "--quiet", ref + "^{commit}"}}); err == nil {
		now = strings.TrimSpace(string(out))
	}
	return fmt.Errorf("gitmirror: %w: %s is not on %s of %s, which now points at %s (force-pushed since the event?)", ErrCommitGone, commit, ref, r.redacted, now)
}

// withCommit runs fn with the mirror of r locked and commit in it. The fast
// path, a commit already there, takes a shared lock and runs no fetch.
// Otherwise it takes the exclusive lock, repairs or creates the mirror,
// fetches, and runs fn under that lock.
func (m *Mirrors) withCommit(ctx context.Context, r *remote, commit string, fn func(*mirror) error) error {
	if !fullSHA.MatchString(commit) {
		return fmt.Errorf("gitmirror: %q is not a full commit SHA", commit)
	}
	mr := m.mirror(r)

	unlock, err := mr.lock(ctx, false)
	if err != nil {
		return err
	}
	if m.hasCommit(ctx, mr, commit) {
		defer unlock()
		return fn(mr)
	}
	unlock()

	unlock, err = mr.lock(ctx, true)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := m.ensureRepo(ctx, mr); err != nil {
		return err
	}
	if !m.hasCommit(ctx, mr, commit) { // another goroutine or process may have fetched it
		if err := m.fetch(ctx, r, mr); err != nil {
			return err
		}
	}
	if !m.hasCommit(ctx, mr, commit) {
		// Not on any branch or tag (a pull request's head, say): ask for
		// it by SHA, kept under a ref of ours so gc does not prune it.
		err := m.fetchRefspecs(ctx, r, mr, false, "+"+commit+":refs/kiln/commits/"+commit)
		if err != nil || !m.hasCommit(ctx, mr, commit) {
			if err != nil {
				return fmt.Errorf("gitmirror: %w: %s in %s (%v)", ErrCommitNotFound, commit, r.redacted, err)
			}
			return fmt.Errorf("gitmirror: %w: %s in %s", ErrCommitNotFound, commit, r.redacted)
		}
	}
	return fn(mr)
}

// hasCommit reports whether commit is in the mirror. A broken mirror has
// no commit; the exclusive path then repairs it.
func (m *Mirrors) hasCommit(ctx context.Context, mr *mirror, commit string) bool {
	if _, err := os.Stat(mr.dir); err != nil {
		return false
	}
	_, err := m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"cat-file", "-e", commit + "^{commit}"}})
	return err == nil
}

// fetch updates the mirror's branches and tags from r. Called with the
// exclusive lock.
func (m *Mirrors) fetch(ctx context.Context, r *remote, mr *mirror) error {
	m.mu.Lock()
	mr.fetchesStarted++
	n := mr.fetchesStarted
	m.mu.Unlock()
	err := m.fetchRefspecs(ctx, r, mr, true, branchesAndTags...)
	if err != nil && !m.valid(ctx, mr) {
		// The fetch may have failed because the mirror is broken (a disk
		// error, a killed gc): start afresh, once.
		if err = m.recreate(ctx, mr); err == nil {
			err = m.fetchRefspecs(ctx, r, mr, true, branchesAndTags...)
		}
	}
	if err != nil {
		return fetchError(r.redacted, err)
	}
	m.mu.Lock()
	mr.lastGoodFetch = n
	m.mu.Unlock()
	return nil
}

// fetchError is a failed fetch of what: ErrFetch, and ErrAuth too when
// the remote wanted credentials it did not get.
func fetchError(what string, err error) error {
	if authFailure(err) {
		return fmt.Errorf("gitmirror: %w: %w: %s: %w", ErrFetch, ErrAuth, what, err)
	}
	return fmt.Errorf("gitmirror: %w: %s: %w", ErrFetch, what, err)
}

// branchesAndTags is what a mirror holds of its repository.
var branchesAndTags = []string{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// fetchRefspecs runs one git fetch from r into the mirror. Credentials are
// given to git in its environment (r.fetchEnv), never on its command line
// or in the mirror's config; FETCH_HEAD, which would record the URL, is
// not written.
func (m *Mirrors) fetchRefspecs(ctx context.Context, r *remote, mr *mirror, prune bool, refspecs ...string) error {
	m.fetches.Add(1)
	args := []string{"fetch", "--quiet", "--force", "--no-write-fetch-head"}
	if prune {
		args = append(args, "--prune")
	}
	args = append(append(args, r.fetchURL), refspecs...)
	_, err := m.run(ctx, gitCmd{gitDir: mr.dir, args: args, remote: r, network: true})
	return err
}

// ensureRepo makes sure the mirror is a valid bare repository, creating or
// recreating it (then it reports true). Called with the exclusive lock.
func (m *Mirrors) ensureRepo(ctx context.Context, mr *mirror) (bool, error) {
	if m.valid(ctx, mr) {
		return false, nil
	}
	return true, m.recreate(ctx, mr)
}

// valid reports whether the mirror directory is a usable bare repository.
// One left half-made (a process killed during init, a disk filled up) is
// not, and is recreated.
func (m *Mirrors) valid(ctx context.Context, mr *mirror) bool {
	if _, err := os.Stat(mr.dir); err != nil {
		return false
	}
	out, err := m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"rev-parse", "--is-bare-repository"}})
	if err != nil || strings.TrimSpace(string(out)) != "true" {
		return false
	}
	// The object store and refs must be readable too.
	_, err = m.run(ctx, gitCmd{gitDir: mr.dir, args: []string{"for-each-ref", "--count=1"}})
	return err == nil
}

// recreate replaces the mirror directory with a new empty bare repository.
// It is made beside the final place and renamed into it, so a mirror
// directory is never half-made by us. Called with the exclusive lock.
func (m *Mirrors) recreate(ctx context.Context, mr *mirror) error {
	if err := os.RemoveAll(mr.dir); err != nil {
		return fmt.Errorf("gitmirror: remove broken mirror: %w", err)
	}
	// Leftovers of an init that was killed; ours, since we hold the lock.
	old, _ := filepath.Glob(mr.dir + ".tmp-*")
	for _, o := range old {
		os.RemoveAll(o)
	}
	tmp, err := os.MkdirTemp(m.root, filepath.Base(mr.dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	defer os.RemoveAll(tmp) // after a successful rename there is nothing left
	if _, err := m.run(ctx, gitCmd{args: []string{"init", "--quiet", "--bare", "--template=", tmp}}); err != nil {
		return fmt.Errorf("gitmirror: init mirror: %w", err)
	}
	if err := os.Rename(tmp, mr.dir); err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	return nil
}
