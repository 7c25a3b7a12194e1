package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	gh "github.com/google/go-github/v92/github"
)

// DefaultRunnerGroupID is the "Default" runner group: the only group a
// repository's runners can be in.
const DefaultRunnerGroupID = 1

// JITConfig is a just-in-time runner configuration: the runner it
// registered (offline until it starts) and the opaque blob the runner
// binary takes with --jitconfig. The blob is a credential: String, GoString
// and LogValue redact it, so printing or logging a JITConfig never leaks it.
type JITConfig struct {
	RunnerID         int64
	RunnerName       string
	EncodedJITConfig string
}

func (j JITConfig) String() string {
	return fmt.Sprintf("JITConfig{RunnerID: %d, RunnerName: %q, EncodedJITConfig: [redacted]}", j.RunnerID, j.RunnerName)
}

func (j JITConfig) GoString() string { return j.String() }

func (j JITConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("runner_id", j.RunnerID), slog.String("runner_name", j.RunnerName))
}

// Runner is a self-hosted runner as GitHub sees it.
type Runner struct {
	ID      int64
	Name    string
	Status  string // "online" or "offline"
	Busy    bool   // running a job
	Labels  []string
	GroupID int64
}

// Online reports whether the runner is connected to GitHub.
func (r Runner) Online() bool { return r.Status == "online" }

// GenerateJITConfig registers one ephemeral runner named name with exactly
// these labels (the JIT API adds no default labels such as self-hosted or
// the OS: list every label a job's runs-on needs) and returns its JIT
// configuration. groupID is the organization's runner group; repository
// runners are always in the default group (1), and groupID <= 0 means the
// default group too. A runner of the same name in the scope is ErrConflict.
func (c *Client) GenerateJITConfig(ctx context.Context, scope Scope, name string, labels []string, groupID int64) (JITConfig, error) {
	op := "generate JIT config for runner " + name + " in " + scope.String()
	if err := scope.validate(); err != nil {
		return JITConfig{}, err
	}
	if err := checkJITArgs(name, labels); err != nil {
		return JITConfig{}, &Error{Kind: ErrValidation, Op: op, Message: err.Error()}
	}
	if groupID <= 0 || scope.Repo != "" {
		groupID = DefaultRunnerGroupID
	}
	req := gh.CreateJITConfigRequest{Name: name, RunnerGroupID: groupID, Labels: labels}
	var (
		cfg  *gh.JITRunnerConfig
		resp *gh.Response
		err  error
	)
	if scope.Repo == "" {
		cfg, resp, err = c.gh.Actions.CreateOrgJITConfig(ctx, scope.Owner, req)
	} else {
		cfg, resp, err = c.gh.Actions.CreateRepoJITConfig(ctx, scope.Owner, scope.Repo, req)
	}
	if err := c.done(op, resp, err); err != nil {
		return JITConfig{}, err
	}
	if cfg == nil || cfg.GetEncodedJITConfig() == "" || cfg.GetRunner().GetID() == 0 {
		return JITConfig{}, &Error{Op: op, Message: "response without runner id or encoded_jit_config"}
	}
	return JITConfig{
		RunnerID:         cfg.GetRunner().GetID(),
		RunnerName:       cfg.GetRunner().GetName(),
		EncodedJITConfig: cfg.GetEncodedJITConfig(),
	}, nil
}

// checkJITArgs applies GitHub's documented limits before spending a request.
func checkJITArgs(name string, labels []string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("runner name required")
	}
	if len(labels) == 0 || len(labels) > 100 {
		return fmt.Errorf("a JIT runner needs 1 to 100 labels, got %d", len(labels))
	}
	for _, l := range labels {
		if strings.TrimSpace(l) == "" {
			return fmt.Errorf("empty label in %q", labels)
		}
	}
	return nil
}

// perPage is the most GitHub returns in one page.
const perPage = 100

// ListRunners returns every self-hosted runner of the scope, following
// pagination (one request per 100 runners). A failure on any page fails the
// whole call: a partial list would make a reaper think runners are gone.
func (c *Client) ListRunners(ctx context.Context, scope Scope) ([]Runner, error) {
	op := "list runners of " + scope.String()
	if err := scope.validate(); err != nil {
		return nil, err
	}
	opts := &gh.ListRunnersOptions{ListOptions: gh.ListOptions{PerPage: perPage}}
	var out []Runner
	for {
		var (
			page *gh.Runners
			resp *gh.Response
			err  error
		)
		if scope.Repo == "" {
			page, resp, err = c.gh.Actions.ListOrganizationRunners(ctx, scope.Owner, opts)
		} else {
			page, resp, err = c.gh.Actions.ListRunners(ctx, scope.Owner, scope.Repo, opts)
		}
		if err := c.done(op, resp, err); err != nil {
			return nil, err
		}
		for _, r := range page.Runners {
			out = append(out, runnerFrom(r))
		}
		if resp.NextPage == 0 || resp.NextPage <= opts.Page {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// GetRunner returns one runner; ErrNotFound when the scope has no such
// runner (an ephemeral runner is deleted by GitHub once its job is done).
func (c *Client) GetRunner(ctx context.Context, scope Scope, id int64) (Runner, error) {
	op := fmt.Sprintf("get runner %d of %s", id, scope)
	if err := scope.validate(); err != nil {
		return Runner{}, err
	}
	var (
		r    *gh.Runner
		resp *gh.Response
		err  error
	)
	if scope.Repo == "" {
		r, resp, err = c.gh.Actions.GetOrganizationRunner(ctx, scope.Owner, id)
	} else {
		r, resp, err = c.gh.Actions.GetRunner(ctx, scope.Owner, scope.Repo, id)
	}
	if err := c.done(op, resp, err); err != nil {
		return Runner{}, err
	}
	return runnerFrom(r), nil
}

// RemoveRunner deletes a runner from GitHub. A runner that is already gone
// is success, so a reaper may call it again after a crash. A busy runner
// is refused by GitHub with 422 (ErrValidation): check Busy first, and
// expect the race anyway.
func (c *Client) RemoveRunner(ctx context.Context, scope Scope, id int64) error {
	op := fmt.Sprintf("remove runner %d of %s", id, scope)
	if err := scope.validate(); err != nil {
		return err
	}
	var (
		resp *gh.Response
		err  error
	)
	if scope.Repo == "" {
		resp, err = c.gh.Actions.RemoveOrganizationRunner(ctx, scope.Owner, id)
	} else {
		resp, err = c.gh.Actions.RemoveRunner(ctx, scope.Owner, scope.Repo, id)
	}
	err = c.done(op, resp, err)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func runnerFrom(r *gh.Runner) Runner {
	out := Runner{
		ID:      r.GetID(),
		Name:    r.GetName(),
		Status:  r.GetStatus(),
		Busy:    r.GetBusy(),
		GroupID: r.GetRunnerGroupID(),
	}
	for _, l := range r.Labels {
		out.Labels = append(out.Labels, l.GetName())
	}
	return out
}
