package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/store"
)

// webhook handles POST /hooks/{forge}/{project}. Checks run in this order so
// that nothing is stored for a request that is not authentic: project known
// (404), body within the limit (413), signature (401), payload (400). A
// delivery is stored, with the build it asks for, before it is acknowledged;
// a delivery id seen before is acknowledged and builds nothing.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	forgeName := r.PathValue("forge")
	result := "error"
	// The label is one of a fixed set: a path segment from an
	// unauthenticated request must not mint new metric series.
	label := forgeName
	switch label {
	case "github", "gitlab", "gitea", "forgejo":
	default:
		label = "unknown"
	}
	defer func() { s.metrics.WebhookDeliveries.WithLabelValues(label, result).Inc() }()

	p, err := s.store.ProjectByName(r.Context(), r.PathValue("project"))
	if errors.Is(err, store.ErrNotFound) {
		result = "unknown_project"
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no project %q", r.PathValue("project")))
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	ev, res := s.readHook(w, r, forgeName, p.WebhookSecret)
	if ev == nil {
		result = res
		return
	}

	d := &store.Delivery{ID: ev.DeliveryID, Forge: ev.Forge, ProjectID: p.ID, Event: ev.Name}
	var b *store.Build
	switch {
	case ev.Kind == forge.KindPing:
		d.Result = "ping"
	case ev.Kind == forge.KindPush && ev.Push.Deleted:
		d.Result = "ignored: ref deleted"
	case ev.Kind == forge.KindPush:
		d.Result = "build"
		// The clone URL comes from the project, never from the payload: a
		// delivery may not point Kiln at another repository.
		b = &store.Build{ProjectID: p.ID, Trigger: "push", Forge: ev.Forge, DeliveryID: ev.DeliveryID,
			Ref: ev.Push.Ref, Branch: ev.Push.Branch, Commit: ev.Push.Commit, Message: ev.Push.Message, Author: ev.Push.Author}
	default:
		d.Result = "ignored: event " + ev.Name
	}
	dup, err := s.store.RecordDelivery(r.Context(), d, b)
	if err != nil {
		s.storeError(w, err)
		return
	}
	resp := map[string]any{"delivery": d.ID, "result": d.Result}
	if d.BuildID != nil {
		resp["build_id"] = *d.BuildID
	}
	switch {
	case dup:
		result = "duplicate"
		resp["duplicate"] = true
		writeJSON(w, http.StatusOK, resp)
	case ev.Kind == forge.KindPing:
		result = "ping"
		resp["message"] = "pong"
		writeJSON(w, http.StatusOK, resp)
	case b != nil:
		result = "build"
		resp["number"] = b.Number
		s.sched.BuildQueued()
		s.sched.JobsChanged() // superseded builds may have been canceled
		writeJSON(w, http.StatusCreated, resp)
	default:
		result = "ignored"
		writeJSON(w, http.StatusAccepted, resp)
	}
}

// readHook reads a webhook's body (413 past the limit) and verifies and
// parses it (401 bad signature, 400 malformed, 404 unknown forge). On a
// refusal it has answered, and returns nil and the result for metrics.
func (s *Server) readHook(w http.ResponseWriter, r *http.Request, forgeName, secret string) (*forge.Event, string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxWebhookBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("webhook body over the limit of %d bytes", s.cfg.MaxWebhookBody))
			return nil, "too_large"
		}
		writeError(w, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		return nil, "bad_request"
	}
	ev, err := forge.Parse(forgeName, r.Header, body, secret)
	switch {
	case errors.Is(err, forge.ErrSignature):
		writeError(w, http.StatusUnauthorized, "bad_signature", err.Error())
		return nil, "bad_signature"
	case errors.Is(err, forge.ErrMalformed):
		writeError(w, http.StatusBadRequest, "malformed", err.Error())
		return nil, "malformed"
	case err != nil:
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return nil, "unknown_forge"
	}
	return ev, ""
}
