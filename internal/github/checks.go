package github

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"

	gh "github.com/google/go-github/v92/github"
)

// Check run statuses and conclusions, GitHub's words.
const (
	CheckQueued     = "queued"
	CheckInProgress = "in_progress"
	CheckCompleted  = "completed"

	ConclusionSuccess        = "success"
	ConclusionFailure        = "failure"
	ConclusionCancelled      = "cancelled"
	ConclusionTimedOut       = "timed_out"
	ConclusionActionRequired = "action_required"
	ConclusionNeutral        = "neutral"
	ConclusionSkipped        = "skipped"
)

// CheckOutputMax is the most characters GitHub takes in a check run's
// output summary or text (65535 each).
const CheckOutputMax = 65535

// CheckRun is what Kiln sets on a check run. A zero field is not sent
// (an update leaves what GitHub has).
type CheckRun struct {
	Name       string // required
	HeadSHA    string // required on create: the full 40-hex commit id
	Status     string // CheckQueued, CheckInProgress, CheckCompleted
	Conclusion string // required when Status is CheckCompleted
	StartedAt  time.Time
	// CompletedAt is sent with a conclusion (GitHub's default is now).
	CompletedAt time.Time
	DetailsURL  string
	ExternalID  string
	// Output shows on the check run's page: Title and Summary (Markdown)
	// go together; Text is optional.
	Title, Summary, Text string
}

var checkSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// validate applies GitHub's rules before spending a request.
func (r *CheckRun) validate(create bool) error {
	switch {
	case r.Name == "":
		return fmt.Errorf("name required")
	case create && !checkSHA.MatchString(r.HeadSHA):
		return fmt.Errorf("head_sha: want a full 40-hex commit id, got %q", r.HeadSHA)
	case r.Status != "" && !slices.Contains([]string{CheckQueued, CheckInProgress, CheckCompleted}, r.Status):
		return fmt.Errorf("status %q: want queued, in_progress or completed", r.Status)
	case r.Conclusion != "" && !slices.Contains([]string{ConclusionSuccess, ConclusionFailure, ConclusionCancelled, ConclusionTimedOut,
		ConclusionActionRequired, ConclusionNeutral, ConclusionSkipped}, r.Conclusion):
		return fmt.Errorf("conclusion %q is not one of GitHub's", r.Conclusion)
	case r.Status == CheckCompleted && r.Conclusion == "":
		return fmt.Errorf("a completed check run needs a conclusion")
	case r.Conclusion != "" && r.Status != "" && r.Status != CheckCompleted:
		return fmt.Errorf("a conclusion goes with status completed, not %s", r.Status)
	case (r.Title == "") != (r.Summary == "") || r.Text != "" && r.Title == "":
		return fmt.Errorf("output: title and summary go together (and text needs them)")
	case len([]rune(r.Summary)) > CheckOutputMax || len([]rune(r.Text)) > CheckOutputMax:
		return fmt.Errorf("output: summary and text are at most %d characters", CheckOutputMax)
	}
	return nil
}

func (r *CheckRun) output() *gh.CheckRunOutput {
	if r.Title == "" && r.Text == "" {
		return nil
	}
	o := &gh.CheckRunOutput{Title: gh.Ptr(r.Title), Summary: gh.Ptr(r.Summary)}
	if r.Text != "" {
		o.Text = gh.Ptr(r.Text)
	}
	return o
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func stamp(t time.Time) *gh.Timestamp {
	if t.IsZero() {
		return nil
	}
	return &gh.Timestamp{Time: t.UTC()}
}

// CreateCheckRun creates a check run on a repository's commit and returns
// its id. Only a GitHub App installation may: with a personal token
// GitHub answers 403 (ErrForbidden).
func (c *Client) CreateCheckRun(ctx context.Context, owner, repo string, r CheckRun) (int64, error) {
	op := fmt.Sprintf("create check run %q on %s/%s", r.Name, owner, repo)
	if err := (Scope{Owner: owner, Repo: repo}).validate(); err != nil || repo == "" {
		return 0, &Error{Kind: ErrValidation, Op: op, Message: fmt.Sprintf("invalid repository %q/%q", owner, repo)}
	}
	if err := r.validate(true); err != nil {
		return 0, &Error{Kind: ErrValidation, Op: op, Message: err.Error()}
	}
	opts := gh.CreateCheckRunOptions{Name: r.Name, HeadSHA: r.HeadSHA, DetailsURL: optional(r.DetailsURL), ExternalID: optional(r.ExternalID),
		Status: optional(r.Status), Conclusion: optional(r.Conclusion), StartedAt: stamp(r.StartedAt), Output: r.output()}
	if r.Conclusion != "" {
		opts.CompletedAt = stamp(r.CompletedAt)
	}
	run, resp, err := c.gh.Checks.CreateCheckRun(ctx, owner, repo, opts)
	if err := c.done(op, resp, err); err != nil {
		return 0, err
	}
	if run.GetID() == 0 {
		return 0, &Error{Op: op, Message: "response without a check run id"}
	}
	return run.GetID(), nil
}

// updateCheckRun is go-github's update with started_at, which GitHub's
// update takes and go-github's options lack: a check run created queued
// starts when its job does.
type updateCheckRun struct {
	gh.UpdateCheckRunOptions
	StartedAt *gh.Timestamp `json:"started_at,omitempty"`
}

// UpdateCheckRun changes check run id: its status, conclusion, start,
// output, details link. HeadSHA is not sent (a check run stays on its
// commit). A check run that is gone, or of another App, is ErrNotFound.
func (c *Client) UpdateCheckRun(ctx context.Context, owner, repo string, id int64, r CheckRun) error {
	op := fmt.Sprintf("update check run %d (%q) on %s/%s", id, r.Name, owner, repo)
	if err := (Scope{Owner: owner, Repo: repo}).validate(); err != nil || repo == "" {
		return &Error{Kind: ErrValidation, Op: op, Message: fmt.Sprintf("invalid repository %q/%q", owner, repo)}
	}
	if id <= 0 {
		return &Error{Kind: ErrValidation, Op: op, Message: "check run id required"}
	}
	if err := r.validate(false); err != nil {
		return &Error{Kind: ErrValidation, Op: op, Message: err.Error()}
	}
	body := updateCheckRun{UpdateCheckRunOptions: gh.UpdateCheckRunOptions{Name: r.Name, DetailsURL: optional(r.DetailsURL), ExternalID: optional(r.ExternalID),
		Status: optional(r.Status), Conclusion: optional(r.Conclusion), Output: r.output()}, StartedAt: stamp(r.StartedAt)}
	if r.Conclusion != "" {
		body.CompletedAt = stamp(r.CompletedAt)
	}
	req, err := c.gh.NewRequest(ctx, http.MethodPatch, fmt.Sprintf("repos/%s/%s/check-runs/%d", url.PathEscape(owner), url.PathEscape(repo), id), body)
	if err != nil {
		return &Error{Kind: ErrValidation, Op: op, Err: err}
	}
	resp, err := c.gh.Do(req, nil)
	return c.done(op, resp, err)
}
