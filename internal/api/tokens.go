package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/kilnci/kiln/internal/store"
)

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.store.ListTokens(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]TokenView, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string          `json:"name"`
		Kind store.TokenKind `json:"kind"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Kind == "" {
		req.Kind = store.TokenAdmin
	}
	if req.Kind != store.TokenAdmin && req.Kind != store.TokenAgent {
		writeError(w, http.StatusBadRequest, "invalid", `kind: want "admin" or "agent"`)
		return
	}
	if req.Name == "" {
		writeError(w, http.StatusBadRequest, "invalid", "name: required")
		return
	}
	t, plain, err := s.store.CreateToken(r.Context(), req.Name, req.Kind)
	if err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "token.create", "token:"+strconv.FormatInt(t.ID, 10), map[string]any{"name": t.Name, "kind": t.Kind})
	writeJSON(w, http.StatusCreated, map[string]any{"token": tokenView(t), "secret": plain})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if cur, _ := r.Context().Value(ctxKey{}).(*store.Token); cur != nil && cur.ID == id {
		writeError(w, http.StatusBadRequest, "invalid", "a token cannot revoke itself (id "+strconv.FormatInt(id, 10)+"); use another admin token")
		return
	}
	if err := s.store.RevokeToken(r.Context(), id); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "token.revoke", "token:"+strconv.FormatInt(id, 10), nil)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	as, err := s.store.ListAgents(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]AgentView, 0, len(as))
	now := time.Now()
	for _, a := range as {
		v := agentView(a)
		v.State, v.QuarantinedUntil = s.sched.AgentState(*a, now)
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}
