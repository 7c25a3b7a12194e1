package api

import (
	"time"

	"github.com/kilnci/kiln/internal/cache"
	"github.com/kilnci/kiln/internal/insights"
	"github.com/kilnci/kiln/internal/store"
)

// The REST API's responses are these view types, not the store's rows:
// a column added to or renamed in the store changes the API only when a
// view says so. views_test.go pins their JSON field names.

// BuildView is a build as the API shows it.
type BuildView struct {
	ID         int64        `json:"id"`
	ProjectID  int64        `json:"project_id"`
	Project    string       `json:"project"`
	Number     int64        `json:"number"`
	Status     store.Status `json:"status"`
	Trigger    string       `json:"trigger"`
	Forge      string       `json:"forge,omitempty"`
	DeliveryID string       `json:"delivery_id,omitempty"`
	Ref        string       `json:"ref"`
	Branch     string       `json:"branch,omitempty"`
	Commit     string       `json:"commit,omitempty"`
	Message    string       `json:"message,omitempty"`
	Author     string       `json:"author,omitempty"`
	Event      string       `json:"event,omitempty"`
	// PullRequest is set for a build of a pull or merge request.
	PullRequest *PullRequestView `json:"pull_request,omitempty"`
	ForgeAction string           `json:"forge_action,omitempty"`
	// Approval is waiting, approved or rejected for a fork's build that
	// needs approval; ApprovedBy names who decided.
	Approval        string     `json:"approval,omitempty"`
	ApprovedBy      string     `json:"approved_by,omitempty"`
	Error           string     `json:"error,omitempty"`
	CancelRequested bool       `json:"cancel_requested"`
	Planned         bool       `json:"planned"`
	PlanAttempts    int        `json:"plan_attempts"`
	CreatedAt       time.Time  `json:"created_at"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	LogsPrunedAt    *time.Time `json:"logs_pruned_at,omitempty"`
	LogsArchivedAt  *time.Time `json:"logs_archived_at,omitempty"`
	Jobs            []JobView  `json:"jobs,omitempty"`
}

// PullRequestView is what a build of a request shows of it.
type PullRequestView struct {
	Number     int    `json:"number"`
	Title      string `json:"title,omitempty"`
	HeadBranch string `json:"head_branch"`
	BaseBranch string `json:"base_branch"`
	Fork       bool   `json:"fork"`
}

// JobView is one job of a build.
type JobView struct {
	ID              int64        `json:"id"`
	BuildID         int64        `json:"build_id"`
	Name            string       `json:"name"`
	Status          store.Status `json:"status"`
	Labels          []string     `json:"labels,omitempty"`
	Sticky          bool         `json:"sticky,omitempty"`
	Pool            string       `json:"pool,omitempty"`
	TimeoutSeconds  int          `json:"timeout_seconds"`
	Attempt         int          `json:"attempt"`
	MaxAttempts     int          `json:"max_attempts"`
	AgentID         string       `json:"agent_id,omitempty"`
	LeaseExpires    *time.Time   `json:"lease_expires,omitempty"`
	CancelRequested bool         `json:"cancel_requested"`
	ExitCode        *int         `json:"exit_code,omitempty"`
	Error           string       `json:"error,omitempty"`
	// ImageDigest is the registry digest of the image the job ran in,
	// as its agent reported it ("sha256:…").
	ImageDigest string     `json:"image_digest,omitempty"`
	QueuedAt    time.Time  `json:"queued_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Steps       []StepView `json:"steps,omitempty"`
}

// StepView is one step of a job's attempt.
type StepView struct {
	Attempt    int          `json:"attempt"`
	Index      int          `json:"index"`
	Name       string       `json:"name"`
	Status     store.Status `json:"status"`
	ExitCode   *int         `json:"exit_code,omitempty"`
	StartedAt  *time.Time   `json:"started_at,omitempty"`
	FinishedAt *time.Time   `json:"finished_at,omitempty"`
}

