package forge

import (
	"fmt"
	"strconv"
	"strings"
)

// PullRequest is a pull request (GitHub, Gitea/Forgejo) or merge request
// (GitLab) event in forge-neutral form.
type PullRequest struct {
	// Action is what happened, normalized; ForgeAction is the forge's own
	// word for it ("synchronize", "update", "synchronized").
	Action      PRAction
	ForgeAction string
	Number      int    // the request's number (GitLab: iid)
	Title       string // first line
	// Ref is the forge's own ref of the request's head, which the base
	// repository serves even when the head lives in a fork:
	// refs/pull/N/head (GitHub, Gitea) or refs/merge-requests/N/head.
	Ref        string
	Commit     string // the head commit, lower-case hex
	HeadBranch string // the branch in the head repository
	BaseBranch string // the branch the request would merge into
	HeadRepo   string // full name; "" when the head repository is gone
	BaseRepo   string // full name
	// Fork: the head repository is not the base repository (or is gone).
	// A fork's request is untrusted: whoever opened it controls its
	// .kiln.yml without being able to push to the base repository.
	Fork     bool
	Draft    bool
	Author   string // who opened the request
	HTMLURL  string // the request's page
	CloneURL string // the base repository's
	RepoURL  string // the base repository's page
}

// PRAction is what happened to a request, in Kiln's words.
type PRAction string

const (
	PROpened   PRAction = "opened"   // opened (also as a draft)
	PRUpdated  PRAction = "updated"  // new commits pushed to its head
	PRReopened PRAction = "reopened" // reopened after being closed
	PRReady    PRAction = "ready"    // a draft marked ready for review
	PRClosed   PRAction = "closed"   // closed without merging
	PRMerged   PRAction = "merged"   // merged (and so closed)
	// PROther: labels, assignees, reviews, edits, approvals: nothing to
	// build or cancel.
	PROther PRAction = "other"
)

// Builds reports whether the action asks for a build of the head commit.
func (a PRAction) Builds() bool {
	return a == PROpened || a == PRUpdated || a == PRReopened || a == PRReady
}

// Ends reports whether the request is no longer open after the action.
func (a PRAction) Ends() bool { return a == PRClosed || a == PRMerged }

// maxTitle bounds a request's title as Kiln stores it (GitHub's limit is
// 256 characters; GitLab's 255).
const maxTitle = 1024

// prPayload is the part of a forge's request payload Kiln reads.
type prPayload interface {
	pullRequest() *PullRequest
}

// githubPRPayload is the part of a GitHub (or Gitea/Forgejo) pull_request
// payload Kiln reads.
type githubPRPayload struct {
	Action      string `json:"action"`
	Number      int    `json:"number"`
	PullRequest struct {
		Number  int    `json:"number"`
		Title   string `json:"title"`
		HTMLURL string `json:"html_url"`
		Draft   bool   `json:"draft"`
		Merged  bool   `json:"merged"`
		User    struct {
			Login string `json:"login"`
		} `json:"user"`
		Head githubPRBranch `json:"head"`
		Base githubPRBranch `json:"base"`
	} `json:"pull_request"`
	Repository struct {
		FullName string `json:"full_name"`
		CloneURL string `json:"clone_url"`
		HTMLURL  string `json:"html_url"`
	} `json:"repository"`
}

// githubPRBranch is a request's head or base: a branch of a repository.
type githubPRBranch struct {
	Ref  string `json:"ref"`
	SHA  string `json:"sha"`
	Repo *struct {
		ID       int64  `json:"id"`
		FullName string `json:"full_name"`
	} `json:"repo"` // null when a fork's repository was deleted
}

func (pl *githubPRPayload) pullRequest() *PullRequest {
	pr := pl.PullRequest
	p := &PullRequest{
		ForgeAction: pl.Action,
		Number:      firstPositive(pr.Number, pl.Number),
		Title:       pr.Title,
		Commit:      pr.Head.SHA,
		HeadBranch:  pr.Head.Ref,
		BaseBranch:  pr.Base.Ref,
		Draft:       pr.Draft,
		Author:      pr.User.Login,
		HTMLURL:     pr.HTMLURL,
		CloneURL:    pl.Repository.CloneURL,
		RepoURL:     pl.Repository.HTMLURL,
		BaseRepo:    pl.Repository.FullName,
	}
	if pr.Base.Repo != nil {
		p.BaseRepo = firstNonEmpty(pr.Base.Repo.FullName, p.BaseRepo)
	}
	p.Fork = true
	if h := pr.Head.Repo; h != nil {
		p.HeadRepo = h.FullName
		b := pr.Base.Repo
		p.Fork = b == nil || h.FullName != b.FullName || h.ID != b.ID
	}
	p.Ref = fmt.Sprintf("refs/pull/%d/head", p.Number)
	switch pl.Action {
	case "opened":
		p.Action = PROpened
	case "synchronize", "synchronized": // GitHub, Gitea
		p.Action = PRUpdated
	case "reopened":
		p.Action = PRReopened
	case "ready_for_review":
		p.Action = PRReady
	case "closed":
		p.Action = PRClosed
		if pr.Merged {
			p.Action = PRMerged
		}
	default:
		p.Action = PROther
	}
	return p
}

