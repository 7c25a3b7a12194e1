// Package cacheclient saves and restores directories to and from Kiln's
// cache service (internal/cache) over the protocol the real @actions/cache
// client speaks (v2): Twirp JSON calls to reserve, look up and finalize an
// entry, and Azure Blob requests on the signed URLs they return to upload
// (Put Blob, or Put Block + Put Block List) and download (GET).
//
// The agent uses it for the keyed caches of .kiln.yml: Restore before the
// job's steps into the host directories that are then mounted into the
// sandbox, Save after a successful job. Archives are tar streams compressed
// with zstd (archive.go); they are produced and consumed as streams, never
// held whole in memory or on disk. Extraction (extract.go) trusts nothing
// in the archive: the entries of a cache are written by whatever ran in a
// job of the project, so an entry that would land outside its directory,
// write through a symbolic link, or create a device is refused, and a
// failed restore leaves the directories as they were.
package cacheclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to the cache service on behalf of one job.
type Client struct {
	// BaseURL is the service's base URL: ACTIONS_RESULTS_URL of the job's
	// environment (cache.Service.Env). Its path is ignored, as the real
	// client ignores it.
	BaseURL string
	// Token is the job's token: ACTIONS_RUNTIME_TOKEN.
	Token string
	// HTTP sends the requests; nil means http.DefaultClient. Requests carry
	// the context given to Save and Restore, which is what bounds them: a
	// client Timeout would cut long archive transfers.
	HTTP *http.Client

	// BlockSize is the size of the blocks Save uploads; 0 means 32 MiB. An
	// archive that fits in one block is sent with a single Put Blob.
	BlockSize int
	// Uploads is how many blocks Save uploads at once; 0 means 2. Save
	// holds at most Uploads+1 blocks in memory.
	Uploads int
}

// Stats describes one Save or Restore.
type Stats struct {
	ArchiveBytes int64         // the compressed archive, as transferred
	Bytes        int64         // the regular files' contents
	Entries      int           // directories, files and symbolic links
	Skipped      int           // Save: sockets, devices and pipes left out
	Duration     time.Duration // the whole call, lookups included
}

var (
	// ErrExists: Save found the key already saved, or being saved by
	// another job. Entries are immutable; the agent reports a notice.
	ErrExists = errors.New("cache entry already exists")
	// ErrRefused: the service declined to store the entry (a read-only
	// token, or no room on its disk); its message says which.
	ErrRefused = errors.New("cache service refused the save")
	// ErrNothingToSave: none of the directories given to Save exists.
	ErrNothingToSave = errors.New("none of the cache paths exists")
)

