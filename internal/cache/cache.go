// Package cache is Kiln's actions/cache-compatible cache service.
//
// It speaks the two protocols the real @actions/cache npm client uses:
//
//   - v2 (twirp.go): Twirp JSON at /twirp/github.actions.results.api.v1.CacheService/*,
//     which hands out signed, expiring blob URLs on this same server that
//     speak enough of the Azure Blob REST API (blob.go) for the Azure SDK's
//     BlockBlobClient.uploadFile and for a plain HTTP download.
//   - v1 (v1.go): the legacy /_apis/artifactcache/* API with chunked PATCH
//     uploads.
//
// Both share one store (store.go: metadata in SQL; uploads staged on local
// disk under Config.Dir, files.go; finalized archives in a blobstore.Store,
// on that disk or in S3, whose presigned URLs then serve the downloads) and
// GitHub's semantics: exact key, then key and restore-key prefixes, newest
// first; the job's branch scope, then its base branch, then the default
// branch; entries immutable once finalized; eviction by age, per-project
// size budget and a disk high-water mark (evict.go).
//
// Access is by bearer tokens this service signs itself (token.go): a token
// names the job's project and branch scopes, so one project can never see
// another's entries.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
)

// Config configures the service. Start from DefaultConfig.
type Config struct {
	// Dir holds the upload staging area, and the finalized archives unless
	// Blobs is set. Required.
	Dir string
	// Blobs keeps finalized archives. Nil means a blobstore.Disk under
	// Dir/blobs. A store that presigns (blobstore.S3) serves downloads
	// itself: the download URLs handed to clients are its presigned GETs,
	// so archive bytes never pass through this service on the way down.
	// The service owns every name in it.
	Blobs blobstore.Store
	// SigningKey signs job tokens and blob URLs (HMAC-SHA256). Required, at
	// least 16 bytes; keep it stable across restarts or issued tokens and
	// URLs stop working.
	SigningKey []byte
	// PublicURL is the base URL jobs reach this service at, e.g.
	// http://10.0.0.1:8080. The handler must be mounted at the root of that
	// host: the v2 client resolves /twirp/... against it, dropping any path.
	PublicURL string
	// MaxAge evicts entries not used for this long.
	MaxAge time.Duration
	// ProjectBudgetBytes caps the bytes one project may hold; the least
	// recently used entries go first.
	ProjectBudgetBytes int64
	// DiskHighWater is the fraction (0,1] of the filesystem holding Dir that
	// may be in use. Above it the least recently used entries of all
	// projects are evicted, and uploads that cannot fit are refused.
	DiskHighWater float64
	// UploadTTL is how long a reserved entry may stay unfinalized before it
	// is treated as abandoned and cleaned.
	UploadTTL time.Duration

	// DiskUsage measures the filesystem holding Dir. Nil means statfs(2).
	// Tests set it to simulate a full disk.
	DiskUsage func(dir string) (DiskUsage, error)
	// Now is the clock. Nil means time.Now. Tests set it to age entries.
	Now func() time.Time
	// Logger receives server-side errors. Nil means slog.Default().
	Logger *slog.Logger
}

// DiskUsage is the size and free space of a filesystem, in bytes.
type DiskUsage struct {
	Total uint64
	Free  uint64
}

// DefaultConfig returns the defaults: 7 days max age, 10 GiB per project,
// 75% disk high-water mark, 1 hour upload TTL. Dir, SigningKey and
// PublicURL must still be set.
func DefaultConfig() Config {
	return Config{
		MaxAge:             7 * 24 * time.Hour,
		ProjectBudgetBytes: 10 << 30,
		DiskHighWater:      0.75,
		UploadTTL:          time.Hour,
	}
}

// Validate reports every invalid field, one error per field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("cache config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Dir == "" {
		bad("Dir", "required")
	}
	if len(c.SigningKey) < 16 {
		bad("SigningKey", "must be at least 16 bytes, got %d", len(c.SigningKey))
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("PublicURL", "must be an absolute http(s) URL, got %q", c.PublicURL)
	} else if strings.Trim(u.Path, "/") != "" {
		bad("PublicURL", "must not have a path (the v2 client drops it), got %q", c.PublicURL)
	}
	if c.MaxAge <= 0 {
		bad("MaxAge", "must be positive, got %v", c.MaxAge)
	}
	if c.ProjectBudgetBytes <= 0 {
		bad("ProjectBudgetBytes", "must be positive, got %d", c.ProjectBudgetBytes)
	}
	if c.DiskHighWater <= 0 || c.DiskHighWater > 1 {
		bad("DiskHighWater", "must be in (0,1], got %v", c.DiskHighWater)
	}
	if c.UploadTTL <= 0 {
		bad("UploadTTL", "must be positive, got %v", c.UploadTTL)
	}
	return errors.Join(errs...)
}

