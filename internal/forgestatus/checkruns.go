package forgestatus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/termtext"
)

// A project connected through a GitHub App installation gets check runs
// instead of commit statuses: one per context ("kiln" for the build,
// "kiln/JOB" per job), created at the context's first state in a build
// and updated after (the id is kept in the store, so a restarted sender
// updates the same one). A new build of the same commit gets check runs
// of its own. The outbox, its order, retries, backoff, rate limits and
// giving up are the statuses' own: only the request differs.
//
// Kiln's states map to GitHub's: queued → queued; running → in_progress;
// success, failure, timed_out, canceled → completed with success, failure,
// timed_out, cancelled. error (an infrastructure fault, attempts spent) is
// completed with failure: the build did not pass, and neutral would
// satisfy a required check; its title says it was Kiln's fault. A build
// waiting for an admin's approval (a fork's request) is queued with
// "Waiting for approval" as its title, not action_required: that is a
// conclusion, it would complete the check run (and its suite) before
// anything ran, and a check run completed cannot honestly go back to
// queued once approved.

// maxLineRunes clips each log line shown, so that the summary of a job
// stays well under GitHub's limit whatever its log.
const maxLineRunes = 500

// CheckRunState maps Kiln's state to a check run's status and conclusion.
func CheckRunState(st store.Status) (status, conclusion string) {
	switch st {
	case store.StatusQueued:
		return github.CheckQueued, ""
	case store.StatusRunning:
		return github.CheckInProgress, ""
	case store.StatusSuccess:
		return github.CheckCompleted, github.ConclusionSuccess
	case store.StatusTimedOut:
		return github.CheckCompleted, github.ConclusionTimedOut
	case store.StatusCanceled:
		return github.CheckCompleted, github.ConclusionCancelled
	case store.StatusFailure, store.StatusError:
		return github.CheckCompleted, github.ConclusionFailure
	}
	return github.CheckQueued, ""
}

// appClient is the GitHub client of a connection's installation (the
// App's Installations keep one per API URL and installation, each caching
// its installation token).
func (s *Sender) appClient(c *store.ForgeConnection) (*github.Client, error) {
	if !s.cfg.App.Configured() {
		return nil, &refused{msg: "github: the project is connected through a GitHub App installation, and this server has no GitHub App (start it with -github-app-id and -github-app-key)"}
	}
	cl, err := s.cfg.App.Client(c.APIURL, c.InstallationID)
	if err != nil {
		return nil, &refused{msg: err.Error()}
	}
	return cl, nil
}

// sendCheckRun delivers one row as a check run: created the first time a
// build reports the context, updated after.
func (s *Sender) sendCheckRun(ctx context.Context, c *store.ForgeConnection, r *store.ForgeStatus) error {
	owner, repo, ok := strings.Cut(c.Repo, "/")
	if !ok {
		return &refused{msg: fmt.Sprintf("github: repository %q: want owner/name", c.Repo)}
	}
	cl, err := s.appClient(c)
	if err != nil {
		return err
	}
	run, err := s.CheckRun(ctx, r)
	if err != nil {
		return &retryAt{msg: "reading the build: " + err.Error()}
	}
	prev, err := s.st.CheckRun(ctx, r.ProjectID, r.Commit, r.Context)
	if err != nil {
		return &retryAt{msg: "reading the check run's id: " + err.Error()}
	}
	// The sender paces itself (its hold per project, on its clock), as
	// with statuses.
	rctx, cancel := context.WithTimeout(github.Paced(ctx), s.cfg.Timeout)
	defer cancel()
	if prev != nil && prev.BuildID == r.BuildID {
		err := cl.UpdateCheckRun(rctx, owner, repo, prev.CheckRunID, run)
		if !errors.Is(err, github.ErrNotFound) {
			return s.gitHubError(err)
		}
		// Gone from GitHub (or of another App): a new one takes its place.
	}
	id, err := cl.CreateCheckRun(rctx, owner, repo, run)
	if err != nil {
		return s.gitHubError(err)
	}
	if err := s.st.SetCheckRun(ctx, r.ProjectID, r.Commit, r.Context, store.CheckRun{BuildID: r.BuildID, CheckRunID: id}); err != nil {
		// Sent again: another check run of the name, the newest shown.
		return &retryAt{msg: fmt.Sprintf("recording check run %d: %v", id, err)}
	}
	return nil
}

// gitHubError sorts a client error into the sender's two kinds, by the
// rule statuses follow: what may pass (5xx, no answer, a rate limit, a
// request out of time) is retried, when GitHub said if it did; the rest
// is a refusal.
func (s *Sender) gitHubError(err error) error {
	if err == nil {
		return nil
	}
	if rl, ok := errors.AsType[*github.RateLimitError](err); ok {
		return &retryAt{msg: err.Error(), at: s.cfg.Now().Add(rl.RetryAfter)}
	}
	if github.Retryable(err) || errors.Is(err, context.DeadlineExceeded) {
		return &retryAt{msg: err.Error()}
	}
	return &refused{msg: err.Error()}
}

