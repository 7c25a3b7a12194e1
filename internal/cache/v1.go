package cache

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The legacy v1 protocol, at {ACTIONS_CACHE_URL}_apis/artifactcache/:
//
//	GET   cache?keys=K1,K2&version=V   lookup: 200 with archiveLocation, 204 on a miss
//	GET   caches?key=K                 entries with key K of any version (client diagnostics)
//	POST  caches {key,version,cacheSize}  reserve: 201 {cacheId}; 409 if it exists
//	PATCH caches/ID  Content-Range: bytes A-B/*   one chunk, any order, in parallel
//	POST  caches/ID {size}             commit: 204
//
// Errors are JSON objects with a "message", which the client shows. A
// reservation refused for its size answers 400, which the client reports
// with that message.

const v1Prefix = "/_apis/artifactcache/"

func (s *Service) routeV1(mux *http.ServeMux) {
	mux.HandleFunc("GET "+v1Prefix+"cache", s.v1(s.v1Lookup))
	mux.HandleFunc("GET "+v1Prefix+"caches", s.v1(s.v1List))
	mux.HandleFunc("POST "+v1Prefix+"caches", s.v1(s.v1Reserve))
	mux.HandleFunc("PATCH "+v1Prefix+"caches/{id}", s.v1(s.v1Upload))
	mux.HandleFunc("POST "+v1Prefix+"caches/{id}", s.v1(s.v1Commit))
}

type v1Handler func(w http.ResponseWriter, r *http.Request, sc Scope) error

// v1 authenticates a request and writes the handler's error.
func (s *Service) v1(h v1Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sc, err := s.authenticate(r)
		if err == nil {
			err = h(w, r, sc)
		}
		if err != nil {
			k := classify(err)
			if k.status == http.StatusRequestEntityTooLarge || k.status == http.StatusInsufficientStorage {
				if r.Method == http.MethodPost && r.PathValue("id") == "" {
					k.status = http.StatusBadRequest // reserve: the client shows the message
				}
			}
			writeJSON(w, k.status, map[string]any{"message": s.publicMessage(err), "typeKey": k.v1})
		}
	}
}

type v1CacheEntry struct {
	CacheKey        string `json:"cacheKey"`
	Scope           string `json:"scope"`
	CacheVersion    string `json:"cacheVersion"`
	CreationTime    string `json:"creationTime"`
	ArchiveLocation string `json:"archiveLocation,omitempty"`
}

func v1Entry(e entryRow) v1CacheEntry {
	return v1CacheEntry{CacheKey: e.Key, Scope: e.Scope, CacheVersion: e.Version,
		CreationTime: time.Unix(0, e.Finalized).UTC().Format(time.RFC3339Nano)}
}

func (s *Service) v1Lookup(w http.ResponseWriter, r *http.Request, sc Scope) error {
	q := r.URL.Query()
	keys := strings.Split(q.Get("keys"), ",")
	if err := validateKeys(keys); err != nil {
		return err
	}
	if err := validateVersion(q.Get("version")); err != nil {
		return err
	}
	e, ok, err := s.lookup(r.Context(), sc, keys, q.Get("version"))
	if err != nil {
		return err
	}
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	out := v1Entry(e)
	if out.ArchiveLocation, err = s.downloadURL(r.Context(), e.ID); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) v1List(w http.ResponseWriter, r *http.Request, sc Scope) error {
	key := r.URL.Query().Get("key")
	if err := validateKey(key); err != nil {
		return err
	}
	var list []v1CacheEntry
	for _, scope := range sc.readScopes() {
		rows, err := s.queryEntries(r.Context(), `project = ? AND scope = ? AND cache_key = ? AND state = 'ready' ORDER BY finalized_at DESC`,
			sc.Project, scope, key)
		if err != nil {
			return err
		}
		for _, e := range rows {
			list = append(list, v1Entry(e))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"totalCount": len(list), "artifactCaches": list})
	return nil
}

func (s *Service) v1Reserve(w http.ResponseWriter, r *http.Request, sc Scope) error {
	var req struct {
		Key       string `json:"key"`
		Version   string `json:"version"`
		CacheSize int64  `json:"cacheSize"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := validateKey(req.Key); err != nil {
		return err
	}
	if err := validateVersion(req.Version); err != nil {
		return err
	}
	if req.CacheSize < 0 {
		return errorf(ErrInvalid, "negative cacheSize")
	}
	if sc.ReadOnly {
		return errorf(ErrForbidden, "cache write denied: this job's token is read-only")
	}
	if err := s.admitBytes(r.Context(), sc.Project, req.CacheSize, req.CacheSize); err != nil {
		return err
	}
	id, err := s.reserve(r.Context(), sc, req.Key, req.Version, req.CacheSize)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]int64{"cacheId": id})
	return nil
}

// v1Upload stores one chunk as its own file; commit assembles them.
func (s *Service) v1Upload(w http.ResponseWriter, r *http.Request, sc Scope) error {
	e, err := s.v1Reservation(r, sc)
	if err != nil {
		return err
	}
	start, end, err := parseContentRange(r.Header.Get("Content-Range"))
	if err != nil {
		return err
	}
	n := end - start + 1
	if e.Declared > 0 && end >= e.Declared {
		return errorf(ErrInvalid, "chunk bytes %d-%d lie beyond the reserved size of %d bytes", start, end, e.Declared)
	}
	if n > maxBlockBytes {
		return errorf(ErrTooLarge, "chunk of %d bytes is over the limit of %d", n, maxBlockBytes)
	}
	if r.ContentLength >= 0 && r.ContentLength != n {
		return errorf(ErrInvalid, "Content-Length %d does not match Content-Range bytes %d-%d", r.ContentLength, start, end)
	}
	// The client sends chunked bodies: the range says how much must arrive.
	if _, err := s.receive(r, e, n, s.files.chunk(e.ID, start, end)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Service) v1Commit(w http.ResponseWriter, r *http.Request, sc Scope) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return errorf(ErrNotFound, "no cache %q", r.PathValue("id"))
	}
	var req struct {
		Size *int64 `json:"size"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Size == nil {
		return errorf(ErrInvalid, "size is required")
	}
	size := *req.Size
	_, err = s.finalize(r.Context(), sc, id, size, func(entryRow) error { return s.files.assembleChunks(id, size) })
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// v1Reservation is the job's reserved entry named by the path.
func (s *Service) v1Reservation(r *http.Request, sc Scope) (entryRow, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return entryRow{}, errorf(ErrNotFound, "no cache %q", r.PathValue("id"))
	}
	e, err := s.reservedEntry(r.Context(), sc, id)
	if err != nil {
		return e, err
	}
	if e.State != stateReserved {
		return e, errorf(ErrConflict, "cache %d is already committed", id)
	}
	return e, nil
}

// parseContentRange reads "bytes A-B/*" or "bytes A-B/TOTAL".
func parseContentRange(h string) (start, end int64, err error) {
	spec, ok := strings.CutPrefix(h, "bytes ")
	rng, _, ok2 := strings.Cut(spec, "/")
	a, b, ok3 := strings.Cut(rng, "-")
	if ok && ok2 && ok3 {
		start, err1 := strconv.ParseInt(a, 10, 64)
		end, err2 := strconv.ParseInt(b, 10, 64)
		if err1 == nil && err2 == nil && start >= 0 && end >= start {
			return start, end, nil
		}
	}
	return 0, 0, errorf(ErrInvalid, "bad Content-Range %q: want bytes START-END/*", h)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		return errorf(ErrInvalid, "bad request body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failure means the client hung up
}
