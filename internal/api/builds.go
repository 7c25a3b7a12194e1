package api

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/store"
)

var (
	shaPattern = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)
	refPattern = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,255}$`)
)

// TriggerRequest starts a build through the API. With no commit, the planner
// builds the branch's head (the project's default branch when none is given).
type TriggerRequest struct {
	Branch string `json:"branch,omitempty"`
	Commit string `json:"commit,omitempty"`
}

func (s *Server) triggerBuild(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	var req TriggerRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Branch == "" {
		req.Branch = p.DefaultBranch
	}
	if !refPattern.MatchString(req.Branch) || forge.CheckRef("refs/heads/"+req.Branch) != nil {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("branch %q: invalid branch name", req.Branch))
		return
	}
	if req.Commit != "" && !shaPattern.MatchString(req.Commit) {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("commit %q: want a full 40-character hex SHA", req.Commit))
		return
	}
	b := &store.Build{ProjectID: p.ID, Trigger: "api", Event: store.EventAPI, Ref: "refs/heads/" + req.Branch, Branch: req.Branch, Commit: req.Commit}
	audit := s.audited(r, "build.trigger", "project:"+p.Name, func() any {
		return map[string]any{"build": b.ID, "number": b.Number, "branch": b.Branch, "commit": b.Commit}
	})
	if err := audit.CreateBuild(r.Context(), b); err != nil {
		s.storeError(w, err)
		return
	}
	s.sched.BuildQueued()
	s.sched.JobsChanged()
	writeJSON(w, http.StatusCreated, buildView(b))
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) {
	f, status, err := s.buildFilter(r)
	if err != nil {
		s.filterError(w, status, err)
		return
	}
	bs, err := s.store.ListBuilds(r.Context(), f)
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, buildViews(bs))
}

// buildFilter reads a builds list's query (project, branch, status,
// event, trigger, pull_request, before, limit) into the store's filter,
// kept to the projects r's principal may view. On an error, status is
// the answer's: 400 for a bad value, 403 for a project not to be seen,
// 0 for the store's error.
func (s *Server) buildFilter(r *http.Request) (f store.BuildFilter, status int, err error) {
	q := r.URL.Query()
	f = store.BuildFilter{Status: store.Status(q.Get("status")), Branch: q.Get("branch"), Event: q.Get("event"), Trigger: q.Get("trigger")}
	if f.Status != "" && !slices.Contains(store.AllStatuses, f.Status) {
		valid := make([]string, len(store.AllStatuses))
		for i, st := range store.AllStatuses {
			valid[i] = string(st)
		}
		return f, http.StatusBadRequest, fmt.Errorf("status %q: want one of %s", clipLog(string(f.Status), 64), strings.Join(valid, ", "))
	}
	if name := q.Get("project"); name != "" {
		p, err := s.store.ProjectByName(r.Context(), name)
		if err != nil {
			return f, 0, fmt.Errorf("project %q: %w", name, err)
		}
		if !canView(r, p.Name) {
			return f, http.StatusForbidden, errors.New(authz.Forbidden(authz.ViewProject, p.Name))
		}
		f.ProjectID = p.ID
	}
	ids, all, err := s.viewable(r)
	if err != nil {
		return f, 0, err
	}
	f.OnlyProjects, f.ProjectIDs = !all, ids
	for key, dst := range map[string]*int64{"before": &f.BeforeID} {
		if v := q.Get(key); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return f, http.StatusBadRequest, errors.New(key + ": want an integer")
			}
			*dst = n
		}
	}
	if v := q.Get("pull_request"); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "#"))
		if err != nil || n <= 0 {
			return f, http.StatusBadRequest, errors.New("pull_request: want a request's number")
		}
		f.PullRequest = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return f, http.StatusBadRequest, errors.New("limit: want a positive integer")
		}
		f.Limit = n
	}
	return f, 0, nil
}

// filterError answers buildFilter's error.
func (s *Server) filterError(w http.ResponseWriter, status int, err error) {
	switch status {
	case 0:
		s.storeError(w, err)
	case http.StatusForbidden:
		writeError(w, status, "forbidden", err.Error())
	default:
		writeError(w, status, "invalid", err.Error())
	}
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, buildView(b))
}

func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	reason := "canceled through the API"
	if principalOf(r) != nil {
		reason = "canceled by " + actorName(r)
	}
	if err := s.audited(r, "build.cancel", buildTarget(id), nil).CancelBuild(r.Context(), id, reason); err != nil {
		s.storeError(w, err)
		return
	}
	s.watch.notify(id)
	b, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, buildView(b))
}

// retryBuild starts a new build of the same commit.
func (s *Server) retryBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	old, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if !old.Status.Terminal() {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("build %d is %s: only a finished build can be retried", id, old.Status))
		return
	}
	b := &store.Build{ProjectID: old.ProjectID, Trigger: "retry", Event: old.Event, Ref: old.Ref, Branch: old.Branch, Commit: old.Commit, Message: old.Message, Author: old.Author,
		PullRequest: old.PullRequest}
	if old.Approval != "" {
		// An admin asked for it again: that is an approval (a rejected
		// build retried is approved now).
		b.Approval, b.ApprovedBy = store.ApprovalApproved, actorName(r)
	}
	audit := s.audited(r, "build.retry", buildTarget(id), func() any {
		return map[string]any{"build": b.ID, "number": b.Number, "approved": b.Approval == store.ApprovalApproved}
	})
	if err := audit.CreateBuild(r.Context(), b); err != nil {
		s.storeError(w, err)
		return
	}
	s.sched.BuildQueued()
	writeJSON(w, http.StatusCreated, buildView(b))
}

// buildTarget is a build as the audit log names it.
func buildTarget(id int64) string { return "build:" + strconv.FormatInt(id, 10) }

// approveBuild lets a fork's build that waits for approval run.
func (s *Server) approveBuild(w http.ResponseWriter, r *http.Request) {
	s.decideBuild(w, r, true)
}

// rejectBuild cancels a fork's build that waits for approval.
func (s *Server) rejectBuild(w http.ResponseWriter, r *http.Request) {
	s.decideBuild(w, r, false)
}

func (s *Server) decideBuild(w http.ResponseWriter, r *http.Request, approve bool) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	by := actorName(r)
	var err error
	if approve {
		err = s.audited(r, "build.approve", buildTarget(id), nil).ApproveBuild(r.Context(), id, by)
	} else {
		err = s.audited(r, "build.reject", buildTarget(id), nil).RejectBuild(r.Context(), id, by)
	}
	if errors.Is(err, store.ErrNotWaiting) {
		writeError(w, http.StatusConflict, "not_waiting", err.Error())
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	s.log.Info("build approval decided", "build", id, "approved", approve, "by", by)
	s.watch.notify(id)
	if approve {
		s.sched.BuildQueued()
	} else {
		s.sched.JobsChanged()
	}
	b, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, buildView(b))
}
