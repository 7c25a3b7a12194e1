// Package store persists Kiln's state: projects, builds, jobs, steps, logs,
// agents, tokens and webhook deliveries. The database is the queue: a job is
// claimed by one conditional UPDATE, so no job lives only in memory and a
// restarted control plane loses nothing.
//
// The store imports no other internal package; job specs travel through it
// as opaque JSON.
package store

import (
	"errors"
	"time"
)

// Error kinds, mapped to HTTP status codes at the API edge.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("already exists")
	ErrStaleAttempt = errors.New("stale attempt: the job is no longer leased to this attempt")
)

// Status is the state of a build, a job or a step. It moves forward only.
type Status string

const (
	StatusQueued   Status = "queued"
	StatusRunning  Status = "running"
	StatusSuccess  Status = "success"
	StatusFailure  Status = "failure"
	StatusCanceled Status = "canceled"
	StatusTimedOut Status = "timed_out"
	// StatusError is an infrastructure fault (image missing, engine down,
	// agent lost); a job in error is retried up to its MaxAttempts.
	StatusError   Status = "error"
	StatusSkipped Status = "skipped" // steps only: not run because an earlier step failed
)

// Terminal reports whether s is a final state.
func (s Status) Terminal() bool {
	switch s {
	case StatusSuccess, StatusFailure, StatusCanceled, StatusTimedOut, StatusError, StatusSkipped:
		return true
	}
	return false
}

// AllStatuses lists build statuses, for metrics and validation.
var AllStatuses = []Status{StatusQueued, StatusRunning, StatusSuccess, StatusFailure, StatusCanceled, StatusTimedOut, StatusError}

type Project struct {
	ID               int64  `json:"id"`
	Name             string `json:"name"`
	CloneURL         string `json:"clone_url"`
	DefaultBranch    string `json:"default_branch"`
	WebhookSecret    string `json:"-"` // encrypted at rest
	CancelSuperseded bool   `json:"cancel_superseded"`
	// ForkPullRequests is what a request from a fork gets: ForkApprove
	// (the default: it waits for an admin), ForkRun or ForkOff.
	ForkPullRequests string `json:"fork_pull_requests"`
	// DraftPullRequests is what a draft request gets: DraftBuild (the
	// default) or DraftWait (built once it is marked ready).
	DraftPullRequests string `json:"draft_pull_requests"`
	// Badge is who sees the project's status badge: BadgePrivate (the
	// default: those who may view the project) or BadgePublic (anyone).
	Badge     string    `json:"badge"`
	CreatedAt time.Time `json:"created_at"`
}

// Who sees a project's status badge (Project.Badge).
const (
	BadgePrivate = "private"
	BadgePublic  = "public"
)

// What a project does with requests from forks and with drafts.
const (
	ForkApprove = "approve"
	ForkRun     = "run"
	ForkOff     = "off"
	DraftBuild  = "build"
	DraftWait   = "wait"
)

// Events that make a build (Build.Event).
const (
	EventPush        = "push"
	EventTag         = "tag"
	EventPullRequest = "pull_request"
	EventAPI         = "api"
)

// Approval states of a fork's build (Build.Approval).
const (
	ApprovalWaiting  = "waiting"  // not planned until an admin approves it
	ApprovalApproved = "approved" // an admin approved it: it runs
	ApprovalRejected = "rejected" // an admin rejected it: canceled
)

// PullRequest is what a build of a pull or merge request records of it.
type PullRequest struct {
	Number     int    `json:"number"`
	Title      string `json:"title,omitempty"`
	HeadBranch string `json:"head_branch"`
	BaseBranch string `json:"base_branch"`
	// Fork: the head is in another repository than the project's; the
	// build is untrusted (no secrets, read-only caches).
	Fork bool `json:"fork"`
}

// Secret is a project environment secret, encrypted at rest, given to jobs as
// an environment variable and masked in their logs.
type Secret struct {
	Name  string `json:"name"`
	Value string `json:"-"`
}

