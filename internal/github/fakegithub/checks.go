package fakegithub

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Check run endpoints.
const (
	EndpointCreateCheckRun = "create-check-run" // POST  /repos/{owner}/{repo}/check-runs
	EndpointUpdateCheckRun = "update-check-run" // PATCH /repos/{owner}/{repo}/check-runs/{id}
	EndpointGetCheckRun    = "get-check-run"    // GET   /repos/{owner}/{repo}/check-runs/{id}
)

// checkOutputMax is GitHub's limit on a check run's output summary and
// text, in characters.
const checkOutputMax = 65535

// CheckRun is a check run as the fake holds it (and as each state change
// left it, in CheckRunEvents).
type CheckRun struct {
	ID          int64
	Repo        string // owner/name
	Name        string
	HeadSHA     string
	Status      string
	Conclusion  string
	StartedAt   time.Time
	CompletedAt time.Time
	DetailsURL  string
	ExternalID  string
	Title       string
	Summary     string
	Text        string
}

// CheckRunEvent is one accepted create or update of a check run: Run is
// the check run just after it.
type CheckRunEvent struct {
	Method string // "POST" (create) or "PATCH" (update)
	Run    CheckRun
	At     time.Time
}

var (
	checkStatuses    = []string{"queued", "in_progress", "completed"}
	checkConclusions = []string{"action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"}
)

// checkRunBody is the request of a create or an update: pointers tell a
// field left out from one sent empty.
type checkRunBody struct {
	Name        *string    `json:"name"`
	HeadSHA     *string    `json:"head_sha"`
	Status      *string    `json:"status"`
	Conclusion  *string    `json:"conclusion"`
	StartedAt   *time.Time `json:"started_at"`
	CompletedAt *time.Time `json:"completed_at"`
	DetailsURL  *string    `json:"details_url"`
	ExternalID  *string    `json:"external_id"`
	Output      *struct {
		Title   *string `json:"title"`
		Summary *string `json:"summary"`
		Text    *string `json:"text"`
	} `json:"output"`
}

// validationError writes GitHub's 422 for a field that breaks a rule:
// "Validation Failed" with an errors list.
func validationError(w http.ResponseWriter, field, code, message string) {
	e := map[string]any{"resource": "CheckRun", "field": field, "code": code}
	if message != "" {
		e["message"] = message
	}
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message":           "Validation Failed",
		"errors":            []any{e},
		"documentation_url": "https://docs.github.com/rest/checks/runs",
		"status":            "422",
	})
}

// schemaError writes GitHub's 422 for a request its schema refuses (a
// missing required field, a value outside an enum).
func schemaError(w http.ResponseWriter, message string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message":           "Invalid request.\n\n" + message,
		"documentation_url": "https://docs.github.com/rest/checks/runs",
		"status":            "422",
	})
}

// checkRunWriter refuses what is not an installation token: GitHub lets
// only GitHub Apps write check runs (a personal token gets 403). It
// returns false when it answered.
func (s *Server) checkRunWriter(w http.ResponseWriter, r *http.Request) bool {
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	s.mu.Lock()
	exp := s.tokens[tok]
	s.mu.Unlock()
	if exp.IsZero() { // AddToken's tokens never expire; installation tokens do
		writeJSON(w, http.StatusForbidden, map[string]any{
			"message":           "You must authenticate via a GitHub App.",
			"documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run",
			"status":            "403",
		})
		return false
	}
	return true
}

// decodeCheckRun reads and checks a create or update request as GitHub
// does, and applies it to run. It returns false when it answered.
func decodeCheckRun(w http.ResponseWriter, r *http.Request, run *CheckRun, create bool) bool {
	var b checkRunBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&b); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return false
	}
	if create {
		switch {
		case b.Name == nil:
			schemaError(w, `"name" wasn't supplied.`)
			return false
		case b.HeadSHA == nil:
			schemaError(w, `"head_sha" wasn't supplied.`)
			return false
		}
	}
	if b.Status != nil && !slices.Contains(checkStatuses, *b.Status) {
		schemaError(w, fmt.Sprintf(`For 'properties/status', %q is not one of %q.`, *b.Status, checkStatuses))
		return false
	}
	if b.Conclusion != nil && !slices.Contains(checkConclusions, *b.Conclusion) {
		schemaError(w, fmt.Sprintf(`For 'properties/conclusion', %q is not one of %q.`, *b.Conclusion, checkConclusions))
		return false
	}
	if b.Name != nil && strings.TrimSpace(*b.Name) == "" {
		validationError(w, "name", "missing_field", "")
		return false
	}
	if create && !fullSHA.MatchString(*b.HeadSHA) {
		validationError(w, "head_sha", "invalid", "No commit found for SHA: "+*b.HeadSHA)
		return false
	}
	if o := b.Output; o != nil {
		switch {
		case o.Title == nil:
			schemaError(w, `"title" wasn't supplied.`)
			return false
		case o.Summary == nil:
			schemaError(w, `"summary" wasn't supplied.`)
			return false
		case len([]rune(*o.Summary)) > checkOutputMax:
			validationError(w, "summary", "custom", fmt.Sprintf("Only %d characters are allowed; %d were supplied.", checkOutputMax, len([]rune(*o.Summary))))
			return false
		case o.Text != nil && len([]rune(*o.Text)) > checkOutputMax:
			validationError(w, "text", "custom", fmt.Sprintf("Only %d characters are allowed; %d were supplied.", checkOutputMax, len([]rune(*o.Text))))
			return false
		}
	}
	// A conclusion completes the run (GitHub sets the status); a run
	// completed needs one.
	status, conclusion := run.Status, run.Conclusion
	if b.Status != nil {
		status = *b.Status
	}
	if b.Conclusion != nil {
		conclusion, status = *b.Conclusion, "completed"
	}
	if status == "" {
		status = "queued"
	}
	if status == "completed" && conclusion == "" {
		validationError(w, "conclusion", "missing_field", "Conclusion is required when status is completed")
		return false
	}
	if status != "completed" {
		conclusion = ""
	}
	if create {
		run.Name, run.HeadSHA = *b.Name, *b.HeadSHA
	} else if b.Name != nil {
		run.Name = *b.Name
	}
	run.Status, run.Conclusion = status, conclusion
	if b.StartedAt != nil {
		run.StartedAt = *b.StartedAt
	}
	if b.CompletedAt != nil {
		run.CompletedAt = *b.CompletedAt
	}
	if b.DetailsURL != nil {
		run.DetailsURL = *b.DetailsURL
	}
	if b.ExternalID != nil {
		run.ExternalID = *b.ExternalID
	}
	if o := b.Output; o != nil {
		run.Title, run.Summary, run.Text = *o.Title, *o.Summary, ""
		if o.Text != nil {
			run.Text = *o.Text
		}
	}
	return true
}

