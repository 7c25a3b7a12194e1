package fakegithub

import (
	"cmp"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Runner is a self-hosted runner the fake knows.
type Runner struct {
	ID         int64
	Name       string
	Owner      string
	Repo       string // "" for an organization's runner
	GroupID    int64
	Labels     []string
	Status     string // "offline" until it registers, then "online"
	Busy       bool
	JobID      int64 // the job it runs, while Busy
	Registered bool  // its JIT configuration was used
	CreatedAt  time.Time
}

// Runners returns every runner, by id.
func (s *Server) Runners() []Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Runner, 0, len(s.runners))
	for _, r := range s.runners {
		out = append(out, r.clone())
	}
	slices.SortFunc(out, func(a, b Runner) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Runner returns one runner.
func (s *Server) Runner(id int64) (Runner, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[id]
	if !ok {
		return Runner{}, false
	}
	return r.clone(), true
}

// Disconnect marks a runner offline, as GitHub does when a runner process
// dies without deregistering (a killed sandbox). It stays registered, and
// busy if it was: GitHub fails its job only much later.
func (s *Server) Disconnect(runnerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.runners[runnerID]; ok {
		r.Status = "offline"
	}
}

func (r *Runner) clone() Runner {
	c := *r
	c.Labels = slices.Clone(r.Labels)
	return c
}

// inScope reports whether the runner belongs to the request's scope: an
// organization's (no {repo}) or a repository's.
func (r *Runner) inScope(req *http.Request) bool {
	return r.Owner == req.PathValue("owner") && r.Repo == req.PathValue("repo")
}

// json is the runner as GitHub's REST API shows it. Called with s.mu held.
func (s *Server) runnerJSON(r *Runner) map[string]any {
	labels := make([]map[string]any, 0, len(r.Labels))
	for _, l := range r.Labels {
		id, ok := s.labelIDs[strings.ToLower(l)]
		if !ok {
			id = int64(len(s.labelIDs) + 1)
			s.labelIDs[strings.ToLower(l)] = id
		}
		labels = append(labels, map[string]any{"id": id, "name": l, "type": "custom"})
	}
	return map[string]any{
		"id":              r.ID,
		"name":            r.Name,
		"os":              "Linux",
		"status":          r.Status,
		"busy":            r.Busy,
		"ephemeral":       true,
		"runner_group_id": r.GroupID,
		"labels":          labels,
	}
}

// generateJITConfig is POST .../actions/runners/generate-jitconfig.
func (s *Server) generateJITConfig(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name          string   `json:"name"`
		RunnerGroupID *int64   `json:"runner_group_id"`
		Labels        []string `json:"labels"`
		WorkFolder    string   `json:"work_folder"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	switch {
	case strings.TrimSpace(req.Name) == "":
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"name\" wasn't supplied.")
		return
	case req.RunnerGroupID == nil:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"runner_group_id\" wasn't supplied.")
		return
	case *req.RunnerGroupID < 1:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nInvalid runner_group_id.")
		return
	case len(req.Labels) == 0:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"labels\" wasn't supplied or is empty.")
		return
	case len(req.Labels) > 100:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nNo more than 100 items are allowed for \"labels\".")
		return
	case slices.ContainsFunc(req.Labels, func(l string) bool { return strings.TrimSpace(l) == "" }):
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nLabels must not be empty.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.runners {
		if o.inScope(r) && strings.EqualFold(o.Name, req.Name) {
			writeError(w, http.StatusConflict, "Already exists - A runner with the name "+req.Name+" already exists.")
			return
		}
	}
	s.lastID.runner++
	run := &Runner{
		ID:        s.lastID.runner,
		Name:      req.Name,
		Owner:     r.PathValue("owner"),
		Repo:      r.PathValue("repo"),
		GroupID:   *req.RunnerGroupID,
		Labels:    slices.Clone(req.Labels),
		Status:    "offline",
		CreatedAt: s.now(),
	}
	s.runners[run.ID] = run
	secret := randomString(40)
	s.secrets[run.ID] = secret
	writeJSON(w, http.StatusCreated, map[string]any{
		"runner":             s.runnerJSON(run),
		"encoded_jit_config": s.encodeJIT(run, secret, req.WorkFolder),
	})
}

// The encoded JIT configuration has the shape of GitHub's: base64 of a JSON
// object whose ".runner" and ".credentials" entries are base64 of the
// files the runner would otherwise write at config time. Only the fake can
// use it: its credential is a secret the broker checks once.
type jitRunnerFile struct {
	AgentID    int64  `json:"agentId"`
	AgentName  string `json:"agentName"`
	PoolID     int64  `json:"poolId"`
	ServerURL  string `json:"serverUrl"`
	GitHubURL  string `json:"gitHubUrl"`
	WorkFolder string `json:"workFolder"`
	Ephemeral  bool   `json:"ephemeral"`
}

type jitCredentials struct {
	Scheme string `json:"scheme"`
	Data   struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
	} `json:"data"`
}

// encodeJIT builds a runner's JIT configuration. Called with s.mu held.
func (s *Server) encodeJIT(r *Runner, secret, workFolder string) string {
	if workFolder == "" {
		workFolder = "_work"
	}
	ghURL := "https://github.com/" + r.Owner
	if r.Repo != "" {
		ghURL += "/" + r.Repo
	}
	rf, _ := json.Marshal(jitRunnerFile{
		AgentID: r.ID, AgentName: r.Name, PoolID: r.GroupID,
		ServerURL: s.brokerURL, GitHubURL: ghURL, WorkFolder: workFolder, Ephemeral: true,
	})
	var cred jitCredentials
	cred.Scheme = "OAuth"
	cred.Data.ClientID = randomString(16)
	cred.Data.ClientSecret = secret
	cf, _ := json.Marshal(cred)
	enc := base64.StdEncoding.EncodeToString
	all, _ := json.Marshal(map[string]string{".runner": enc(rf), ".credentials": enc(cf)})
	return enc(all)
}

// decodeJIT reads the runner id and secret back from a JIT configuration.
func decodeJIT(encoded string) (id int64, secret string, err error) {
	dec := base64.StdEncoding.DecodeString
	all, err := dec(strings.TrimSpace(encoded))
	if err != nil {
		return 0, "", err
	}
	var files map[string]string
	if err := json.Unmarshal(all, &files); err != nil {
		return 0, "", err
	}
	rf, err1 := dec(files[".runner"])
	cf, err2 := dec(files[".credentials"])
	if err := errors.Join(err1, err2); err != nil {
		return 0, "", err
	}
	var runner jitRunnerFile
	var cred jitCredentials
	if err := errors.Join(json.Unmarshal(rf, &runner), json.Unmarshal(cf, &cred)); err != nil {
		return 0, "", err
	}
	if runner.AgentID == 0 || cred.Data.ClientSecret == "" {
		return 0, "", errors.New("no agentId or credential")
	}
	return runner.AgentID, cred.Data.ClientSecret, nil
}

// checkSecret compares a presented JIT credential with the runner's.
// Called with s.mu held.
func (s *Server) checkSecret(id int64, secret string) bool {
	want, ok := s.secrets[id]
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(secret)) == 1
}

// listRunners is GET .../actions/runners, paginated, with ?name= filter.
func (s *Server) listRunners(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("name")
	var list []*Runner
	for _, run := range s.runners {
		if run.inScope(r) && (name == "" || strings.EqualFold(name, run.Name)) {
			list = append(list, run)
		}
	}
	slices.SortFunc(list, func(a, b *Runner) int { return cmp.Compare(a.ID, b.ID) })
	lo, hi := s.paginate(w, r, len(list))
	page := make([]map[string]any, 0, hi-lo)
	for _, run := range list[lo:hi] {
		page = append(page, s.runnerJSON(run))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(list), "runners": page})
}

// scopedRunner finds the {id} runner of the request's scope, or answers 404.
// Called with s.mu held.
func (s *Server) scopedRunner(w http.ResponseWriter, r *http.Request) *Runner {
	id, ok := pathID(r, "id")
	run := s.runners[id]
	if !ok || run == nil || !run.inScope(r) {
		writeError(w, http.StatusNotFound, "Not Found")
		return nil
	}
	return run
}

// getRunner is GET .../actions/runners/{id}.
func (s *Server) getRunner(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if run := s.scopedRunner(w, r); run != nil {
		writeJSON(w, http.StatusOK, s.runnerJSON(run))
	}
}

// deleteRunner is DELETE .../actions/runners/{id}: 204, or 422 while the
// runner runs a job, as GitHub answers.
func (s *Server) deleteRunner(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.scopedRunner(w, r)
	if run == nil {
		return
	}
	if run.Busy {
		writeError(w, http.StatusUnprocessableEntity, "Bad request - Runner \""+run.Name+"\" is still running a job\"")
		return
	}
	s.removeRunner(run.ID)
	w.WriteHeader(http.StatusNoContent)
}

// removeRunner forgets a runner and its credential. Called with s.mu held.
func (s *Server) removeRunner(id int64) {
	delete(s.runners, id)
	delete(s.secrets, id)
}
