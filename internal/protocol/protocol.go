// Package protocol holds the JSON messages of the agent protocol: the only
// way an agent talks to the control plane, whether it runs in the same
// process (`kiln up`) or on another host.
//
//	POST /api/v1/agent/register            RegisterRequest  -> RegisterResponse
//	POST /api/v1/agent/claim               ClaimRequest     -> 200 Assignment | 204 (nothing within the wait)
//	POST /api/v1/agent/jobs/{id}/heartbeat Fence            -> HeartbeatResponse
//	POST /api/v1/agent/jobs/{id}/steps     StepUpdate       -> 204
//	POST /api/v1/agent/jobs/{id}/logs      LogBatch         -> 204
//	POST /api/v1/agent/jobs/{id}/finish    FinishRequest    -> 204
//	POST /api/v1/agent/jobs/{id}/artifacts?attempt=N&files=M  tar+zstd archive -> 200 ArtifactUploaded
//
// Every job write carries the attempt number of the lease. A write from an
// attempt that no longer holds the lease is refused with 409 and the error
// code CodeStaleAttempt: the agent must kill its sandbox and stop reporting.
// A write of an attempt another agent token claimed is refused with 403 and
// CodeNotYourLease.
//
// # Versions
//
// The protocol has a version, major.minor (Version), that an agent sends
// in the Kiln-Agent-Protocol header of every request and in its
// registration. A server accepts agents of its own major version and of
// its minor or the one before: an agent older than that is refused with
// 426 and CodeAgentTooOld, an agent newer than the server with 400 and
// CodeServerTooOld (see Check). So a fleet is upgraded servers first,
// then agents, and each side may be one minor apart meanwhile.
//
// What that asks of a change:
//   - Within a major, a request message never loses a field: the server
//     decodes requests strictly (an unknown field is refused), so a field
//     an accepted older agent still sends must stay known (unused
//     perhaps, never removed).
//   - The agent decodes answers leniently: a server one minor newer may
//     send fields the agent does not know. An answer field an agent must
//     act on, not merely may use, is sent only to agents whose header
//     says they speak the minor that introduced it.
//   - A new optional answer field, a new optional request field, a new
//     endpoint: bump the minor. Anything an agent one minor older cannot
//     work with (a field removed or changing meaning, a required new
//     request field, a new step of the exchange an agent must take): bump
//     the major, which refuses every agent of the old major at once.
package protocol

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/pipeline"
)

const (
	Prefix = "/api/v1/agent"
	// CodeStaleAttempt is the error code of a 409 answer to a stale write.
	CodeStaleAttempt = "stale_attempt"
	// CodeNotYourLease is the error code of a 403 answer to a job write
	// by an agent token that did not claim the attempt.
	CodeNotYourLease = "not_your_lease"
	// CodeAgentTaken is the error code of a 403 answer to a registration
	// or claim under an agent id another agent token registered.
	CodeAgentTaken = "agent_taken"
	// MaxClaimWaitSeconds bounds how long the server holds a claim.
	MaxClaimWaitSeconds = 60
	// MaxLogBatchBytes bounds one LogBatch request's body. The agent cuts
	// its batches to fit (logs.MaxBatchBytes); a larger request is refused
	// with 413 and the code CodeTooLarge.
	MaxLogBatchBytes = 8 << 20
	// CodeTooLarge is the error code of a 413 answer.
	CodeTooLarge = "too_large"

	// Version is the agent protocol this kiln speaks, major.minor. Bump
	// the minor for a change an agent one minor older still works with,
	// the major for one it does not (see the package comment).
	//	1.0  the protocol before it carried a version
	//	1.1  Kiln-Agent-Protocol header; RegisterRequest.Protocol
	//	1.2  Assignment.Registries; FinishRequest.ImageDigest (both
	//	     optional: a 1.1 agent pulls nothing and reports no digest,
	//	     as before)
	Version = "1.2"
	// Unversioned is what an agent that sends no version speaks: the
	// protocol as it was before it had one.
	Unversioned = "1.0"
	// Header carries the agent's protocol version on every request.
	Header = "Kiln-Agent-Protocol"
	// CodeAgentTooOld is the error code of a 426 answer to an agent whose
	// protocol this server no longer speaks.
	CodeAgentTooOld = "agent_too_old"
	// CodeServerTooOld is the error code of a 400 answer to an agent whose
	// protocol is newer than this server's.
	CodeServerTooOld = "server_too_old"
)

// KilnVersion is the kiln release this binary is (cmd/kiln sets it from
// its build version), named in a refusal's advice on what to upgrade to.
var KilnVersion = "dev"

// ProtoVersion is a parsed protocol version.
type ProtoVersion struct{ Major, Minor int }

