package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/insights"
	"github.com/kilnci/kiln/internal/store"
)

// insightsReport is GET /api/v1/insights?project=NAME&days=7|30: one
// project's insights, or without a project every project the caller may
// view (an admin's: all). What the figures are is internal/insights';
// the window's now is the store's clock.
func (s *Server) insightsReport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	days := 7
	if v := q.Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid", "days: want 7 or 30")
			return
		}
		days = n
	}
	win, err := insights.NewWindow(s.store.Now(), days)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	var query store.InsightsQuery
	name := q.Get("project")
	if name != "" {
		// Refused by name before the project is looked up: a 404 then
		// tells only those who may view it that it does not exist.
		if !canView(r, name) {
			writeError(w, http.StatusForbidden, "forbidden", authz.Forbidden(authz.ViewProject, name))
			return
		}
		p, err := s.store.ProjectByName(r.Context(), name)
		if err != nil {
			s.storeError(w, fmt.Errorf("project %q: %w", name, err))
			return
		}
		query = win.Query(false, []int64{p.ID})
	} else {
		ids, all, err := s.viewable(r)
		if err != nil {
			s.storeError(w, err)
			return
		}
		query = win.Query(all, ids)
	}
	data, err := s.store.Insights(r.Context(), query)
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, insightsView(name, insights.Compute(win, data)))
}