func (s *Server) createCheckRun(w http.ResponseWriter, r *http.Request) {
	if !s.checkRunWriter(w, r) {
		return
	}
	run := CheckRun{Repo: r.PathValue("owner") + "/" + r.PathValue("repo")}
	if !decodeCheckRun(w, r, &run, true) {
		return
	}
	s.mu.Lock()
	now := s.now()
	if run.StartedAt.IsZero() {
		run.StartedAt = now.UTC().Truncate(time.Second)
	}
	if run.Status == "completed" && run.CompletedAt.IsZero() {
		run.CompletedAt = now.UTC().Truncate(time.Second)
	}
	s.lastID.checkRun++
	run.ID = s.lastID.checkRun
	s.checkRuns[run.ID] = &run
	s.checkEvents = append(s.checkEvents, CheckRunEvent{Method: http.MethodPost, Run: run, At: now})
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, checkRunJSON(s.URL(), &run))
}

func (s *Server) updateCheckRun(w http.ResponseWriter, r *http.Request) {
	if !s.checkRunWriter(w, r) {
		return
	}
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	repo := r.PathValue("owner") + "/" + r.PathValue("repo")
	s.mu.Lock()
	cur, ok := s.checkRuns[id]
	var run CheckRun
	if ok {
		run = *cur
	}
	s.mu.Unlock()
	if !ok || !strings.EqualFold(run.Repo, repo) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if !decodeCheckRun(w, r, &run, false) {
		return
	}
	s.mu.Lock()
	now := s.now()
	if run.Status == "completed" && run.CompletedAt.IsZero() {
		run.CompletedAt = now.UTC().Truncate(time.Second)
	}
	*s.checkRuns[id] = run
	s.checkEvents = append(s.checkEvents, CheckRunEvent{Method: http.MethodPatch, Run: run, At: now})
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, checkRunJSON(s.URL(), &run))
}

func (s *Server) getCheckRun(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	run, ok := s.checkRuns[id]
	var c CheckRun
	if ok {
		c = *run
	}
	s.mu.Unlock()
	if !ok || !strings.EqualFold(c.Repo, r.PathValue("owner")+"/"+r.PathValue("repo")) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, checkRunJSON(s.URL(), &c))
}

func checkRunJSON(base string, r *CheckRun) map[string]any {
	out := map[string]any{
		"id": r.ID, "name": r.Name, "head_sha": r.HeadSHA, "status": r.Status, "conclusion": nil,
		"external_id": r.ExternalID, "details_url": r.DetailsURL,
		"url":        base + "repos/" + r.Repo + "/check-runs/" + strconv.FormatInt(r.ID, 10),
		"html_url":   "https://github.com/" + r.Repo + "/runs/" + strconv.FormatInt(r.ID, 10),
		"started_at": r.StartedAt.UTC().Format(time.RFC3339), "completed_at": nil,
		"output": map[string]any{"title": r.Title, "summary": r.Summary, "text": r.Text, "annotations_count": 0},
	}
	if r.Conclusion != "" {
		out["conclusion"] = r.Conclusion
	}
	if !r.CompletedAt.IsZero() {
		out["completed_at"] = r.CompletedAt.UTC().Format(time.RFC3339)
	}
	return out
}

// CheckRuns returns the check runs as they are now, by id.
func (s *Server) CheckRuns() []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CheckRun, 0, len(s.checkRuns))
	for _, r := range s.checkRuns {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b CheckRun) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// CheckRunEvents returns every accepted create and update, in order.
func (s *Server) CheckRunEvents() []CheckRunEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CheckRunEvent(nil), s.checkEvents...)
}