// Scope is what a job token grants: read access to the project's entries in
// Branch, BaseBranch and DefaultBranch (searched in that order), and write
// access to Branch unless ReadOnly.
type Scope struct {
	Project       string
	Branch        string
	DefaultBranch string
	BaseBranch    string // for pull requests; may be empty
	ReadOnly      bool
}

// readScopes lists the branch scopes a lookup searches, in order, without
// duplicates or empty names.
func (s Scope) readScopes() []string {
	var out []string
	for _, b := range []string{s.Branch, s.BaseBranch, s.DefaultBranch} {
		if b != "" && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out
}

// Entry is one finalized cache entry, for listing and management.
type Entry struct {
	ID       int64
	Project  string
	Scope    string // the branch it was saved from
	Key      string
	Version  string
	Size     int64
	Created  time.Time // when it was finalized
	LastUsed time.Time
	// Hits is how often a restore found the entry.
	Hits int64
}

// Service is the cache service. It is safe for concurrent use.
type Service struct {
	cfg   Config
	db    DB
	files files
	blobs blobstore.Store
	// blobsOnDisk: finalized archives share Dir's filesystem, so evicting
	// entries frees room there (false with S3: only staging is local).
	blobsOnDisk bool
	log         *slog.Logger
	now         func() time.Time
	disk        func(string) (DiskUsage, error)
	// locks serialises commit-like operations (assemble, finalize, delete)
	// on one entry; blocks and chunks of one entry still upload in parallel.
	locks [64]sync.Mutex
	// evictMu keeps two evictions (periodic and pre-upload) from racing to
	// delete the same entries.
	evictMu sync.Mutex
}

// New validates cfg and creates its directories under cfg.Dir; its table
// is the store's (db is the store's handle).
func New(cfg Config, db DB) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	s := &Service{cfg: cfg, db: db, files: files{root: cfg.Dir}, log: cfg.Logger, now: cfg.Now, disk: cfg.DiskUsage}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.disk == nil {
		s.disk = statDisk
	}
	if err := s.files.init(); err != nil {
		return nil, err
	}
	s.blobs = cfg.Blobs
	if s.blobs == nil {
		d, err := blobstore.NewDisk(filepath.Join(cfg.Dir, "blobs"))
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		s.blobs = d
	}
	_, s.blobsOnDisk = s.blobs.(*blobstore.Disk)
	return s, nil
}

func (s *Service) lock(id int64) func() {
	m := &s.locks[uint64(id)%uint64(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// Handler serves the v2 Twirp API, the v1 API and the blob URLs. Mount it
// at the root of PublicURL's host.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+twirpPrefix+"{method}", s.serveTwirp)
	s.routeV1(mux)
	s.routeBlob(mux)
	return mux
}

// Env is the environment a job needs for the real @actions/cache client to
// use this service with token.
func (s *Service) Env(token string) map[string]string {
	env := map[string]string{
		"ACTIONS_RUNTIME_TOKEN":    token,
		"ACTIONS_RESULTS_URL":      s.cfg.PublicURL + "/",
		"ACTIONS_CACHE_URL":        s.cfg.PublicURL + "/",
		"ACTIONS_CACHE_SERVICE_V2": "true",
	}
	// Newer clients (@actions/cache 6.x) skip saving outright in "read"
	// mode instead of asking and being told no.
	if sc, err := s.verifyToken(token); err == nil && sc.ReadOnly {
		env["ACTIONS_CACHE_MODE"] = "read"
	}
	return env
}

// removeAll is os.RemoveAll with the error logged instead of returned: it
// is used on cleanup paths whose failure the next Evict repairs.
func (s *Service) removeAll(path string) {
	if err := os.RemoveAll(path); err != nil {
		s.log.Warn("cache: cleanup failed", "path", filepath.Clean(path), "err", err)
	}
}

// blobName is entry id's name in the blob store.
func blobName(id int64) string { return strconv.FormatInt(id, 10) }

// downloadURL is where a client downloads entry id's archive: the blob
// store's presigned GET when it has one, else a signed URL on this server.
func (s *Service) downloadURL(ctx context.Context, id int64) (string, error) {
	u, err := s.blobs.PresignGet(ctx, blobName(id), downloadURLTTL)
	if err != nil {
		return "", fmt.Errorf("cache: download URL for entry %d: %w", id, err)
	}
	if u != "" {
		return u, nil
	}
	return s.blobURL(id, opRead, downloadURLTTL), nil
}

// removeBlob deletes entry id's archive, logging a failure the next
// Evict's orphan sweep repairs.
func (s *Service) removeBlob(ctx context.Context, id int64) {
	if err := s.blobs.Delete(ctx, blobName(id)); err != nil {
		s.log.Warn("cache: delete blob failed", "id", id, "err", err)
	}
}