func buildView(b *store.Build) BuildView {
	v := BuildView{
		ID: b.ID, ProjectID: b.ProjectID, Project: b.Project, Number: b.Number, Status: b.Status,
		Trigger: b.Trigger, Forge: b.Forge, DeliveryID: b.DeliveryID, Ref: b.Ref, Branch: b.Branch,
		Commit: b.Commit, Message: b.Message, Author: b.Author, Event: b.Event, ForgeAction: b.ForgeAction,
		Approval: b.Approval, ApprovedBy: b.ApprovedBy, Error: b.Error, CancelRequested: b.CancelRequested,
		Planned: b.Planned, PlanAttempts: b.PlanAttempts, CreatedAt: b.CreatedAt, StartedAt: b.StartedAt,
		FinishedAt: b.FinishedAt, LogsPrunedAt: b.LogsPrunedAt, LogsArchivedAt: b.LogsArchivedAt,
	}
	if pr := b.PullRequest; pr != nil {
		v.PullRequest = &PullRequestView{Number: pr.Number, Title: pr.Title, HeadBranch: pr.HeadBranch, BaseBranch: pr.BaseBranch, Fork: pr.Fork}
	}
	for _, j := range b.Jobs {
		v.Jobs = append(v.Jobs, jobView(j))
	}
	return v
}

func buildViews(bs []*store.Build) []BuildView {
	out := make([]BuildView, 0, len(bs))
	for _, b := range bs {
		out = append(out, buildView(b))
	}
	return out
}

func jobView(j *store.Job) JobView {
	v := JobView{
		ID: j.ID, BuildID: j.BuildID, Name: j.Name, Status: j.Status, Labels: j.Labels, Sticky: j.Sticky,
		Pool: j.Pool, TimeoutSeconds: j.TimeoutSeconds, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts,
		AgentID: j.AgentID, LeaseExpires: j.LeaseExpires, CancelRequested: j.CancelRequested, ExitCode: j.ExitCode,
		Error: j.Error, ImageDigest: j.ImageDigest, QueuedAt: j.QueuedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
	}
	for _, s := range j.Steps {
		v.Steps = append(v.Steps, StepView{Attempt: s.Attempt, Index: s.Index, Name: s.Name, Status: s.Status,
			ExitCode: s.ExitCode, StartedAt: s.StartedAt, FinishedAt: s.FinishedAt})
	}
	return v
}

// PoolView is a GitHub Actions runner pool.
type PoolView struct {
	Name           string    `json:"name"`
	Labels         []string  `json:"labels"`
	Image          string    `json:"image"`
	CPUs           float64   `json:"cpus,omitempty"`
	MemoryBytes    int64     `json:"memory_bytes,omitempty"`
	Pids           int64     `json:"pids,omitempty"`
	MaxRunners     int       `json:"max_runners"`
	Warm           int       `json:"warm,omitempty"`
	Owner          string    `json:"owner"`
	Repo           string    `json:"repo,omitempty"`
	RunnerGroupID  int64     `json:"runner_group_id"`
	InstallationID int64     `json:"installation_id,omitempty"`
	Command        string    `json:"command"`
	AgentLabels    []string  `json:"agent_labels,omitempty"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	CreatedAt      time.Time `json:"created_at"`
}

func poolView(p *store.Pool) PoolView {
	return PoolView{
		Name: p.Name, Labels: p.Labels, Image: p.Image, CPUs: p.CPUs, MemoryBytes: p.MemoryBytes, Pids: p.Pids,
		MaxRunners: p.MaxRunners, Warm: p.Warm, Owner: p.Owner, Repo: p.Repo, RunnerGroupID: p.RunnerGroupID,
		InstallationID: p.InstallationID, Command: p.Command, AgentLabels: p.AgentLabels,
		TimeoutSeconds: p.TimeoutSeconds, CreatedAt: p.CreatedAt,
	}
}

// pool is the pool a create request describes.
func (v PoolView) pool() store.Pool {
	return store.Pool{
		Name: v.Name, Labels: v.Labels, Image: v.Image, CPUs: v.CPUs, MemoryBytes: v.MemoryBytes, Pids: v.Pids,
		MaxRunners: v.MaxRunners, Warm: v.Warm, Owner: v.Owner, Repo: v.Repo, RunnerGroupID: v.RunnerGroupID,
		InstallationID: v.InstallationID, Command: v.Command, AgentLabels: v.AgentLabels, TimeoutSeconds: v.TimeoutSeconds,
	}
}

// RegistryView is one of a project's registry credentials: the host and
// user, never the password.
type RegistryView struct {
	Host      string    `json:"host"`
	Username  string    `json:"username"`
	UpdatedAt time.Time `json:"updated_at"`
}

func registryView(r store.Registry) RegistryView {
	return RegistryView{Host: r.Host, Username: r.Username, UpdatedAt: r.UpdatedAt}
}

// TokenView is an API or agent token, never its secret.
type TokenView struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	Kind      string     `json:"kind"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
}

