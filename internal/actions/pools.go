package actions

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/store"
)

// DefaultCommand starts the runner of the official actions/runner layout.
// The runner reads its JIT configuration from ACTIONS_RUNNER_INPUT_JITCONFIG
// (how it takes --jitconfig from the environment).
const DefaultCommand = "exec /runner/run.sh"

// SelfHosted is the label every pool must carry: GitHub gives it to every
// self-hosted runner, and workflows ask for it.
const SelfHosted = "self-hosted"

// MaxRunnersLimit bounds a pool's max_runners.
const MaxRunnersLimit = 1000

var (
	poolName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	// ghName is an owner or repository name as GitHub allows them.
	ghName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)
)

// FieldError is an invalid field of a pool.
type FieldError struct{ Field, Message string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// PreparePool fills a new pool's defaults (runner group 1, the default
// command, a timeout past the reaper's maximum lifetime) and validates it;
// the error joins one *FieldError per invalid field.
func (s *Service) PreparePool(p *store.Pool) error {
	if p.RunnerGroupID == 0 {
		p.RunnerGroupID = github.DefaultRunnerGroupID
	}
	if strings.TrimSpace(p.Command) == "" {
		p.Command = DefaultCommand
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = int((s.cfg.MaxLifetime + 10*time.Minute) / time.Second)
	}
	p.Labels = dedupFold(p.Labels)
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{field, fmt.Sprintf(format, args...)})
	}
	if !poolName.MatchString(p.Name) {
		bad("name", "%q: want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63", p.Name)
	}
	switch {
	case len(p.Labels) == 0:
		bad("labels", "required: the runs-on labels the pool serves, with %q", SelfHosted)
	case len(p.Labels) > forge.MaxWorkflowJobLabels:
		bad("labels", "at most %d", forge.MaxWorkflowJobLabels)
	case !slices.ContainsFunc(p.Labels, func(l string) bool { return strings.EqualFold(l, SelfHosted) }):
		bad("labels", "must include %q (GitHub gives it to every self-hosted runner, and workflows ask for it)", SelfHosted)
	}
	for _, l := range p.Labels {
		if strings.TrimSpace(l) == "" || strings.ContainsAny(l, ",\n") || len(l) > 256 {
			bad("labels", "invalid label %q", l)
		}
	}
	if strings.TrimSpace(p.Image) == "" {
		bad("image", "required: the runner image (the runner binary baked in)")
	}
	if p.CPUs < 0 || p.MemoryBytes < 0 || p.Pids < 0 {
		bad("resources", "cpus, memory_bytes and pids must not be negative")
	}
	if p.MaxRunners < 1 || p.MaxRunners > MaxRunnersLimit {
		bad("max_runners", "must be 1 to %d, got %d", MaxRunnersLimit, p.MaxRunners)
	}
	if p.Warm < 0 || p.Warm > p.MaxRunners {
		bad("warm", "must be 0 to max_runners (%d), got %d", p.MaxRunners, p.Warm)
	}
	if !ghName.MatchString(p.Owner) {
		bad("owner", "%q: want a GitHub organization or user name", p.Owner)
	}
	if p.Repo != "" && !ghName.MatchString(p.Repo) {
		bad("repo", "%q: want a repository name (without the owner), or nothing for an organization pool", p.Repo)
	}
	switch {
	case p.RunnerGroupID < 1:
		bad("runner_group_id", "must be positive")
	case p.Repo != "" && p.RunnerGroupID != github.DefaultRunnerGroupID:
		bad("runner_group_id", "a repository's runners are always in the default group (1)")
	}
	switch {
	case s.cfg.GitHub.App() && p.InstallationID <= 0:
		bad("installation_id", "required with a GitHub App: the installation on %s", p.Owner)
	case !s.cfg.GitHub.App() && p.InstallationID != 0:
		bad("installation_id", "only with a GitHub App (Kiln uses a token)")
	}
	for _, l := range p.AgentLabels {
		if strings.TrimSpace(l) == "" {
			bad("agent_labels", "empty label")
		}
	}
	if p.TimeoutSeconds < 60 {
		bad("timeout_seconds", "at least 60")
	}
	return errors.Join(errs...)
}

// dedupFold drops empty labels and repeats that differ only in case.
func dedupFold(labels []string) []string {
	var out []string
	for _, l := range labels {
		l = strings.TrimSpace(l)
		if l != "" && !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, l) }) {
			out = append(out, l)
		}
	}
	return out
}

// installation is the installation a job's delivery names, as Kiln uses
// it: with a token, installations do not matter (0).
func (s *Service) installation(id int64) int64 {
	if !s.cfg.GitHub.App() {
		return 0
	}
	return id
}

// knownInstallation reports whether some pool is of that installation.
func knownInstallation(pools []*store.Pool, installation int64) bool {
	return slices.ContainsFunc(pools, func(p *store.Pool) bool { return p.InstallationID == installation })
}

