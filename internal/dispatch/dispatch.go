// Package dispatch hands claimed jobs to agents: the claim itself (through
// the scheduler's policy), then everything the agent needs to run the job
// — its compiled spec, the project's secrets, a cache token scoped to the
// job's project and branch, the checkout's credentials and, for a GitHub
// Actions runner job, the runner's JIT configuration. The agent
// protocol's HTTP handler only decodes the claim and encodes the answer.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kilnci/kiln/internal/actions"
	"github.com/kilnci/kiln/internal/cache"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/scheduler"
	"github.com/kilnci/kiln/internal/store"
)

// Dispatcher turns an agent's claim into an assignment.
type Dispatcher struct {
	store *store.Store
	sched *scheduler.Scheduler
	// caches issues cache tokens (nil: the server has no cache service);
	// actions launches runners (nil: GitHub Actions is not set up).
	caches    *cache.Service
	actions   *actions.Service
	publicURL string
	// artifactMaxBytes bounds a job's artifacts archive (told to the agent).
	artifactMaxBytes int64
}

// New returns a Dispatcher. publicURL is where jobs reach the server's
// cache service; artifactMaxBytes bounds a job's artifacts.
func New(st *store.Store, sched *scheduler.Scheduler, caches *cache.Service, acts *actions.Service, publicURL string, artifactMaxBytes int64) *Dispatcher {
	return &Dispatcher{store: st, sched: sched, caches: caches, actions: acts, publicURL: publicURL, artifactMaxBytes: artifactMaxBytes}
}

// Claim is an agent's request for a job.
type Claim struct {
	AgentID string
	// TokenID is the agent token the request came with: the lease
	// holder's, which fences the attempt's writes.
	TokenID int64
	Labels  []string
	// Max is the agent's limits: only jobs within them are claimed.
	Max pipeline.Resources
	// Wait is how long to wait for a job when none is queued.
	Wait time.Duration
}

// Result is what a claim got.
type Result struct {
	// Job is the claimed job: nil when none came within the wait.
	Job *store.Job
	// Assignment is what the agent runs: nil when the job's attempt
	// ended before it could be handed over (a runner job GitHub no longer
	// has queued, or a GitHub failure: retried later).
	Assignment *protocol.Assignment
}

// Next claims the agent's next job and prepares its assignment. A job
// claimed but impossible to describe has its attempt ended in error (it is
// retried) and the error returned.
func (d *Dispatcher) Next(ctx context.Context, c Claim) (Result, error) {
	j, err := d.sched.Claim(ctx, c.AgentID, c.TokenID, c.Labels, c.Max, c.Wait)
	if err != nil || j == nil {
		return Result{}, err
	}
	a, err := d.assignment(ctx, j)
	if err == nil && j.Pool != "" {
		err = d.launchRunner(ctx, j, a)
		if errors.Is(err, actions.ErrAttemptEnded) {
			return Result{Job: j}, nil
		}
	}
	if err != nil {
		_, _ = d.store.FinishJob(ctx, j.ID, j.Attempt, store.StatusError, nil, "server could not prepare the job: "+err.Error(), d.sched.RetryDelay(j.Attempt))
		return Result{Job: j}, err
	}
	return Result{Job: j, Assignment: a}, nil
}

// LeaseSeconds is the lease an agent is told it holds, in whole seconds.
func LeaseSeconds(d time.Duration) int { return max(1, int(d/time.Second)) }