// CheckRun is what a row sets on its check run: the status and
// conclusion of its state, the build's page, and an output that says
// where a build or job failed, with the failing step's last log lines.
func (s *Sender) CheckRun(ctx context.Context, r *store.ForgeStatus) (github.CheckRun, error) {
	status, conclusion := CheckRunState(r.State)
	run := github.CheckRun{Name: r.Context, HeadSHA: r.Commit, Status: status, Conclusion: conclusion,
		DetailsURL: s.TargetURL(r.BuildID), ExternalID: strconv.FormatInt(r.BuildID, 10)}
	if r.JobID != 0 {
		run.ExternalID += "/" + strconv.FormatInt(r.JobID, 10)
	}
	var o output
	var err error
	if r.JobID == 0 {
		o, err = s.buildOutput(ctx, r)
	} else {
		o, err = s.jobOutput(ctx, r)
	}
	if err != nil {
		return run, err
	}
	run.Title, run.Summary, run.StartedAt, run.CompletedAt = o.title, clip(o.summary, github.CheckOutputMax), o.started, o.finished
	if run.StartedAt.IsZero() && r.State != store.StatusQueued {
		run.StartedAt = r.CreatedAt
	}
	if conclusion != "" && run.CompletedAt.IsZero() {
		run.CompletedAt = r.CreatedAt
	}
	return run, nil
}

type output struct {
	title, summary    string
	started, finished time.Time
}

