// Package scheduler turns queued builds into jobs and hands jobs to agents.
//
// Three loops share the store (the queue):
//   - the planner reads each new build's .kiln.yml at its commit from the
//     control plane's git mirror, validates and compiles it into jobs;
//   - Claim, called by the agent protocol's long-poll, leases a job to an
//     agent, waking as soon as a job is queued in this process (and polling
//     the store, for jobs queued by other replicas or whose retry backoff
//     just passed);
//   - the reaper ends attempts whose lease expired (a dead agent) as errors,
//     which retries them, and times out jobs an agent failed to stop.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/gitauth"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/store"
)

// PipelineFile is the path of the pipeline file in a repository.
const PipelineFile = ".kiln.yml"

type Config struct {
	// Lease is how long a claim lives without a heartbeat.
	Lease time.Duration
	// RetryDelay is the pause before an errored attempt is retried (times the attempt number).
	RetryDelay time.Duration
	// MaxAttempts bounds how often a job is tried when attempts end in error.
	MaxAttempts int
	// PlanAttempts bounds retries of planning when the repository cannot be read.
	PlanAttempts int
	// PollInterval is how often waiting claims and the loops look at the store.
	PollInterval time.Duration
	// TimeoutGrace is how long past its timeout a running job may go before
	// the reaper ends it (the agent normally stops it first).
	TimeoutGrace time.Duration
	// AffinityWait is how long a job with sticky caches waits for an agent
	// that holds its project's volumes before any agent may take it.
	AffinityWait time.Duration
	// Planners bounds how many builds are planned at once; never two of
	// one project, so a project whose forge hangs holds one planner only.
	Planners int
	// PlanTimeout bounds the planning of one build, git commands and lock
	// waits included (each git command also has its own deadline).
	PlanTimeout time.Duration
	// QuarantineAfter consecutive attempts ended in error quarantine an
	// agent for QuarantineFor, doubled per further error up to
	// QuarantineMax (see AgentState). 0 turns quarantine off.
	QuarantineAfter int
	QuarantineFor   time.Duration
	QuarantineMax   time.Duration
	// RetryElsewhere is how long a job whose attempt ended in error waits
	// for another agent than the one that failed it (while one is live).
	RetryElsewhere time.Duration
	// ProjectMaxRunning caps the running jobs of a project that sets no
	// cap of its own (0: no cap). Claims are in fair share (FairShare).
	ProjectMaxRunning int
	// MaxJobsPerBuild is the most jobs one .kiln.yml may define; past it
	// the file is refused with a located error (0: pipeline.DefaultMaxJobs).
	MaxJobsPerBuild int
	// DefaultMax is the limits assumed of agents that reported none and,
	// while no known agent carries a job's labels (none registered yet),
	// what the planner checks the job's resources against.
	DefaultMax pipeline.Resources
}

func DefaultConfig() Config {
	return Config{Lease: 30 * time.Second, RetryDelay: 2 * time.Second, MaxAttempts: 3, PlanAttempts: 3, PollInterval: time.Second, TimeoutGrace: time.Minute, AffinityWait: 15 * time.Second,
		Planners: 4, PlanTimeout: 10 * time.Minute, MaxJobsPerBuild: pipeline.DefaultMaxJobs, DefaultMax: pipeline.DefaultLimits,
		QuarantineAfter: 3, QuarantineFor: time.Minute, QuarantineMax: 30 * time.Minute, RetryElsewhere: time.Minute}
}

type Scheduler struct {
	cfg     Config
	store   *store.Store
	mirrors *gitmirror.Mirrors
	metrics *metrics.Metrics
	log     *slog.Logger
	creds   *gitauth.Source
	publish func() // PublishJobsChanged's

	mu       sync.Mutex
	jobWake  chan struct{} // closed and replaced when a job may have become claimable
	planKick chan struct{}
}

func New(cfg Config, st *store.Store, mirrors *gitmirror.Mirrors, m *metrics.Metrics, log *slog.Logger) *Scheduler {
	return &Scheduler{cfg: cfg, store: st, mirrors: mirrors, metrics: m, log: log, creds: gitauth.New(nil), jobWake: make(chan struct{}), planKick: make(chan struct{}, 1)}
}