// match returns the pool that serves a job of owner/repo asking for
// labels, or nil. A pool serves it when it is of the same installation,
// its scope holds the repository, and every label the job asks for is
// among the pool's (case-insensitively). Of several, a repository's pool
// wins over an organization's, then the one with the fewest labels (the
// closest fit), then the first by name.
func match(pools []*store.Pool, installation int64, owner, repo string, labels []string) *store.Pool {
	if len(labels) == 0 {
		return nil
	}
	var best *store.Pool
	for _, p := range pools {
		if p.InstallationID != installation || !strings.EqualFold(p.Owner, owner) || (p.Repo != "" && !strings.EqualFold(p.Repo, repo)) {
			continue
		}
		if !slices.ContainsFunc(p.Labels, func(l string) bool { return strings.EqualFold(l, SelfHosted) }) {
			continue
		}
		if slices.ContainsFunc(labels, func(want string) bool {
			return !slices.ContainsFunc(p.Labels, func(have string) bool { return strings.EqualFold(have, want) })
		}) {
			continue
		}
		if best == nil || better(p, best) {
			best = p
		}
	}
	return best
}

func better(a, b *store.Pool) bool {
	if (a.Repo != "") != (b.Repo != "") {
		return a.Repo != ""
	}
	return cmp.Or(cmp.Compare(len(a.Labels), len(b.Labels)), cmp.Compare(a.Name, b.Name)) < 0
}

// runnerSpec is the runner job of a pool: one step, the pool's command, in
// the pool's image. The JIT configuration is not in it: it is made at
// claim time and travels only as a secret.
func runnerSpec(p *store.Pool) ([]byte, []string, error) {
	spec := pipeline.JobSpec{
		Name:           "runner",
		Image:          p.Image,
		Env:            map[string]string{"KILN_POOL": p.Name},
		Steps:          []pipeline.StepSpec{{Name: "runner", Run: p.Command}},
		TimeoutSeconds: p.TimeoutSeconds,
		RunsOn:         p.AgentLabels,
		Resources:      pipeline.Resources{CPUs: p.CPUs, MemoryBytes: p.MemoryBytes, Pids: p.Pids},
	}
	b, err := json.Marshal(spec)
	return b, []string{"runner"}, err
}

// launchSpec says how to make the runner job of job w in pool p.
func (s *Service) launchSpec(p *store.Pool, w *store.WorkflowJob, defaultBranch string) (*store.LaunchSpec, error) {
	spec, steps, err := runnerSpec(p)
	if err != nil {
		return nil, err
	}
	title := w.Name
	if w.Workflow != "" {
		title = w.Workflow + " / " + w.Name
	}
	return &store.LaunchSpec{
		Pool:          p,
		CloneURL:      s.repoURL(w.Owner, w.Repo, w.HTMLURL) + ".git",
		ProjectName:   ProjectName(w.Owner, w.Repo),
		DefaultBranch: defaultBranch,
		Spec:          spec,
		StepNames:     steps,
		MaxAttempts:   s.cfg.MaxAttempts,
		Message:       strings.TrimSpace(fmt.Sprintf("%s (GitHub job %d) %s", title, w.ID, w.HTMLURL)),
		Decide:        s.launchPolicy(p),
	}, nil
}

// warmGrace is how long a new queued job of pool p may wait for one of
// its idle warm runners (0: the pool keeps none).
func (s *Service) warmGrace(p *store.Pool) time.Duration {
	if p.Warm <= 0 {
		return 0
	}
	return s.cfg.WarmGrace
}

// repoURL is the repository's web URL: taken from the job's html_url when
// it names the repository (github.com or GHES), else github.com's, or the
// GHES host of the API URL.
func (s *Service) repoURL(owner, repo, htmlURL string) string {
	path := "/" + owner + "/" + repo
	if u, err := url.Parse(htmlURL); err == nil && u.Host != "" && strings.HasPrefix(strings.ToLower(u.Path), strings.ToLower(path+"/")) {
		return u.Scheme + "://" + u.Host + u.Path[:len(path)]
	}
	if u, err := url.Parse(s.cfg.GitHub.BaseURL); err == nil && u.Host != "" && u.Host != "api.github.com" {
		return u.Scheme + "://" + u.Host + path
	}
	return "https://github.com" + path
}

var projectUnsafe = regexp.MustCompile(`[^a-z0-9._-]+`)

// ProjectName is the name of the project Kiln makes for a repository's
// runner builds: gh-owner-repo, lower-case, at most 63 characters.
func ProjectName(owner, repo string) string {
	n := "gh-" + projectUnsafe.ReplaceAllString(strings.ToLower(owner+"-"+repo), "-")
	return strings.TrimRight(n[:min(len(n), 63)], "-.")
}
