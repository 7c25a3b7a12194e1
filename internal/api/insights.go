package api

import (
	"errors"
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
	v, status, err := s.insights(r, r.URL.Query().Get("project"), r.URL.Query().Get("days"))
	if err != nil {
		s.filterError(w, status, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// insights computes the view of GET /api/v1/insights (and the dashboard's
// page): days is "7" (the default, "") or "30"; project "" is every
// project r's principal may view. On an error, status is as
// buildFilter's: 400, 403, or 0 for the store's.
func (s *Server) insights(r *http.Request, name, days string) (InsightsView, int, error) {
	n := 7
	if days != "" {
		var err error
		if n, err = strconv.Atoi(days); err != nil {
			return InsightsView{}, http.StatusBadRequest, errors.New("days: want 7 or 30")
		}
	}
	win, err := insights.NewWindow(s.store.Now(), n)
	if err != nil {
		return InsightsView{}, http.StatusBadRequest, err
	}
	var query store.InsightsQuery
	if name != "" {
		// Refused by name before the project is looked up: a 404 then
		// tells only those who may view it that it does not exist.
		if !canView(r, name) {
			return InsightsView{}, http.StatusForbidden, errors.New(authz.Forbidden(authz.ViewProject, name))
		}
		p, err := s.store.ProjectByName(r.Context(), name)
		if err != nil {
			return InsightsView{}, 0, fmt.Errorf("project %q: %w", name, err)
		}
		query = win.Query(false, []int64{p.ID})
	} else {
		ids, all, err := s.viewable(r)
		if err != nil {
			return InsightsView{}, 0, err
		}
		query = win.Query(all, ids)
	}
	data, err := s.store.Insights(r.Context(), query)
	if err != nil {
		return InsightsView{}, 0, err
	}
	return insightsView(name, insights.Compute(win, data)), 0, nil
}