// UseGitCredentials sets where fetches of a project's repository get its
// forge connection's credentials (with the server's GitHub App, for
// installations; by default tokens only). Call it before Run.
func (s *Scheduler) UseGitCredentials(src *gitauth.Source) { s.creds = src }

// GitCredentials returns the credentials a fetch of p's repository
// carries (nil: none), for the planner and for a job's checkout, and the
// project's forge connection (nil: none).
func (s *Scheduler) GitCredentials(ctx context.Context, p *store.Project) (*gitmirror.Credentials, *store.ForgeConnection, error) {
	conn, err := s.store.ProjectForge(ctx, p.ID)
	if err != nil {
		return nil, nil, err
	}
	c, err := s.creds.For(ctx, p.CloneURL, conn)
	return c, conn, err
}

// Config returns the scheduler's settings (the agent protocol reports the lease).
func (s *Scheduler) Config() Config { return s.cfg }

// BuildQueued wakes the planner: a new build waits to be planned.
func (s *Scheduler) BuildQueued() {
	select {
	case s.planKick <- struct{}{}:
	default:
	}
}

// JobsChanged wakes every waiting claim, here and (PublishJobsChanged)
// on the other servers.
func (s *Scheduler) JobsChanged() {
	s.JobsChangedHere()
	if s.publish != nil {
		s.publish()
	}
}

// PublishJobsChanged makes JobsChanged a hint to the other servers too:
// f must not block. Set before use.
func (s *Scheduler) PublishJobsChanged(f func()) { s.publish = f }

// JobsChangedHere wakes this server's waiting claims only (a hint from
// another server).
func (s *Scheduler) JobsChangedHere() {
	s.mu.Lock()
	close(s.jobWake)
	s.jobWake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Scheduler) wakeChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobWake
}