// Error is an error answer of the service: a Twirp error (Code is the
// Twirp code) or an Azure Blob error on a signed URL (Code is Azure's).
type Error struct {
	Op      string // CreateCacheEntry, Put Block, Get Blob, …
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("cacheclient: %s: HTTP %d", e.Op, e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// compression names the archive format in Version. It deliberately differs
// from the names @actions/cache uses ("zstd-without-long", "gzip", …): the
// layout of our archives (one top-level entry per path index) is not theirs,
// so an entry saved by one must never be restored by the other.
const compression = "kiln-tar-zstd"

// versionSalt changes if the archive layout ever changes incompatibly.
const versionSalt = "1"

// Version is the entry version for a cache of paths, in the manner of
// @actions/cache (a hash of the paths and the compression): the hex
// SHA-256 of the JSON array of the paths, the compression and a salt. (JSON
// rather than the client's "|"-joined string, so that no two lists of paths
// give the same version.) The same paths in the same order give the same
// version on every host; entries of other paths are never matched.
func Version(paths []string) string {
	b, _ := json.Marshal(append(append([]string{}, paths...), compression, versionSalt))
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

const twirpService = "/twirp/github.actions.results.api.v1.CacheService/"

// twirp calls a method of the cache service's Twirp API with a JSON body
// and decodes the answer into resp.
func (c *Client) twirp(ctx context.Context, method string, req, resp any) error {
	base, err := url.Parse(c.BaseURL)
	if err != nil || base.Host == "" {
		return fmt.Errorf("cacheclient: bad base URL %q", c.BaseURL)
	}
	u := base.ResolveReference(&url.URL{Path: twirpService + method})
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("cacheclient: %s: %w", method, err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+c.Token)
	r.Header.Set("User-Agent", "kiln-cacheclient")
	res, err := c.http().Do(r)
	if err != nil {
		return fmt.Errorf("cacheclient: %s: %w", method, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cacheclient: %s: %w", method, err)
	}
	if res.StatusCode != http.StatusOK {
		e := &Error{Op: method, Status: res.StatusCode}
		var te struct{ Code, Msg string }
		if json.Unmarshal(raw, &te) == nil {
			e.Code, e.Message = te.Code, te.Msg
		} else {
			e.Message = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		}
		return e
	}
	if err := decodeJSON(raw, resp); err != nil {
		return fmt.Errorf("cacheclient: %s: bad answer: %w", method, err)
	}
	return nil
}

// decodeJSON decodes a Twirp JSON answer whose field names may be proto
// names (signed_upload_url) or their JSON names (signedUploadUrl).
func decodeJSON(raw []byte, v any) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	snake := make(map[string]json.RawMessage, len(m))
	for k, val := range m {
		var b strings.Builder
		for _, r := range k {
			if r >= 'A' && r <= 'Z' {
				b.WriteByte('_')
				r += 'a' - 'A'
			}
			b.WriteRune(r)
		}
		snake[b.String()] = val
	}
	b, _ := json.Marshal(snake)
	return json.Unmarshal(b, v)
}

// Restore looks up key, then each of restoreKeys as a prefix (the newest
// matching entry wins; the service also searches the base and default
// branches), downloads the archive and extracts path number i of it into
// dirs[i]. It returns the key that matched, or "" on a miss.
//
// Each dirs[i] must be absent or an empty directory. A complete tree is
// extracted first into a temporary sibling, so that a failed or
// interrupted restore leaves every directory as it was; then an existing
// directory is filled in place (the tree's entries are renamed into it:
// the directory itself stays the same one, so a sandbox that bind-mounted
// it before the restore ended sees the restored files), and an absent one
// gets the tree renamed into place. A path the archive does not hold (it did not exist when the
// cache was saved) is left alone.
func (c *Client) Restore(ctx context.Context, key string, restoreKeys []string, version string, dirs []string) (matched string, st Stats, err error) {
	start := time.Now()
	defer func() { st.Duration = time.Since(start) }()
	if err := checkDirs(dirs); err != nil {
		return "", st, err
	}
	before, err := checkRestoreTargets(dirs)
	if err != nil {
		return "", st, err
	}
	var ans struct {
		OK                bool   `json:"ok"`
		SignedDownloadURL string `json:"signed_download_url"`
		MatchedKey        string `json:"matched_key"`
	}
	req := map[string]any{"key": key, "restore_keys": restoreKeys, "version": version}
	if restoreKeys == nil {
		req["restore_keys"] = []string{}
	}
	if err := c.twirp(ctx, "GetCacheEntryDownloadURL", req, &ans); err != nil {
		return "", st, err
	}
	if !ans.OK || ans.SignedDownloadURL == "" {
		return "", st, nil
	}
	body, err := c.download(ctx, ans.SignedDownloadURL)
	if err != nil {
		return "", st, err
	}
	defer body.Close()
	counted := &countingReader{r: body}
	err = extract(ctx, counted, dirs, before, &st)
	st.ArchiveBytes = counted.n
	if err != nil {
		return "", st, fmt.Errorf("cacheclient: restore %q: %w", ans.MatchedKey, err)
	}
	return ans.MatchedKey, st, nil
}

// Save archives dirs and stores the archive under key and version. A
// directory that does not exist is left out (and Restore leaves its
// target alone); if none exists, Save returns ErrNothingToSave. If the key
// is already taken it returns ErrExists, and ErrRefused if the service
// declines to store it.
//
// The archive is streamed: compressed as the tree is read and uploaded in
// blocks as it is compressed. The entry is reserved before the tree is
// read, so a Save that fails half-way leaves a reservation the service
// drops after its upload TTL.
func (c *Client) Save(ctx context.Context, key, version string, dirs []string) (st Stats, err error) {
	start := time.Now()
	defer func() { st.Duration = time.Since(start) }()
	if err := checkDirs(dirs); err != nil {
		return st, err
	}
	present, err := existingDirs(dirs)
	if err != nil {
		return st, err
	}
	if len(present) == 0 {
		return st, fmt.Errorf("cacheclient: save %q: %w: %s", key, ErrNothingToSave, strings.Join(dirs, ", "))
	}
	st.ArchiveBytes, err = c.upload(ctx, key, version, func(w io.Writer) error {
		return writeArchive(ctx, w, dirs, present, &st)
	})
	if err != nil {
		return st, fmt.Errorf("cacheclient: save %q: %w", key, err)
	}
	return st, nil
}

// upload reserves key, streams what write writes to the entry's blob and
// finalizes it. It returns the bytes uploaded.
func (c *Client) upload(ctx context.Context, key, version string, write func(io.Writer) error) (int64, error) {
	var created struct {
		OK              bool   `json:"ok"`
		SignedUploadURL string `json:"signed_upload_url"`
		Message         string `json:"message"`
	}
	err := c.twirp(ctx, "CreateCacheEntry", map[string]any{"key": key, "version": version}, &created)
	var e *Error
	if errors.As(err, &e) && (e.Code == "already_exists" || e.Status == http.StatusConflict) {
		return 0, fmt.Errorf("%w (%s)", ErrExists, e.Message)
	}
	if err != nil {
		return 0, err
	}
	if !created.OK {
		return 0, fmt.Errorf("%w: %s", ErrRefused, created.Message)
	}
	up := c.newUploader(ctx, created.SignedUploadURL)
	if err := write(up); err != nil {
		up.abort()
		return 0, err
	}
	if err := up.close(); err != nil {
		return 0, err
	}
	var fin struct {
		OK bool `json:"ok"`
	}
	req := map[string]any{"key": key, "version": version, "size_bytes": strconv.FormatInt(up.n, 10)}
	if err := c.twirp(ctx, "FinalizeCacheEntryUpload", req, &fin); err != nil {
		return up.n, err
	}
	if !fin.OK {
		return up.n, errors.New("cacheclient: FinalizeCacheEntryUpload: the service answered ok=false")
	}
	return up.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