func tokenView(t *store.Token) TokenView {
	return TokenView{ID: t.ID, Name: t.Name, Kind: string(t.Kind), CreatedAt: t.CreatedAt, LastUsed: t.LastUsed}
}

// AgentView is an agent as GET /api/v1/agents shows it: what it reported
// when it registered, when it was last heard from, and its state under
// the scheduler's broken-agent policy.
type AgentView struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Labels   []string `json:"labels"`
	Capacity int      `json:"capacity"`
	// Version is the agent's Kiln version; Protocol the agent protocol
	// version it registered with ("" from an agent older than 1.1).
	Version     string     `json:"version"`
	Protocol    string     `json:"protocol,omitempty"`
	FirstSeen   time.Time  `json:"first_seen"`
	LastSeen    time.Time  `json:"last_seen"`
	ErrorStreak int        `json:"error_streak"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	LastOKAt    *time.Time `json:"last_ok_at,omitempty"`
	// State is ok, quarantined (its attempts kept ending in
	// infrastructure errors: no jobs until QuarantinedUntil) or probing
	// (the window passed: one job at a time until one runs to a verdict).
	State            string     `json:"state"`
	QuarantinedUntil *time.Time `json:"quarantined_until,omitempty"`
}

func agentView(a *store.Agent) AgentView {
	return AgentView{
		ID: a.ID, Name: a.Name, Labels: a.Labels, Capacity: a.Capacity, Version: a.Version, Protocol: a.Protocol,
		FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, ErrorStreak: a.ErrorStreak, LastErrorAt: a.LastErrorAt, LastOKAt: a.LastOKAt,
	}
}

// RunnerView is a runner job as GET /api/v1/runners shows it.
type RunnerView struct {
	JobID          int64      `json:"job_id"`
	BuildID        int64      `json:"build_id"`
	Project        string     `json:"project"`
	Pool           string     `json:"pool"`
	GHJobID        int64      `json:"github_job_id"`
	Name           string     `json:"runner_name"`
	Owner          string     `json:"owner"`
	Repo           string     `json:"repo,omitempty"`
	InstallationID int64      `json:"installation_id,omitempty"`
	RunnerID       int64      `json:"runner_id,omitempty"`
	GHStatus       string     `json:"github_status,omitempty"`
	OnlineAt       *time.Time `json:"online_at,omitempty"`
	IdleSince      *time.Time `json:"idle_since,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	Warm           bool       `json:"warm,omitempty"`

	// The Kiln job.
	Status          store.Status `json:"status"`
	Attempt         int          `json:"attempt"`
	CancelRequested bool         `json:"cancel_requested"`
	StartedAt       *time.Time   `json:"started_at,omitempty"`
	FinishedAt      *time.Time   `json:"finished_at,omitempty"`
	Error           string       `json:"error,omitempty"`

	// The GitHub job it serves: its page, its status, the runner GitHub
	// says took it.
	HTMLURL   string `json:"html_url,omitempty"`
	JobStatus string `json:"github_job_status,omitempty"`
	JobRunner string `json:"github_job_runner,omitempty"`

	// State is queued, starting, online, busy or done.
	State string `json:"state"`
	// WarmState, for a warm runner (warm: true), is idle (no GitHub job
	// yet) or busy (GitHub handed it one), while it lives.
	WarmState string `json:"warm_state,omitempty"`
}