func (d *Dispatcher) assignment(ctx context.Context, j *store.Job) (*protocol.Assignment, error) {
	b, err := d.store.Build(ctx, j.BuildID)
	if err != nil {
		return nil, err
	}
	p, err := d.store.ProjectByID(ctx, b.ProjectID)
	if err != nil {
		return nil, err
	}
	var spec pipeline.JobSpec
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return nil, fmt.Errorf("job %d: decode spec: %w", j.ID, err)
	}
	secrets, err := d.store.Secrets(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	a := &protocol.Assignment{JobID: j.ID, Attempt: j.Attempt, BuildID: b.ID, BuildNumber: b.Number, Project: p.Name, CloneURL: p.CloneURL,
		Ref: b.Ref, Branch: b.Branch, Commit: b.Commit, Event: b.Event, Spec: spec, LeaseSeconds: LeaseSeconds(d.sched.Config().Lease)}
	scope := cache.Scope{Project: p.Name, Branch: b.Branch, DefaultBranch: p.DefaultBranch}
	if pr := b.PullRequest; pr != nil {
		a.PullRequest, a.HeadBranch, a.BaseBranch, a.Untrusted = pr.Number, pr.HeadBranch, pr.BaseBranch, pr.Fork
		// A request's caches are its own (its ref is not a branch name);
		// it reads its base branch's, then the default branch's. A
		// fork's may read but never write.
		scope.Branch, scope.BaseBranch, scope.ReadOnly = b.Ref, pr.BaseBranch, pr.Fork
	}
	if a.Untrusted {
		// A fork's .kiln.yml is whoever opened the request's: it gets
		// none of the project's secrets, approved or not.
		secrets = nil
	}
	if len(spec.Caches) > 0 {
		ttl := time.Duration(spec.TimeoutSeconds)*time.Second + time.Hour
		tok, err := d.caches.IssueToken(scope, ttl)
		if err != nil {
			return nil, fmt.Errorf("cache token: %w", err)
		}
		a.Cache = &protocol.CacheAccess{URL: d.publicURL + "/", Token: tok}
	}
	if spec.Artifacts != nil {
		a.ArtifactMaxBytes = d.artifactMaxBytes
	}
	if len(secrets) > 0 {
		a.Secrets = map[string]string{}
		for _, sec := range secrets {
			a.Secrets[sec.Name] = sec.Value
		}
	}
	if j.Pool == "" {
		// The checkout's credentials: the project's forge connection's,
		// for a fork's request too (a read of the base repository's
		// refs/pull/N/head); the agent keeps them out of the sandbox.
		creds, _, err := d.sched.GitCredentials(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("the credentials of the project's forge connection: %w", err)
		}
		if creds != nil {
			a.Git = &protocol.GitCredentials{Username: creds.Username, Password: creds.Password}
		}
		if !a.Untrusted {
			// The registry credentials for the job's image, and no
			// other: an image of another registry never gets them. A
			// fork's request gets none: its .kiln.yml is whoever opened
			// the request's, and with them it could pull the project's
			// private images and read them from its sandbox.
			if a.Registries, err = d.registries(ctx, p.ID, spec.Image); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// registries are the project's credentials for image's registry host:
// one or none.
func (d *Dispatcher) registries(ctx context.Context, projectID int64, image string) ([]protocol.RegistryCredentials, error) {
	host := pipeline.ImageHost(image)
	if host == "" {
		return nil, nil
	}
	regs, err := d.store.Registries(ctx, projectID)
	if err != nil {
		return nil, fmt.Errorf("the project's registry credentials: %w", err)
	}
	for _, r := range regs {
		if r.Host == host {
			return []protocol.RegistryCredentials{{Host: r.Host, Username: r.Username, Password: r.Password}}, nil
		}
	}
	return nil, nil
}

// launchRunner starts the GitHub runner of a claimed runner job (see
// actions.Service.Launch) and puts what it needs into the assignment.
func (d *Dispatcher) launchRunner(ctx context.Context, j *store.Job, a *protocol.Assignment) error {
	if d.actions == nil {
		return errors.New("GitHub Actions is not set up on this server")
	}
	l, err := d.actions.Launch(ctx, j)
	if err != nil {
		return err
	}
	p, err := d.store.ProjectByName(ctx, a.Project)
	if err != nil {
		return err
	}
	return d.runnerAssignment(a, l, p.DefaultBranch)
}

// runnerAssignment completes a claimed runner job's assignment: the runner
// starts the job, so Kiln checks nothing out; the JIT configuration goes
// only into the secrets (masked by the agent); the cache service's
// variables, scoped to the repository's project and the job's branch, let
// a runner image that honours ACTIONS_RESULTS_URL use Kiln's cache.
func (d *Dispatcher) runnerAssignment(a *protocol.Assignment, l *actions.Launch, defaultBranch string) error {
	a.SkipCheckout = true
	if a.Spec.Env == nil {
		a.Spec.Env = map[string]string{}
	}
	for k, v := range l.Env {
		a.Spec.Env[k] = v
	}
	if a.Secrets == nil {
		a.Secrets = map[string]string{}
	}
	for k, v := range l.Secrets {
		a.Secrets[k] = v
	}
	if d.caches == nil {
		return nil
	}
	branch := l.Branch
	if branch == "" {
		branch = defaultBranch
	}
	ttl := time.Duration(a.Spec.TimeoutSeconds)*time.Second + time.Hour
	tok, err := d.caches.IssueToken(cache.Scope{Project: a.Project, Branch: branch, DefaultBranch: defaultBranch}, ttl)
	if err != nil {
		return fmt.Errorf("cache token: %w", err)
	}
	for k, v := range d.caches.Env(tok) {
		if k == "ACTIONS_RUNTIME_TOKEN" {
			a.Secrets[k] = v
		} else {
			a.Spec.Env[k] = v
		}
	}
	return nil
}
