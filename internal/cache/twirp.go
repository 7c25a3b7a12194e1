package cache

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The v2 protocol: Twirp with JSON bodies. The client sends proto field
// names (snake_case); Twirp servers must also accept the camelCase JSON
// names, so both are read. int64 fields are JSON strings in proto3 JSON,
// and are read from strings or numbers. Scopes come from the token only:
// the request's metadata field is ignored.

const twirpPrefix = "/twirp/github.actions.results.api.v1.CacheService/"

// downloadURLTTL is how long a signed download URL stays valid. It is
// checked when a download starts, so a slow download may outlive it.
const downloadURLTTL = time.Hour

type createCacheEntryRequest struct {
	Key     string `json:"key"`
	Version string `json:"version"`
}

type finalizeRequest struct {
	Key       string    `json:"key"`
	Version   string    `json:"version"`
	SizeBytes jsonInt64 `json:"size_bytes"`
}

type downloadURLRequest struct {
	Key         string   `json:"key"`
	RestoreKeys []string `json:"restore_keys"`
	Version     string   `json:"version"`
}

// jsonInt64 reads a proto3 JSON int64: a string or a number.
type jsonInt64 int64

func (n *jsonInt64) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseInt(strings.Trim(string(b), `"`), 10, 64)
	*n = jsonInt64(v)
	return err
}

func (s *Service) serveTwirp(w http.ResponseWriter, r *http.Request) {
	sc, err := s.authenticate(r)
	if err != nil {
		writeTwirpError(w, "unauthenticated", err.Error(), http.StatusUnauthorized)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeTwirpError(w, "bad_route", "only application/json is supported, got "+strconv.Quote(ct), http.StatusNotFound)
		return
	}
	var resp any
	switch r.PathValue("method") {
	case "CreateCacheEntry":
		var req createCacheEntryRequest
		if s.decodeTwirp(w, r, &req) {
			resp, err = s.createCacheEntry(r, sc, req)
		}
	case "FinalizeCacheEntryUpload":
		var req finalizeRequest
		if s.decodeTwirp(w, r, &req) {
			resp, err = s.finalizeCacheEntry(r, sc, req)
		}
	case "GetCacheEntryDownloadURL":
		var req downloadURLRequest
		if s.decodeTwirp(w, r, &req) {
			resp, err = s.cacheEntryDownloadURL(r, sc, req)
		}
	default:
		writeTwirpError(w, "bad_route", "no such method "+strconv.Quote(r.PathValue("method")), http.StatusNotFound)
		return
	}
	if err != nil {
		s.writeTwirpErr(w, err)
		return
	}
	if resp != nil {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	}
}

func (s *Service) createCacheEntry(r *http.Request, sc Scope, req createCacheEntryRequest) (any, error) {
	if err := validateKey(req.Key); err != nil {
		return nil, err
	}
	if err := validateVersion(req.Version); err != nil {
		return nil, err
	}
	if sc.ReadOnly {
		// The client recognises this prefix in an ok=false answer and
		// reports a policy denial instead of a conflict.
		return map[string]any{"ok": false, "message": "cache write denied: this job's token is read-only"}, nil
	}
	// The size is not known yet; refuse early if the disk is already full.
	// As an ok=false answer, the client shows the message as a warning
	// ("Cache reservation failed: …"); a Twirp error would reach the job's
	// log only as "another job may be creating this cache".
	if err := s.admitDisk(r.Context()); errors.Is(err, ErrInsufficientStorage) {
		return map[string]any{"ok": false, "message": err.Error()}, nil
	} else if err != nil {
		return nil, err
	}
	id, err := s.reserve(r.Context(), sc, req.Key, req.Version, 0)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": true, "signed_upload_url": s.blobURL(id, opWrite, s.cfg.UploadTTL)}, nil
}

func (s *Service) finalizeCacheEntry(r *http.Request, sc Scope, req finalizeRequest) (any, error) {
	if err := validateKey(req.Key); err != nil {
		return nil, err
	}
	if err := validateVersion(req.Version); err != nil {
		return nil, err
	}
	e, err := s.queryEntry(r.Context(), `project = ? AND scope = ? AND cache_key = ? AND version = ?`, sc.Project, sc.Branch, req.Key, req.Version)
	if err != nil {
		return nil, errorf(err, "no cache entry %q (version %s) is being uploaded in scope %q", req.Key, req.Version, sc.Branch)
	}
	e, err = s.finalize(r.Context(), sc, e.ID, int64(req.SizeBytes), nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": true, "entry_id": strconv.FormatInt(e.ID, 10)}, nil
}

func (s *Service) cacheEntryDownloadURL(r *http.Request, sc Scope, req downloadURLRequest) (any, error) {
	keys := append([]string{req.Key}, req.RestoreKeys...)
	if err := validateKeys(keys); err != nil {
		return nil, err
	}
	if err := validateVersion(req.Version); err != nil {
		return nil, err
	}
	e, ok, err := s.lookup(r.Context(), sc, keys, req.Version)
	if err != nil {
		return nil, err
	}
	if !ok {
		return map[string]any{"ok": false}, nil
	}
	u, err := s.downloadURL(r.Context(), e.ID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": true, "signed_download_url": u, "matched_key": e.Key}, nil
}

// decodeTwirp reads a JSON request of at most 1 MiB, accepting both proto
// and camelCase field names, and answers malformed on failure.
func (s *Service) decodeTwirp(w http.ResponseWriter, r *http.Request, v any) bool {
	var raw map[string]json.RawMessage
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&raw)
	if err == nil {
		snake := make(map[string]json.RawMessage, len(raw))
		for k, val := range raw {
			snake[snakeCase(k)] = val
		}
		b, _ := json.Marshal(snake)
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		writeTwirpError(w, "malformed", "bad request body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func snakeCase(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// writeTwirpErr writes err as a Twirp error, with the HTTP status Twirp
// assigns its code.
func (s *Service) writeTwirpErr(w http.ResponseWriter, err error) {
	k := classify(err)
	status := k.status
	switch k.twirp {
	case "resource_exhausted":
		status = http.StatusTooManyRequests
	case "invalid_argument":
		status = http.StatusBadRequest
	}
	writeTwirpError(w, k.twirp, s.publicMessage(err), status)
}

func writeTwirpError(w http.ResponseWriter, code, msg string, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "msg": msg})
}
