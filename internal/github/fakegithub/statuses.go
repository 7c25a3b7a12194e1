package fakegithub

import (
	"encoding/json"
	"net/http"
	"regexp"
	"time"
)

// EndpointCreateStatus is POST /repos/{owner}/{repo}/statuses/{sha}.
const EndpointCreateStatus = "create-status"

// CommitStatus is a commit status the fake accepted.
type CommitStatus struct {
	Repo        string // owner/name
	SHA         string
	State       string
	Context     string
	TargetURL   string
	Description string
	At          time.Time
	// Remote is the sender's IP address (see Call.Remote).
	Remote string
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// createStatus checks the request as GitHub does (a known state, a
// description of at most 140 characters, a full commit id; 422 otherwise)
// and records it (see Statuses).
func (s *Server) createStatus(w http.ResponseWriter, r *http.Request) {
	var body struct {
		State       *string `json:"state"`
		Context     string  `json:"context"`
		TargetURL   string  `json:"target_url"`
		Description string  `json:"description"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	if body.State == nil {
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"state\" wasn't supplied.")
		return
	}
	switch *body.State {
	case "error", "failure", "pending", "success":
	default:
		writeError(w, http.StatusUnprocessableEntity, "Validation Failed: state is not included in the list")
		return
	}
	if len([]rune(body.Description)) > 140 {
		writeError(w, http.StatusUnprocessableEntity, "Validation Failed: description is too long (maximum is 140 characters)")
		return
	}
	sha := r.PathValue("sha")
	if !fullSHA.MatchString(sha) {
		writeError(w, http.StatusUnprocessableEntity, "No commit found for SHA: "+sha)
		return
	}
	if body.Context == "" {
		body.Context = "default"
	}
	s.mu.Lock()
	st := CommitStatus{Repo: r.PathValue("owner") + "/" + r.PathValue("repo"), SHA: sha, State: *body.State, Context: body.Context,
		TargetURL: body.TargetURL, Description: body.Description, At: s.now(), Remote: remoteIP(r)}
	s.statuses = append(s.statuses, st)
	id := len(s.statuses)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "state": st.State, "context": st.Context, "description": st.Description, "target_url": st.TargetURL})
}

// Statuses returns the commit statuses accepted so far, in order.
func (s *Server) Statuses() []CommitStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CommitStatus(nil), s.statuses...)
}