// Claim waits up to wait for a job the agent can run and leases it to the
// agent token with id token. It returns nil, nil when none came. A
// quarantined agent gets nothing (see AgentState). Only jobs whose
// resources fit within max (the agent's limits) are handed to it.
func (s *Scheduler) Claim(ctx context.Context, agentID string, token int64, labels []string, max pipeline.Resources, wait time.Duration) (*store.Job, error) {
	claim := store.Claim{AgentID: agentID, Labels: labels, Lease: s.cfg.Lease, StepNames: stepNames,
		AffinityWait: s.cfg.AffinityWait, AliveWithin: s.cfg.Lease + wait, Token: token, Order: FairShare, DefaultMaxRunning: s.cfg.ProjectMaxRunning,
		Fits: s.fits(max)}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for {
		wake := s.wakeChan() // taken before looking, so a job queued meanwhile is not missed
		j, err := s.claimOnce(ctx, claim)
		if err != nil || j != nil {
			if j != nil {
				s.metrics.QueueWait.Observe(time.Since(j.QueuedAt).Seconds())
			}
			return j, err
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-deadline.C:
			return nil, nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// claimOnce applies the broken-agent policy, then claims.
func (s *Scheduler) claimOnce(ctx context.Context, c store.Claim) (*store.Job, error) {
	ok, err := s.mayClaim(ctx, c.AgentID)
	if err != nil || !ok {
		return nil, err
	}
	if c.RetryElsewhere, err = s.retryElsewhere(ctx, c.AgentID, c.AliveWithin); err != nil {
		return nil, err
	}
	return s.store.ClaimJob(ctx, c)
}

// stepNames reads step names from a compiled job spec (for the step rows a claim creates).
func stepNames(spec []byte) []string {
	var js pipeline.JobSpec
	if json.Unmarshal(spec, &js) != nil {
		return nil
	}
	names := make([]string, len(js.Steps))
	for i, st := range js.Steps {
		names[i] = st.Name
	}
	return names
}

// Run runs the planner and the reaper until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.RunPlanner(ctx) })
	wg.Go(func() { s.RunReaper(ctx) })
	wg.Wait()
}

// RunPlanner plans builds until ctx ends. Every replica may run it: each
// build is planned under a lease of its own in the store (ClaimPlan).
func (s *Scheduler) RunPlanner(ctx context.Context) { s.planLoop(ctx) }

// RunReaper ends expired leases and overdue jobs every poll until ctx
// ends. Its writes are fenced, so two replicas running it would do no
// harm, only the work twice: the server runs it on the leader.
func (s *Scheduler) RunReaper(ctx context.Context) { s.reapLoop(ctx) }

// planLoop hands builds to at most cfg.Planners planners at once, never
// two of one project: a project whose forge hangs holds one planner for at
// most its git deadlines and delays only its own builds.
func (s *Scheduler) planLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	busy := map[int64]bool{} // projects being planned, guarded by mu
	free := make(chan struct{}, max(s.cfg.Planners, 1))
	for range cap(free) {
		free <- struct{}{}
	}
	for {
	claim:
		for ctx.Err() == nil {
			select {
			case <-free:
			default:
				break claim // every planner busy: one that ends kicks us
			}
			mu.Lock()
			skip := make([]int64, 0, len(busy))
			for id := range busy {
				skip = append(skip, id)
			}
			mu.Unlock()
			b, err := s.store.ClaimPlan(ctx, planLease, skip...)
			if err != nil || b == nil {
				free <- struct{}{}
				if err != nil && ctx.Err() == nil {
					s.log.Error("claim build to plan", "err", err)
				}
				break
			}
			mu.Lock()
			busy[b.ProjectID] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.planWatched(ctx, b)
				mu.Lock()
				delete(busy, b.ProjectID)
				mu.Unlock()
				free <- struct{}{}
				s.BuildQueued() // the project's next build, or one waiting for a planner
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.planKick:
		case <-tick.C:
		}
	}
}

// planLease is how long a claimed build stays with its planner without a
// renewal (the planner renews it while it works).
const planLease = 2 * time.Minute

// errPlanStopped ends a planning whose build was canceled or whose project
// was removed meanwhile.
var errPlanStopped = errors.New("build canceled or project removed while planning")

// errPlanTimeout ends a planning that ran past cfg.PlanTimeout (the git
// commands' own deadlines normally end it first).
var errPlanTimeout = errors.New("planning timed out")

// planWatched plans b within cfg.PlanTimeout, and stops as soon as b no
// longer wants planning (canceled, its project removed): the git commands
// under way are killed with their context.
func (s *Scheduler) planWatched(ctx context.Context, b *store.Build) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, s.cfg.PlanTimeout, errPlanTimeout)
	defer cancelTimeout()
	go func() {
		tick := time.NewTicker(s.cfg.PollInterval)
		defer tick.Stop()
		renewed := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var ok bool
			var err error
			if time.Since(renewed) > planLease/3 {
				// Keep the lease while planning, so that another replica
				// takes the build only when this one died.
				ok, err = s.store.RenewPlan(ctx, b.ID, planLease)
				renewed = time.Now()
			} else {
				ok, err = s.store.PlanWanted(ctx, b.ID)
			}
			if err == nil && !ok {
				cancel(errPlanStopped)
				return
			}
		}
	}()
	s.plan(ctx, b)
}

