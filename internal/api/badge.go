package api

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/store"
)

// BadgeLabel is the left half of every status badge.
const BadgeLabel = "build"

// badgeState is what a badge says of a branch, and in which colour.
type badgeState struct{ text, colour string }

// badgeOf is a branch's badge: its newest finished build's result; with
// none finished, running while one is in progress, else no builds.
func badgeOf(bs store.BranchStatus) badgeState {
	switch bs.Finished {
	case store.StatusSuccess:
		return badgeState{"passing", "#4c1"}
	case store.StatusFailure:
		return badgeState{"failing", "#e05d44"}
	case store.StatusTimedOut:
		return badgeState{"timed out", "#e05d44"}
	case store.StatusError:
		return badgeState{"error", "#fe7d37"}
	case store.StatusCanceled:
		return badgeState{"canceled", "#9f9f9f"}
	}
	if bs.Pending {
		return badgeState{"running", "#007ec6"}
	}
	return badgeState{"no builds", "#9f9f9f"}
}

// badgeRoute is GET /badge/{project}.svg?branch=B: the project's status
// badge, for a README. A public badge (the project's badge setting) is
// shown to anyone; a private one only to a principal who may view the
// project (a token or a session, the cookie too). An unknown project and
// a private badge the caller may not see get the same 404, so the answer
// does not tell whether a private project exists.
func (s *Server) badgeRoute(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".svg")
	notFound := func() {
		writeError(w, http.StatusNotFound, "not_found", "no such badge")
	}
	if !ok || name == "" {
		notFound()
		return
	}
	p, err := s.store.ProjectByName(r.Context(), name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			notFound()
		} else {
			s.storeError(w, err)
		}
		return
	}
	public := p.Badge == store.BadgePublic
	if !public {
		pr, refusal, err := s.identify(r)
		if err != nil {
			s.storeError(w, err)
			return
		}
		if refusal != nil || !authz.Allowed(pr.authz, authz.ViewProject, p.Name) {
			notFound()
			return
		}
	}
	branch := r.URL.Query().Get("branch")
	if branch == "" {
		branch = p.DefaultBranch
	}
	if len(branch) > 255 || !utf8.ValidString(branch) {
		writeError(w, http.StatusBadRequest, "invalid", "branch: at most 255 bytes of UTF-8")
		return
	}
	bs, err := s.store.BranchStatus(r.Context(), p.ID, branch)
	if err != nil {
		s.storeError(w, err)
		return
	}
	svg := badgeSVG(p.Name, branch, badgeOf(bs))
	sum := sha256.Sum256([]byte(svg))
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	h := w.Header()
	// Forges' image proxies (GitHub's camo) keep an image as long as its
	// headers let them: no-cache makes them ask again each time, and the
	// ETag lets that ask be a 304.
	if public {
		h.Set("Cache-Control", "no-cache, max-age=0")
	} else {
		h.Set("Cache-Control", "private, no-cache, max-age=0")
		h.Set("Vary", "Authorization, Cookie")
	}
	h.Set("ETag", etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "image/svg+xml; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write([]byte(svg))
}

// etagMatch reports whether an If-None-Match header names etag (or *).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// badgeSVG draws a shields-style badge: the label on grey, the state on
// its colour. Widths are estimated from the text (Verdana 11px is about
// 7px a character); project and branch appear only in the title, escaped.
func badgeSVG(project, branch string, st badgeState) string {
	lw := 7*utf8.RuneCountInString(BadgeLabel) + 12
	sw := 7*utf8.RuneCountInString(st.text) + 12
	total := lw + sw
	title := html.EscapeString(fmt.Sprintf("%s (%s): %s %s", project, branch, BadgeLabel, st.text))
	label, text := html.EscapeString(BadgeLabel), html.EscapeString(st.text)
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%[1]d" height="20" role="img" aria-label="%[5]s: %[6]s">`+
		`<title>%[4]s</title>`+
		`<linearGradient id="s" x2="0" y2="100%%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>`+
		`<clipPath id="r"><rect width="%[1]d" height="20" rx="3" fill="#fff"/></clipPath>`+
		`<g clip-path="url(#r)"><rect width="%[2]d" height="20" fill="#555"/><rect x="%[2]d" width="%[3]d" height="20" fill="%[7]s"/><rect width="%[1]d" height="20" fill="url(#s)"/></g>`+
		`<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">`+
		`<text x="%[8]d" y="14">%[5]s</text><text x="%[9]d" y="14">%[6]s</text></g></svg>`,
		total, lw, sw, title, label, text, st.colour, lw/2, lw+sw/2)
}