func runnerView(rj *store.RunnerJob) RunnerView {
	v := RunnerView{
		JobID: rj.JobID, BuildID: rj.BuildID, Project: rj.Project, Pool: rj.Pool, GHJobID: rj.GHJobID, Name: rj.Name,
		Owner: rj.Owner, Repo: rj.Repo, InstallationID: rj.InstallationID, RunnerID: rj.RunnerID, GHStatus: rj.GHStatus,
		OnlineAt: rj.OnlineAt, IdleSince: rj.IdleSince, CreatedAt: rj.CreatedAt, Warm: rj.Warm,
		Status: rj.Status, Attempt: rj.Attempt, CancelRequested: rj.CancelRequested,
		StartedAt: rj.StartedAt, FinishedAt: rj.FinishedAt, Error: rj.Error,
		HTMLURL: rj.HTMLURL, JobStatus: rj.JobStatus, JobRunner: rj.JobRunner, State: rj.State(),
	}
	if rj.Warm && rj.Live() {
		v.WarmState = "idle"
		if rj.GHJobID != 0 || v.State == "busy" {
			v.WarmState = "busy"
		}
	}
	return v
}

// CacheEntryView is one keyed cache entry of a project.
type CacheEntryView struct {
	ID       int64     `json:"id"`
	Project  string    `json:"project"`
	Scope    string    `json:"scope"` // the branch it was saved from
	Key      string    `json:"key"`
	Version  string    `json:"version"`
	Size     int64     `json:"size"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	// Hits is how often a restore found the entry.
	Hits int64 `json:"hits"`
}

func cacheEntryView(e cache.Entry) CacheEntryView {
	return CacheEntryView{ID: e.ID, Project: e.Project, Scope: e.Scope, Key: e.Key, Version: e.Version, Size: e.Size, Created: e.Created, LastUsed: e.LastUsed, Hits: e.Hits}
}

// InsightsView is GET /api/v1/insights: one window's insights
// (internal/insights, docs/insights.md). Durations are milliseconds;
// rates are fractions (0 to 1), null when there is nothing to divide.
type InsightsView struct {
	// Project is the project's name; empty for the overall view (every
	// project the caller may view).
	Project     string            `json:"project,omitempty"`
	Days        int               `json:"days"`
	Since       time.Time         `json:"since"`
	Until       time.Time         `json:"until"`
	Builds      BuildCountsView   `json:"builds"`
	FailureRate *float64          `json:"failure_rate"`
	PerDay      []InsightsDayView `json:"per_day"`
	QueueTime   PercentilesView   `json:"queue_time"`
	Jobs        []JobInsightsView `json:"jobs"`
	Cache       CacheInsightsView `json:"cache"`
	Slowest     []SlowRunView     `json:"slowest"`
	Flaky       []FlakyJobView    `json:"flaky"`
}

// BuildCountsView is finished builds by result (failure: failed and
// timed out).
type BuildCountsView struct {
	Total    int `json:"total"`
	Success  int `json:"success"`
	Failure  int `json:"failure"`
	Error    int `json:"error"`
	Canceled int `json:"canceled"`
}

// InsightsDayView is one UTC day's finished builds.
type InsightsDayView struct {
	Date     string `json:"date"` // YYYY-MM-DD
	Success  int    `json:"success"`
	Failure  int    `json:"failure"`
	Error    int    `json:"error"`
	Canceled int    `json:"canceled"`
}

// PercentilesView is a set of durations' size and percentiles (nearest
// rank), in milliseconds.
type PercentilesView struct {
	Count int   `json:"count"`
	P50MS int64 `json:"p50_ms"`
	P95MS int64 `json:"p95_ms"`
	MaxMS int64 `json:"max_ms"`
}

// JobInsightsView is one job's (project and name) runs that reached a
// verdict.
type JobInsightsView struct {
	Project  string `json:"project"`
	Name     string `json:"name"`
	Runs     int    `json:"runs"`
	Failures int    `json:"failures"`
	// Retried: runs that reached their verdict only after Kiln retried
	// an infrastructure error.
	Retried  int             `json:"retried"`
	Duration PercentilesView `json:"duration"`
}

// CacheInsightsView is the jobs' cache restores.
type CacheInsightsView struct {
	Restores      int      `json:"restores"`
	Hits          int      `json:"hits"`
	HitRate       *float64 `json:"hit_rate"`
	BytesRestored int64    `json:"bytes_restored"`
}

// SlowRunView is one of the window's longest job runs.
type SlowRunView struct {
	Project     string       `json:"project"`
	BuildID     int64        `json:"build_id"`
	BuildNumber int64        `json:"build_number"`
	Job         string       `json:"job"`
	Status      store.Status `json:"status"`
	DurationMS  int64        `json:"duration_ms"`
	FinishedAt  time.Time    `json:"finished_at"`
}

// FlakyJobView is a job that failed, then passed on a later build of the
// same commit: how often, and the last time.
type FlakyJobView struct {
	Project          string    `json:"project"`
	Job              string    `json:"job"`
	Flips            int       `json:"flips"`
	Commits          int       `json:"commits"`
	LastFailedBuild  int64     `json:"last_failed_build"`
	LastFailedNumber int64     `json:"last_failed_number"`
	LastPassedBuild  int64     `json:"last_passed_build"`
	LastPassedNumber int64     `json:"last_passed_number"`
	LastCommit       string    `json:"last_commit"`
	LastPassedAt     time.Time `json:"last_passed_at"`
}

func percentilesView(p insights.Percentiles) PercentilesView {
	return PercentilesView{Count: p.N, P50MS: p.P50.Milliseconds(), P95MS: p.P95.Milliseconds(), MaxMS: p.Max.Milliseconds()}
}

func insightsView(project string, r insights.Report) InsightsView {
	b := r.Builds
	v := InsightsView{Project: project, Days: r.Window.Days, Since: r.Window.Since, Until: r.Window.Until,
		Builds:      BuildCountsView{Total: b.Total(), Success: b.Success, Failure: b.Failure, Error: b.Error, Canceled: b.Canceled},
		FailureRate: r.FailureRate, QueueTime: percentilesView(r.Queue),
		Cache:  CacheInsightsView{Restores: r.Cache.Restores, Hits: r.Cache.Hits, HitRate: r.Cache.HitRate, BytesRestored: r.Cache.BytesRestored},
		PerDay: make([]InsightsDayView, 0, len(r.PerDay)), Jobs: make([]JobInsightsView, 0, len(r.Jobs)),
		Slowest: make([]SlowRunView, 0, len(r.Slowest)), Flaky: make([]FlakyJobView, 0, len(r.Flaky))}
	for _, d := range r.PerDay {
		v.PerDay = append(v.PerDay, InsightsDayView{Date: d.Date.Format(time.DateOnly), Success: d.Success, Failure: d.Failure, Error: d.Error, Canceled: d.Canceled})
	}
	for _, j := range r.Jobs {
		v.Jobs = append(v.Jobs, JobInsightsView{Project: j.Project, Name: j.Name, Runs: j.Runs, Failures: j.Failures, Retried: j.Retried, Duration: percentilesView(j.Duration)})
	}
	for _, s := range r.Slowest {
		v.Slowest = append(v.Slowest, SlowRunView{Project: s.Project, BuildID: s.BuildID, BuildNumber: s.BuildNumber, Job: s.Job, Status: s.Status,
			DurationMS: s.Ran.Milliseconds(), FinishedAt: s.FinishedAt})
	}
	for _, f := range r.Flaky {
		v.Flaky = append(v.Flaky, FlakyJobView{Project: f.Project, Job: f.Job, Flips: f.Flips, Commits: f.Commits, LastFailedBuild: f.LastFailedBuild,
			LastFailedNumber: f.LastFailedNumber, LastPassedBuild: f.LastPassedBuild, LastPassedNumber: f.LastPassedNumber, LastCommit: f.LastCommit, LastPassedAt: f.LastPassedAt})
	}
	return v
}
