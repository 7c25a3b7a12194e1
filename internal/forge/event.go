// Package forge verifies and parses webhook deliveries from code forges
// (GitHub, GitLab, Gitea/Forgejo) into forge-neutral events.
package forge

import "errors"

// Error kinds a caller maps to HTTP status codes at the edge.
var (
	ErrSignature = errors.New("invalid or missing webhook signature") // 401
	ErrMalformed = errors.New("malformed webhook payload")            // 400

	// ErrUnknownForge is a configuration fault, not the sender's: the
	// project names a forge this package does not know.
	ErrUnknownForge = errors.New("unknown forge") // 500
)

// Kind is what a delivery asks of Kiln.
type Kind string

const (
	KindPing  Kind = "ping"  // answered, builds nothing
	KindPush  Kind = "push"  // a branch or tag moved: build the new commit
	KindOther Kind = "other" // verified but not handled (acknowledged, ignored)
	// KindWorkflowJob is a GitHub Actions workflow job queued, started or
	// finished: what Kiln's runner pools serve.
	KindWorkflowJob Kind = "workflow_job"
	// KindPullRequest is a pull request (GitHub, Gitea/Forgejo) or merge
	// request (GitLab) opened, updated, closed or otherwise changed.
	KindPullRequest Kind = "pull_request"
)

// Event is a verified delivery in forge-neutral form.
type Event struct {
	Forge      string // "github", "gitlab", "gitea"
	Kind       Kind
	Name       string // the forge's own event name, e.g. "push", "Push Hook"
	DeliveryID string // unique per delivery; used to de-duplicate
	Push       *Push  // set when Kind == KindPush
	// WorkflowJob is set when Kind == KindWorkflowJob.
	WorkflowJob *WorkflowJob
	// PullRequest is set when Kind == KindPullRequest.
	PullRequest *PullRequest
}

// Push is a normalized push.
type Push struct {
	Ref      string // full ref, e.g. refs/heads/main
	Branch   string // "main" for refs/heads/main, "" for tags
	Tag      string // "v1" for refs/tags/v1, "" for branches
	Before   string // the SHA the ref pointed at before; all zeros for a new ref
	Commit   string // the new head commit SHA ("after"), lower-case hex; "" when Deleted
	Deleted  bool   // the ref was deleted: build nothing
	Message  string // head commit message, first line
	Author   string // who pushed: the forge's user name
	Repo     string // full name, e.g. octo/hello
	CloneURL string
	HTMLURL  string // link to the commit or compare view, when known
	RepoURL  string // the repository's web page, when known
}