func at(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func (s *Sender) buildOutput(ctx context.Context, r *store.ForgeStatus) (output, error) {
	b, err := s.st.Build(ctx, r.BuildID)
	if errors.Is(err, store.ErrNotFound) {
		return output{title: title(r.State, ""), summary: sentence(r.Description)}, nil
	}
	if err != nil {
		return output{}, err
	}
	o := output{started: at(b.StartedAt), finished: at(b.FinishedAt)}
	if r.State == store.StatusQueued && b.Approval == store.ApprovalWaiting {
		o.title = "Waiting for approval"
		o.summary = "This build is of a pull request from a fork: it waits for a Kiln admin's approval before it runs (`kiln approve " +
			strconv.FormatInt(b.ID, 10) + "`). The details link shows the build."
		return o, nil
	}
	if !r.State.Terminal() {
		o.title, o.summary = title(r.State, ""), "Build "+words(r.State)+"."
		return o, nil
	}
	var failed []*store.Job
	var sb strings.Builder
	fmt.Fprintf(&sb, "Build %s.\n\n", words(r.State))
	for _, j := range b.Jobs {
		fmt.Fprintf(&sb, "- %s %s: %s\n", mark(j.Status), code(j.Name), words(j.Status))
		if j.Status != store.StatusSuccess && j.Status != store.StatusCanceled {
			failed = append(failed, j)
		}
	}
	switch {
	case r.State == store.StatusSuccess:
		o.title = "Succeeded"
	case len(failed) == 1:
		t := jobTitle(failed[0].Status, failingStep(failed[0]))
		o.title = "Job " + quote(failed[0].Name) + ": " + strings.ToLower(t[:1]) + t[1:]
	case len(failed) > 1:
		o.title = fmt.Sprintf("%d jobs did not succeed", len(failed))
	default:
		o.title = title(r.State, "")
	}
	summary := sb.String()
	for i, j := range failed {
		if i == 5 {
			summary += fmt.Sprintf("\n%d more: see the build's page.\n", len(failed)-i)
			break
		}
		sec, err := s.jobSection(ctx, j, "### Job "+code(j.Name)+"\n\n")
		if err != nil {
			return output{}, err
		}
		if len([]rune(summary))+len([]rune(sec)) > github.CheckOutputMax-200 {
			summary += "\nMore on the build's page.\n"
			break
		}
		summary += "\n" + sec
	}
	o.summary = summary
	return o, nil
}

func (s *Sender) jobOutput(ctx context.Context, r *store.ForgeStatus) (output, error) {
	j, err := s.st.Job(ctx, r.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return output{title: title(r.State, ""), summary: sentence(r.Description)}, nil
	}
	if err != nil {
		return output{}, err
	}
	o := output{started: at(j.StartedAt), finished: at(j.FinishedAt)}
	if !r.State.Terminal() {
		// The row's state, not the job's now: a later row says that.
		o.title, o.summary = title(r.State, ""), sentence(r.Description)
		return o, nil
	}
	st := failingStep(j)
	o.title = jobTitle(r.State, st)
	if r.State == store.StatusSuccess {
		o.summary = fmt.Sprintf("Job %s succeeded: %d steps.", code(j.Name), len(j.Steps))
		return o, nil
	}
	o.summary, err = s.jobSection(ctx, j, "")
	return o, err
}

// jobSection is the Markdown of a job that did not succeed: its verdict,
// the failing step with its exit code, Kiln's reason for an error, and the
// step's last log lines as plain text.
func (s *Sender) jobSection(ctx context.Context, j *store.Job, head string) (string, error) {
	var sb strings.Builder
	sb.WriteString(head)
	st := failingStep(j)
	switch {
	case st != nil:
		fmt.Fprintf(&sb, "Step %s %s", code(st.Name), words(st.Status))
		if st.ExitCode != nil && st.Status == store.StatusFailure {
			fmt.Fprintf(&sb, " with exit code %d", *st.ExitCode)
		}
		sb.WriteString(".\n")
	default:
		fmt.Fprintf(&sb, "Job %s %s.\n", code(j.Name), words(j.Status))
	}
	switch {
	case j.Error != "" && st == nil && j.Status == store.StatusFailure:
		// A pipeline file's located errors: the reason is the log.
		sb.WriteString("\n" + fence(plainLines(strings.Split(j.Error, "\n"))))
		return sb.String(), nil
	case j.Status == store.StatusError:
		// Kiln's own message is not shown: it may name agents, hosts,
		// engines.
		sb.WriteString("\nKiln's infrastructure failed, not the job, on every attempt; the build's page has the details.\n")
	}
	if st == nil || s.cfg.LogLines < 0 {
		return sb.String(), nil // Kiln's own lines (step -1) are not a step's
	}
	lines, err := s.st.LogTail(ctx, j.ID, j.Attempt, st.Index, s.cfg.LogLines)
	if err != nil {
		return "", err
	}
	if len(lines) > 0 {
		texts := make([]string, len(lines))
		for i, l := range lines {
			texts[i] = l.Text
		}
		fmt.Fprintf(&sb, "\nThe last %d lines of its log:\n\n%s", len(lines), fence(plainLines(texts)))
	}
	return sb.String(), nil
}

// failingStep is the step that ended the job: the first that failed,
// timed out or erred, else the one running when it ended; nil when no
// step ran.
func failingStep(j *store.Job) *store.Step {
	for _, st := range j.Steps {
		switch st.Status {
		case store.StatusFailure, store.StatusTimedOut, store.StatusError:
			return st
		}
	}
	for _, st := range j.Steps {
		if st.StartedAt != nil && !st.Status.Terminal() || st.Status == store.StatusCanceled {
			return st
		}
	}
	return nil
}

// jobTitle is a check run's title for a job's verdict.
func jobTitle(st store.Status, step *store.Step) string {
	name := ""
	if step != nil {
		name = step.Name
	}
	return title(st, name)
}

func title(st store.Status, step string) string {
	at := ""
	if step != "" {
		at = " at step " + quote(step)
	}
	switch st {
	case store.StatusQueued:
		return "Queued"
	case store.StatusRunning:
		return "Running"
	case store.StatusSuccess:
		return "Succeeded"
	case store.StatusFailure:
		return "Failed" + at
	case store.StatusTimedOut:
		return "Timed out" + at
	case store.StatusCanceled:
		return "Canceled"
	case store.StatusError:
		return "Infrastructure error" + at
	}
	return string(st)
}

func words(st store.Status) string {
	switch st {
	case store.StatusQueued:
		return "queued"
	case store.StatusRunning:
		return "running"
	case store.StatusSuccess:
		return "succeeded"
	case store.StatusFailure:
		return "failed"
	case store.StatusCanceled:
		return "canceled"
	case store.StatusTimedOut:
		return "timed out"
	case store.StatusError:
		return "ended in an infrastructure error (Kiln's, not the job's)"
	case store.StatusSkipped:
		return "skipped"
	}
	return string(st)
}

func mark(st store.Status) string {
	switch st {
	case store.StatusSuccess:
		return "✅"
	case store.StatusCanceled:
		return "⏹️"
	case store.StatusFailure, store.StatusTimedOut, store.StatusError:
		return "❌"
	}
	return "⏳"
}

// quote puts a name from the pipeline file in a title (plain text): one
// line, clipped.
func quote(name string) string {
	return "'" + truncate(strings.Join(strings.Fields(termtext.Plain(name)), " "), 100) + "'"
}

// code is a name in Markdown as inline code, so that whatever it holds
// is shown, not rendered.
func code(name string) string {
	s := truncate(strings.Join(strings.Fields(termtext.Plain(name)), " "), 100)
	ticks := strings.Repeat("`", longestRun(s, '`')+1)
	return ticks + " " + s + " " + ticks
}

// fence is a Markdown code block of text, its fence longer than any run
// of backticks in it.
func fence(text string) string {
	ticks := strings.Repeat("`", max(3, longestRun(text, '`')+1))
	return ticks + "text\n" + text + "\n" + ticks + "\n"
}

func longestRun(s string, c rune) int {
	best, n := 0, 0
	for _, r := range s {
		if r == c {
			n++
			best = max(best, n)
		} else {
			n = 0
		}
	}
	return best
}

// plainLines joins log lines as plain text: escapes removed, controls
// shown, each clipped.
func plainLines(lines []string) string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = truncate(termtext.Plain(l), maxLineRunes)
	}
	return strings.Join(out, "\n")
}

// sentence is a status's description as a sentence.
func sentence(desc string) string {
	if desc == "" {
		return "-"
	}
	return strings.ToUpper(desc[:1]) + desc[1:] + "."
}

// clip bounds s to n characters (GitHub counts characters).
func clip(s string, n int) string { return truncate(s, n) }