// plan reads, validates and compiles the build's pipeline into jobs. An
// invalid file fails the build with located messages in its log; a
// repository that cannot be read is retried, then the build ends in error.
func (s *Scheduler) plan(ctx context.Context, b *store.Build) {
	log := s.log.With("build", b.ID, "project", b.Project)
	p, err := s.store.ProjectByID(ctx, b.ProjectID)
	if errors.Is(err, store.ErrNotFound) {
		log.Info("plan: project removed")
		return
	}
	if err != nil {
		log.Error("plan: load project", "err", err)
		return
	}
	creds, conn, err := s.GitCredentials(ctx, p)
	if err != nil {
		s.planInfraError(ctx, b, "", "kiln: the credentials of the project's forge connection: "+err.Error())
		return
	}
	auth := gitmirror.WithCredentials(creds)
	// refused is the message of a fetch the repository refused for want
	// of credentials: not retried (a token does not heal), and it says
	// with what it was asked.
	refused := func(err error) []string {
		return []string{fmt.Sprintf("kiln: %s refused the fetch: it asks for credentials, and got none it accepts", gitmirror.Redact(p.CloneURL)),
			"kiln: " + gitauth.Describe(p.CloneURL, conn),
			hide("kiln: "+strings.TrimPrefix(err.Error(), "gitmirror: "), creds)}
	}
	commit := b.Commit
	if commit == "" {
		ref := b.Ref
		if ref == "" {
			ref = p.DefaultBranch
		}
		if commit, err = s.mirrors.Resolve(ctx, p.CloneURL, ref, auth); err != nil {
			switch {
			case errors.Is(err, gitmirror.ErrRefNotFound):
				s.failPlan(ctx, b, store.StatusFailure, "", []string{fmt.Sprintf("kiln: no branch or tag %q in %s", ref, gitmirror.Redact(p.CloneURL))})
			case errors.Is(err, gitmirror.ErrAuth):
				s.failPlan(ctx, b, store.StatusError, "", refused(err))
			default:
				s.planInfraError(ctx, b, "", hide(fmt.Sprintf("kiln: cannot resolve %q in %s: %v", ref, gitmirror.Redact(p.CloneURL), err), creds))
			}
			return
		}
	}
	if b.PullRequest != nil {
		// The request's head may be on no branch (a fork's): fetch the
		// forge's ref of it. A head force-pushed away since the event is
		// gone for good: the build ends in error, saying so.
		err := s.mirrors.FetchRef(ctx, p.CloneURL, b.Ref, commit, auth)
		switch {
		case errors.Is(err, gitmirror.ErrCommitGone):
			s.failPlan(ctx, b, store.StatusError, commit, []string{hide("kiln: "+strings.TrimPrefix(err.Error(), "gitmirror: "), creds)})
			return
		case errors.Is(err, gitmirror.ErrAuth):
			s.failPlan(ctx, b, store.StatusError, commit, refused(err))
			return
		case err != nil:
			s.planInfraError(ctx, b, commit, hide(fmt.Sprintf("kiln: cannot fetch %s of %s: %v", b.Ref, gitmirror.Redact(p.CloneURL), err), creds))
			return
		}
	}
	data, err := s.mirrors.ReadFile(ctx, p.CloneURL, commit, PipelineFile, auth)
	switch {
	case errors.Is(err, gitmirror.ErrFileNotFound):
		s.failPlan(ctx, b, store.StatusFailure, commit, []string{fmt.Sprintf("%s: no such file at commit %s", PipelineFile, short(commit))})
		return
	case errors.Is(err, gitmirror.ErrSymlink):
		var se *gitmirror.SymlinkError
		errors.As(err, &se)
		s.failPlan(ctx, b, store.StatusFailure, commit, []string{fmt.Sprintf("%s: is a symlink (to %q) at commit %s: Kiln reads the pipeline file only as a regular file; commit the file itself", PipelineFile, se.Target, short(commit))})
		return
	case errors.Is(err, gitmirror.ErrAuth):
		s.failPlan(ctx, b, store.StatusError, commit, refused(err))
		return
	case errors.Is(err, gitmirror.ErrCommitNotFound):
		s.failPlan(ctx, b, store.StatusFailure, commit, []string{fmt.Sprintf("kiln: commit %s not found in %s", commit, gitmirror.Redact(p.CloneURL))})
		return
	case err != nil:
		s.planInfraError(ctx, b, commit, hide(fmt.Sprintf("kiln: cannot read %s at %s: %v", PipelineFile, short(commit), err), creds))
		return
	}
	pl, err := pipeline.ParseLimits(PipelineFile, data, pipeline.Limits{MaxJobs: s.cfg.MaxJobsPerBuild})
	if err == nil {
		err = s.checkLimits(ctx, pl)
	}
	var located pipeline.Errors
	if errors.As(err, &located) {
		s.failPlan(ctx, b, store.StatusFailure, commit, strings.Split(err.Error(), "\n"))
		return
	}
	if err != nil {
		s.planInfraError(ctx, b, commit, "kiln: cannot read the agents' limits: "+err.Error())
		return
	}
	var jobs []*store.Job
	for _, js := range pl.Compile() {
		spec, err := json.Marshal(js)
		if err != nil {
			s.failPlan(ctx, b, store.StatusError, commit, []string{"kiln: encode job: " + err.Error()})
			return
		}
		sticky := false
		for _, c := range js.Caches {
			sticky = sticky || c.Sticky()
		}
		jobs = append(jobs, &store.Job{Name: js.Name, Spec: spec, Labels: js.RunsOn, Sticky: sticky, TimeoutSeconds: js.TimeoutSeconds, MaxAttempts: s.cfg.MaxAttempts})
	}
	if err := s.store.PlanBuild(ctx, b.ID, commit, jobs); err != nil {
		if !errors.Is(err, store.ErrNotFound) { // canceled while planning: nothing to do
			log.Error("plan: store jobs", "err", err)
		}
		return
	}
	log.Info("build planned", "commit", short(commit), "jobs", len(jobs))
	s.JobsChanged()
}