// ParseVersion parses "major.minor".
func ParseVersion(s string) (ProtoVersion, error) {
	maj, min, ok := strings.Cut(s, ".")
	v := ProtoVersion{}
	var err1, err2 error
	v.Major, err1 = strconv.Atoi(maj)
	v.Minor, err2 = strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil || v.Major < 0 || v.Minor < 0 {
		return ProtoVersion{}, fmt.Errorf("agent protocol version %q: want major.minor, e.g. %s", s, Version)
	}
	return v, nil
}

func (v ProtoVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less reports whether v is older than w.
func (v ProtoVersion) Less(w ProtoVersion) bool {
	return v.Major < w.Major || v.Major == w.Major && v.Minor < w.Minor
}

// Oldest is the oldest agent protocol a server speaking v accepts: v's
// minor and the one before.
func (v ProtoVersion) Oldest() ProtoVersion {
	return ProtoVersion{v.Major, max(v.Minor-1, 0)}
}

// Current is Version, parsed.
var Current = mustParse(Version)

func mustParse(s string) ProtoVersion {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// VersionError is a server's refusal of an agent's protocol version.
type VersionError struct {
	Code          string // CodeAgentTooOld or CodeServerTooOld
	Agent, Server ProtoVersion
}

func (e *VersionError) Error() string {
	if e.Code == CodeServerTooOld {
		return fmt.Sprintf("agent speaks protocol %s; this server (kiln %s) speaks %s: upgrade the servers first, then the agents", e.Agent, KilnVersion, e.Server)
	}
	to := "the kiln this server runs"
	if KilnVersion != "" && KilnVersion != "dev" {
		to = "kiln " + KilnVersion
	}
	return fmt.Sprintf("agent speaks protocol %s; this server needs %s or newer: upgrade the agent to %s or later", e.Agent, e.Server.Oldest(), to)
}

// Check is whether a server speaking server accepts an agent speaking
// agent: nil, or the refusal.
func Check(server, agent ProtoVersion) *VersionError {
	switch {
	case agent.Less(server.Oldest()):
		return &VersionError{Code: CodeAgentTooOld, Agent: agent, Server: server}
	case server.Less(agent):
		return &VersionError{Code: CodeServerTooOld, Agent: agent, Server: server}
	}
	return nil
}

type RegisterRequest struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Labels   []string `json:"labels"`
	Capacity int      `json:"capacity"`
	// Version is the agent's kiln release, shown in the agents list.
	Version string `json:"version"`
	// Protocol is the agent protocol the agent speaks (Version), as in
	// its Kiln-Agent-Protocol header. A server older than protocol
	// versioning refuses the field as unknown: so it, too, refuses an
	// agent newer than itself. Empty: Unversioned.
	Protocol string `json:"protocol,omitempty"`
	// Max is the most a job's sandbox may have on this agent (its limits);
	// the planner refuses a pipeline no agent can run, and claims skip jobs
	// asking for more. A zero field: not reported (the server assumes its
	// default maximum).
	Max pipeline.Resources `json:"max_resources"`
}

type RegisterResponse struct {
	// LeaseSeconds is how long a claim stays valid without a heartbeat.
	LeaseSeconds int `json:"lease_seconds"`
	// HeartbeatSeconds is how often a running job must heartbeat.
	HeartbeatSeconds int `json:"heartbeat_seconds"`
	// Released are jobs this agent held before it (re)started; the server
	// ended them as errors (and retries them), so the agent must not resume them.
	Released []int64 `json:"released,omitempty"`
}

type ClaimRequest struct {
	AgentID     string   `json:"agent_id"`
	Labels      []string `json:"labels"`
	Free        int      `json:"free"`
	WaitSeconds int      `json:"wait_seconds"`
	// Warm are the projects whose sticky cache volumes this agent holds;
	// the scheduler prefers it for their jobs.
	Warm []string `json:"warm,omitempty"`
	// Max is the agent's limits, as at registration: only jobs that ask for
	// no more are handed to it.
	Max pipeline.Resources `json:"max_resources"`
}

// Assignment is a claimed job: everything the agent needs to run it.
type Assignment struct {
	JobID       int64  `json:"job_id"`
	Attempt     int    `json:"attempt"`
	BuildID     int64  `json:"build_id"`
	BuildNumber int64  `json:"build_number"`
	Project     string `json:"project"`
	CloneURL    string `json:"clone_url"`
	Ref         string `json:"ref"`
	Branch      string `json:"branch"`
	Commit      string `json:"commit"`
	// Event is what made the build: push, tag, pull_request, api (empty
	// for runner jobs). For a request, PullRequest is its number and
	// HeadBranch and BaseBranch its branches.
	Event       string `json:"event,omitempty"`
	PullRequest int    `json:"pull_request,omitempty"`
	HeadBranch  string `json:"head_branch,omitempty"`
	BaseBranch  string `json:"base_branch,omitempty"`
	// Untrusted: the build's code comes from a fork. It gets no secrets
	// and a read-only cache token, and its sticky cache views are thrown
	// away, whatever it writes.
	Untrusted    bool              `json:"untrusted,omitempty"`
	Spec         pipeline.JobSpec  `json:"spec"`
	Secrets      map[string]string `json:"secrets,omitempty"`
	LeaseSeconds int               `json:"lease_seconds"`
	// Cache gives access to the cache service for the job's keyed caches,
	// scoped to its project and branch.
	Cache *CacheAccess `json:"cache,omitempty"`
	// SkipCheckout: the agent checks nothing out (the workspace starts
	// empty). Set for GitHub Actions runner jobs: the runner fetches the
	// repository itself, with GitHub's credentials.
	SkipCheckout bool `json:"skip_checkout,omitempty"`
	// Git is what the agent fetches the job's repository with: the HTTP
	// credentials of the project's forge connection (nil: none). A
	// secret: masked in the job's log, given to git in its environment
	// only, never to the sandbox (a fork's request too is fetched with
	// them, from the base repository, and gets none of them).
	Git *GitCredentials `json:"git_credentials,omitempty"`
	// ArtifactMaxBytes bounds the files of the job's artifacts (the sum of
	// their sizes; the server refuses a larger upload with 413 and
	// CodeTooLarge). Sent when Spec.Artifacts is set. An agent that does
	// not know it (or the artifacts endpoint) uploads none, as before:
	// not worth a version, which would refuse every 1.0 agent at once.
	ArtifactMaxBytes int64 `json:"artifact_max_bytes,omitempty"`
	// Registries are the project's registry credentials for the job's
	// image: at most the one whose Host is the image's registry, never
	// for an untrusted build. Secrets: given to the engine's pull only.
	Registries []RegistryCredentials `json:"registries,omitempty"`
}

// RegistryCredentials are one registry's basic-auth credentials. They
// print as "***".
type RegistryCredentials struct {
	Host     string `json:"host"` // "registry.example.com" or "host:port", as in image names
	Username string `json:"username"`
	Password string `json:"password"`
}

func (c RegistryCredentials) String() string { return "***" }

func (c RegistryCredentials) LogValue() slog.Value { return slog.StringValue("***") }

// ArtifactsPath is the upload of a job attempt's artifacts, under
// Prefix + "/jobs/{id}": the body is the archive (Content-Length
// required), the query says the attempt and the files it holds.
const ArtifactsPath = "/artifacts"

// ArtifactUploaded is the server's answer to an artifacts upload.
type ArtifactUploaded struct {
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ExpiresAt time.Time `json:"expires_at"`
}

// GitCredentials are HTTP basic credentials for git: a token as the
// password (GitHub's x-access-token, GitLab's and Gitea's oauth2). They
// print as "***".
type GitCredentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (c GitCredentials) String() string { return "***" }

func (c GitCredentials) LogValue() slog.Value { return slog.StringValue("***") }

// CacheAccess is what the cache service's clients need: the base URL
// (ACTIONS_RESULTS_URL) and a job token (ACTIONS_RUNTIME_TOKEN).
type CacheAccess struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// CacheEvent reports one cache operation of a job, for metrics; the
// server also records each restore (a hit and its bytes, or a miss) on
// the job, for insights' cache hit rate.
//
//	POST /api/v1/agent/jobs/{id}/caches  CacheEvent -> 204
type CacheEvent struct {
	Attempt int     `json:"attempt"`
	Kind    string  `json:"kind"`   // sticky, keyed
	Op      string  `json:"op"`     // restore, save
	Result  string  `json:"result"` // hit, miss, saved, exists, skipped, error
	Key     string  `json:"key,omitempty"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Fence identifies the attempt a write belongs to.
type Fence struct {
	Attempt int `json:"attempt"`
}

type HeartbeatResponse struct {
	Cancel bool `json:"cancel"`
}

type StepUpdate struct {
	Attempt  int    `json:"attempt"`
	Index    int    `json:"index"`
	Status   string `json:"status"` // running, success, failure, canceled, timed_out, error
	ExitCode *int   `json:"exit_code,omitempty"`
}

type LogBatch struct {
	Attempt int         `json:"attempt"`
	Lines   []logs.Line `json:"lines"`
}

type FinishRequest struct {
	Attempt  int    `json:"attempt"`
	Status   string `json:"status"` // success, failure, canceled, timed_out, error
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`
	// ImageDigest is the digest of the image the attempt ran in
	// ("sha256:…"), when it came from a registry (1.2).
	ImageDigest string `json:"image_digest,omitempty"`
}

// Error is the JSON body of every non-2xx answer of Kiln's API.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}