type Build struct {
	ID         int64  `json:"id"`
	ProjectID  int64  `json:"project_id"`
	Project    string `json:"project"`
	Number     int64  `json:"number"` // per project
	Status     Status `json:"status"`
	Trigger    string `json:"trigger"` // "push", "api", "github_actions"
	Forge      string `json:"forge,omitempty"`
	DeliveryID string `json:"delivery_id,omitempty"`
	Ref        string `json:"ref"`
	Branch     string `json:"branch,omitempty"`
	Commit     string `json:"commit,omitempty"` // empty until resolved by the planner
	Message    string `json:"message,omitempty"`
	Author     string `json:"author,omitempty"`
	// Event is what made the build: EventPush, EventTag,
	// EventPullRequest, EventAPI ("" for builds from before it was kept,
	// and for runner builds).
	Event string `json:"event,omitempty"`
	// PullRequest is set for a build of a pull or merge request.
	PullRequest *PullRequest `json:"pull_request,omitempty"`
	// ForgeAction is the forge's word for what happened to the request
	// ("opened", "synchronize", "update"); with Event, Ref and Commit it
	// tells a redelivery from a new event.
	ForgeAction string `json:"forge_action,omitempty"`
	// Approval is ApprovalWaiting, ApprovalApproved or ApprovalRejected
	// for a fork's build that needs an admin's approval, "" otherwise;
	// ApprovedBy names who decided.
	Approval   string `json:"approval,omitempty"`
	ApprovedBy string `json:"approved_by,omitempty"`
	// Error explains a build that failed or errored before any job ran
	// (an invalid .kiln.yml, an unreachable repository).
	Error           string     `json:"error,omitempty"`
	CancelRequested bool       `json:"cancel_requested"`
	Planned         bool       `json:"planned"`
	PlanAttempts    int        `json:"plan_attempts"`
	CreatedAt       time.Time  `json:"created_at"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	// LogsPrunedAt is when log retention deleted the build's logs.
	LogsPrunedAt *time.Time `json:"logs_pruned_at,omitempty"`
	// LogsArchivedAt is when the build's logs moved to the log archive
	// (they are read from there).
	LogsArchivedAt *time.Time `json:"logs_archived_at,omitempty"`
	Jobs           []*Job     `json:"jobs,omitempty"`
}

// TriggerGitHubActions is the trigger of a runner build: a GitHub Actions
// workflow job that a Kiln pool serves with an ephemeral runner.
const TriggerGitHubActions = "github_actions"

type Job struct {
	ID      int64  `json:"id"`
	BuildID int64  `json:"build_id"`
	Name    string `json:"name"`
	Status  Status `json:"status"`
	// Spec is the compiled job (pipeline.JobSpec as JSON).
	Spec   []byte   `json:"-"`
	Labels []string `json:"labels,omitempty"`
	// Sticky says the job mounts sticky cache volumes: it prefers agents
	// that hold its project's volumes.
	Sticky bool `json:"sticky,omitempty"`
	// Pool is set on a GitHub Actions runner job: the pool whose runner it
	// starts (and whose max_runners bounds how many run at once).
	Pool            string     `json:"pool,omitempty"`
	TimeoutSeconds  int        `json:"timeout_seconds"`
	Attempt         int        `json:"attempt"`
	MaxAttempts     int        `json:"max_attempts"`
	AgentID         string     `json:"agent_id,omitempty"`
	LeaseExpires    *time.Time `json:"lease_expires,omitempty"`
	CancelRequested bool       `json:"cancel_requested"`
	ExitCode        *int       `json:"exit_code,omitempty"`
	Error           string     `json:"error,omitempty"`
	// ImageDigest is the registry digest of the image the job's last
	// reported attempt ran in ("sha256:…"; "" when none was reported).
	ImageDigest string     `json:"image_digest,omitempty"`
	QueuedAt    time.Time  `json:"queued_at"`
	NotBefore   *time.Time `json:"-"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Steps       []*Step    `json:"steps,omitempty"`
}

type Step struct {
	JobID      int64      `json:"-"`
	Attempt    int        `json:"attempt"`
	Index      int        `json:"index"`
	Name       string     `json:"name"`
	Status     Status     `json:"status"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// LogLine is one stored line of a job attempt's log.
type LogLine struct {
	JobID   int64     `json:"job_id"`
	Attempt int       `json:"attempt"`
	Seq     int64     `json:"seq"`
	Step    int       `json:"step"`
	Time    time.Time `json:"time"`
	Text    string    `json:"text"`
}

type Agent struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Labels   []string `json:"labels"`
	Capacity int      `json:"capacity"`
	Version  string   `json:"version"`
	// Protocol is the agent protocol version it registered with ("" for
	// an agent that sent none: protocol.Unversioned).
	Protocol string `json:"protocol,omitempty"`
	// Max is the agent's limits (protocol.RegisterRequest.Max) as JSON, or
	// empty when it reported none.
	Max       string    `json:"-"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// ErrorStreak counts the agent's consecutive attempts that ended in
	// error (infrastructure); LastErrorAt is when the last did, LastOKAt
	// when an attempt last ran to a verdict (success, failure, timeout).
	ErrorStreak int        `json:"error_streak"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	LastOKAt    *time.Time `json:"last_ok_at,omitempty"`
}

// TokenKind says what a token may do.
type TokenKind string

const (
	TokenAdmin TokenKind = "admin" // the REST API
	TokenAgent TokenKind = "agent" // the agent protocol only
)

type Token struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	Kind      TokenKind  `json:"kind"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
}

// Delivery is a webhook delivery, stored before it is acknowledged.
type Delivery struct {
	ID         string    `json:"id"`
	Forge      string    `json:"forge"`
	ProjectID  int64     `json:"project_id"`
	Event      string    `json:"event"`
	Result     string    `json:"result"`
	BuildID    *int64    `json:"build_id,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
}

// Sealer encrypts secrets at rest. The store calls it for webhook secrets
// and project secrets; see internal/secretbox.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(ciphertext []byte) ([]byte, error)
}
