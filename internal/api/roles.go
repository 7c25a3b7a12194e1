package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/store"
)

// RoleBindingView is a role binding as /api/v1/roles shows it: Role on
// Project ("*": every project) for one user (subject or email) or one
// group of the provider's groups claim.
type RoleBindingView struct {
	Project   string    `json:"project"`
	User      string    `json:"user,omitempty"`
	Group     string    `json:"group,omitempty"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// RoleRequest sets (PUT /api/v1/roles) a binding: one of User and Group.
type RoleRequest struct {
	Project string `json:"project"`
	User    string `json:"user,omitempty"`
	Group   string `json:"group,omitempty"`
	Role    string `json:"role"`
}

func roleView(b store.RoleBinding) RoleBindingView {
	v := RoleBindingView{Project: b.Project, Role: b.Role, CreatedAt: b.CreatedAt}
	if b.Kind == store.BindGroup {
		v.Group = b.Subject
	} else {
		v.User = b.Subject
	}
	return v
}

// bindingOf checks a binding's project and subject: a project name or
// "*", and one of user and group.
func bindingOf(project, user, group string) (*store.RoleBinding, error) {
	if project == "" {
		return nil, errors.New(`project: required (a project's name, or "*" for every project)`)
	}
	switch {
	case user != "" && group != "":
		return nil, errors.New("give one of user and group, not both")
	case user != "":
		return &store.RoleBinding{Project: project, Kind: store.BindUser, Subject: user}, nil
	case group != "":
		return &store.RoleBinding{Project: project, Kind: store.BindGroup, Subject: group}, nil
	}
	return nil, errors.New("user or group: required (a user's email or subject, or a group of the provider's groups claim)")
}

func bindingTarget(b *store.RoleBinding) string {
	return "role:" + b.Project + "/" + b.Kind + ":" + b.Subject
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	bs, err := s.store.ListRoleBindings(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]RoleBindingView, 0, len(bs))
	for _, b := range bs {
		out = append(out, roleView(b))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) setRole(w http.ResponseWriter, r *http.Request) {
	var req RoleRequest
	if !decode(w, r, &req) {
		return
	}
	b, err := bindingOf(req.Project, req.User, req.Group)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	role, err := authz.ParseRole(req.Role)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	b.Role = role.String()
	if err := s.store.SetRoleBinding(r.Context(), b); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "role.set", bindingTarget(b), map[string]any{"project": b.Project, "kind": b.Kind, "subject": b.Subject, "role": b.Role})
	writeJSON(w, http.StatusOK, roleView(*b))
}

// removeRole handles DELETE /api/v1/roles?project=&user= (or group=).
func (s *Server) removeRole(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	b, err := bindingOf(q.Get("project"), q.Get("user"), q.Get("group"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if err := s.store.RemoveRoleBinding(r.Context(), b.Project, b.Kind, b.Subject); err != nil {
		s.storeError(w, fmt.Errorf("%s %q on %q: %w", b.Kind, b.Subject, b.Project, err))
		return
	}
	s.record(r, "role.remove", bindingTarget(b), map[string]any{"project": b.Project, "kind": b.Kind, "subject": b.Subject})
	w.WriteHeader(http.StatusNoContent)
}