// gitlabMRPayload is the part of a GitLab "Merge Request Hook" payload Kiln
// reads.
type gitlabMRPayload struct {
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectAttributes struct {
		IID             int    `json:"iid"`
		Title           string `json:"title"`
		URL             string `json:"url"`
		Action          string `json:"action"`
		State           string `json:"state"`
		SourceBranch    string `json:"source_branch"`
		TargetBranch    string `json:"target_branch"`
		SourceProjectID int64  `json:"source_project_id"`
		TargetProjectID int64  `json:"target_project_id"`
		Draft           bool   `json:"draft"`
		WorkInProgress  bool   `json:"work_in_progress"` // before GitLab 13.2's "draft"
		// OldRev is set on an "update" that pushed new commits (the
		// head before them); an update of the title or labels has none.
		OldRev     string `json:"oldrev"`
		LastCommit struct {
			ID string `json:"id"`
		} `json:"last_commit"`
		Source *gitlabMRProject `json:"source"` // null when the fork was deleted
		Target gitlabMRProject  `json:"target"`
	} `json:"object_attributes"`
}

type gitlabMRProject struct {
	PathWithNamespace string `json:"path_with_namespace"`
	GitHTTPURL        string `json:"git_http_url"`
	WebURL            string `json:"web_url"`
}

func (pl *gitlabMRPayload) pullRequest() *PullRequest {
	oa := pl.ObjectAttributes
	p := &PullRequest{
		ForgeAction: oa.Action,
		Number:      oa.IID,
		Title:       oa.Title,
		Ref:         fmt.Sprintf("refs/merge-requests/%d/head", oa.IID),
		Commit:      oa.LastCommit.ID,
		HeadBranch:  oa.SourceBranch,
		BaseBranch:  oa.TargetBranch,
		BaseRepo:    oa.Target.PathWithNamespace,
		Draft:       oa.Draft || oa.WorkInProgress,
		Author:      pl.User.Username,
		HTMLURL:     oa.URL,
		CloneURL:    oa.Target.GitHTTPURL,
		RepoURL:     oa.Target.WebURL,
	}
	if oa.Source != nil {
		p.HeadRepo = oa.Source.PathWithNamespace
	}
	p.Fork = oa.Source == nil || oa.SourceProjectID != oa.TargetProjectID || p.HeadRepo != p.BaseRepo
	switch oa.Action {
	case "open":
		p.Action = PROpened
	case "update":
		// Only an update that moved the head asks for a build; GitLab
		// sends "update" for title, label and assignee changes too.
		p.Action = PROther
		if oa.OldRev != "" {
			p.Action = PRUpdated
		}
	case "reopen":
		p.Action = PRReopened
	case "close":
		p.Action = PRClosed
	case "merge":
		p.Action = PRMerged
	default:
		p.Action = PROther
	}
	return p
}

// normalizePR checks what every request event must have and normalizes
// it: a positive number, a head commit SHA (lower-case), branch names git
// accepts, a first-line title of bounded length.
func normalizePR(event string, p *PullRequest) error {
	if p.Number <= 0 {
		return fmt.Errorf("%w: %s: missing request number", ErrMalformed, event)
	}
	p.Commit = strings.ToLower(p.Commit)
	if !isSHA(p.Commit) || isZeroSHA(p.Commit) {
		return fmt.Errorf("%w: %s: head commit %.100q is not a commit SHA", ErrMalformed, event, p.Commit)
	}
	for _, b := range []struct{ field, name string }{{"head branch", p.HeadBranch}, {"base branch", p.BaseBranch}} {
		if b.name == "" {
			return fmt.Errorf("%w: %s: missing %s", ErrMalformed, event, b.field)
		}
		if err := CheckRef("refs/heads/" + b.name); err != nil {
			return fmt.Errorf("%w: %s: %s %.100q %v", ErrMalformed, event, b.field, b.name, err)
		}
	}
	if p.BaseRepo == "" {
		return fmt.Errorf("%w: %s: missing base repository", ErrMalformed, event)
	}
	p.Title = firstLine(p.Title)
	if len(p.Title) > maxTitle {
		p.Title = strings.ToValidUTF8(p.Title[:maxTitle], "")
	}
	return nil
}

// firstPositive returns the first of values above 0, or 0.
func firstPositive(values ...int) int {
	for _, v := range values {
		if v > 0 {
			return v
		}
	}
	return 0
}

// PullRequestRef returns the ref a forge serves a request's head under,
// for a forge name as Parse takes it.
func PullRequestRef(forgeName string, number int) string {
	if forgeName == "gitlab" {
		return "refs/merge-requests/" + strconv.Itoa(number) + "/head"
	}
	return "refs/pull/" + strconv.Itoa(number) + "/head"
}