// hide removes the credentials' secrets from msg: gitmirror's errors
// never hold them; this is for whatever else might.
func hide(msg string, c *gitmirror.Credentials) string {
	if c != nil {
		for _, secret := range c.Secrets() {
			msg = strings.ReplaceAll(msg, secret, "***")
		}
	}
	return msg
}

func (s *Scheduler) planInfraError(ctx context.Context, b *store.Build, commit, msg string) {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errPlanStopped):
		s.log.Info("plan: stopped", "build", b.ID, "reason", cause)
		return
	case errors.Is(cause, errPlanTimeout):
		msg += fmt.Sprintf(" (planning ran past its limit of %s)", s.cfg.PlanTimeout)
		ctx = context.WithoutCancel(ctx) // to record the outcome
	case ctx.Err() != nil:
		return // shutting down: the plan's lease runs out and it is planned again
	}
	if b.PlanAttempts < s.cfg.PlanAttempts {
		s.log.Warn("plan: will retry", "build", b.ID, "attempt", b.PlanAttempts, "err", msg)
		if err := s.store.DeferPlan(ctx, b.ID, s.cfg.RetryDelay*time.Duration(b.PlanAttempts)); err != nil {
			s.log.Error("plan: defer", "err", err)
		}
		return
	}
	s.failPlan(ctx, b, store.StatusError, commit, []string{msg, fmt.Sprintf("kiln: gave up after %d attempts", b.PlanAttempts)})
}

func (s *Scheduler) failPlan(ctx context.Context, b *store.Build, status store.Status, commit string, lines []string) {
	if err := s.store.FailPlan(ctx, b.ID, status, commit, lines); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("plan: record failure", "build", b.ID, "err", err)
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func (s *Scheduler) reapLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.Reap(ctx)
	}
}

// Reap ends expired leases and overdue jobs once.
func (s *Scheduler) Reap(ctx context.Context) {
	expired, err := s.store.ExpireLeases(ctx, s.cfg.RetryDelay, leaseExpiry)
	if err != nil && ctx.Err() == nil {
		s.log.Error("reap: expire leases", "err", err)
	}
	for _, e := range expired {
		s.metrics.LeasesExpired.Inc()
		s.log.Warn("lease expired, job will be retried if attempts remain", "job", e.JobID, "attempt", e.Attempt, "agent", e.AgentID, "reason", leaseExpiry(e))
		s.AgentAttemptEnded(ctx, e.AgentID)
	}
	running, err := s.store.RunningJobs(ctx)
	if err != nil {
		return
	}
	for _, j := range running {
		if j.StartedAt == nil || j.TimeoutSeconds <= 0 {
			continue
		}
		limit := time.Duration(j.TimeoutSeconds)*time.Second + s.cfg.TimeoutGrace
		// By the store's clock, which stamped started_at.
		if s.store.Now().Sub(*j.StartedAt) > limit {
			msg := fmt.Sprintf("job exceeded its timeout of %s and its agent did not stop it", time.Duration(j.TimeoutSeconds)*time.Second)
			if err := s.store.TimeOutJob(ctx, j.ID, j.Attempt, msg); err == nil {
				s.log.Warn("reap: timed out", "job", j.ID)
			}
		}
	}
	if len(expired) > 0 {
		s.JobsChanged()
	}
}

// leaseExpiry says why a lease expired. When the agent's last write for
// the job failed on the server's side because the store could not write
// (a full disk), the agent was not lost: its heartbeats were refused.
func leaseExpiry(e store.ExpiredLease) string {
	if e.StoreError != "" {
		return fmt.Sprintf("server could not write to its store (%s) since %s: the agent's heartbeats and reports were refused; lease expired",
			e.StoreError, e.StoreErrorSince.UTC().Format(time.RFC3339))
	}
	return "agent lost: lease expired"
}

// RetryDelay is the backoff before retrying an attempt that ended in error.
func (s *Scheduler) RetryDelay(attempt int) time.Duration {
	return s.cfg.RetryDelay * time.Duration(attempt)
}
