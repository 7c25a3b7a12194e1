package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/kilnci/kiln/internal/cache"
)

// listCaches lists a project's keyed cache entries, most recently used first.
func (s *Server) listCaches(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	entries, err := s.caches.List(r.Context(), p.Name)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]CacheEntryView, 0, len(entries))
	for _, e := range entries {
		out = append(out, cacheEntryView(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteCache(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := s.caches.Delete(r.Context(), p.Name, id); err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
		s.storeError(w, err)
		return
	}
	s.record(r, "cache.delete", "cache:"+p.Name+"/"+strconv.FormatInt(id, 10), map[string]any{"project": p.Name})
	w.WriteHeader(http.StatusNoContent)
}

// pruneCaches runs the cache service's eviction now.
func (s *Server) pruneCaches(w http.ResponseWriter, r *http.Request) {
	st, err := s.caches.Evict(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "cache.prune", "caches", st)
	writeJSON(w, http.StatusOK, st)
}
