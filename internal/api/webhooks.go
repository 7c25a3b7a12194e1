package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/store"
)

// webhook handles POST /hooks/{forge}/{project}. Nothing is stored for a
// request that is not authentic; the checks and their order are readHook's.
// An unknown project, or one without a webhook secret, is verified with a
// secret no forge holds and so gets the very answer a bad signature gets
// (a 404 would tell an outsider which project names exist); the server's
// log says which it was. A delivery is stored, with the build it asks for,
// before it is acknowledged; a delivery id seen before is acknowledged and
// builds nothing.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	forgeName, projectName := r.PathValue("forge"), r.PathValue("project")
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

	p, err := s.store.ProjectByName(r.Context(), projectName)
	secret, why := s.dummySecret, ""
	switch {
	case errors.Is(err, store.ErrNotFound):
		why = "unknown_project"
	case err != nil:
		s.storeError(w, err)
		return
	case p.WebhookSecret == "":
		why = "no_secret"
	default:
		secret = p.WebhookSecret
	}
	ev, ref := s.readHook(w, r, forgeName, secret)
	if ref == nil && why != "" {
		// Never: the dummy secret is random. But an unknown project
		// builds nothing, whatever the signature says.
		ref = &hookRefusal{status: http.StatusUnauthorized, code: "bad_signature", msg: forge.ErrSignature.Error()}
	}
	if ref != nil {
		switch {
		case why == "unknown_project" && ref.code == "bad_signature":
			ref.reason = why
			ref.detail = fmt.Sprintf("no project %q (answered as a bad signature)", clipLog(projectName, 128))
		case why == "no_secret" && ref.code == "bad_signature":
			ref.reason = why
			ref.detail = "project has no webhook secret, so it accepts no delivery (answered as a bad signature)"
		case why != "":
			ref.detail = ref.msg + " (and " + strings.ReplaceAll(why, "_", " ") + ")"
		}
		result = ref.reason
		s.refuseHook(w, r, hookFrom{forgeName, projectName}, ref)
		return
	}

	out := hookBuild(p, ev)
	if out.notOurs != "" {
		result = "not_found"
		s.log.Warn("webhook refused", "forge", forgeName, "project", clipLog(projectName, 128), "delivery", clipLog(ev.DeliveryID, 256),
			"reason", "other_repository", "detail", out.notOurs, "remote", r.RemoteAddr)
		writeError(w, http.StatusNotFound, "not_found", out.notOurs)
		return
	}
	b := out.build
	d := &store.Delivery{ID: ev.DeliveryID, Forge: ev.Forge, ProjectID: p.ID, Event: ev.Name, Result: out.result}
	dup, err := s.store.RecordDelivery(r.Context(), d, b)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if out.endPR > 0 && !dup {
		ids, err := s.store.CancelPullRequest(r.Context(), p.ID, out.endPR, out.endReason)
		if err != nil {
			s.storeError(w, err)
			return
		}
		for _, id := range ids {
			s.watch.notify(id)
		}
		s.sched.JobsChanged()
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
		if b.Approval == store.ApprovalWaiting {
			resp["approval"] = b.Approval
		}
		s.sched.BuildQueued()
		s.sched.JobsChanged() // superseded builds may have been canceled
		writeJSON(w, http.StatusCreated, resp)
	default:
		result = "ignored"
		writeJSON(w, http.StatusAccepted, resp)
	}
}
