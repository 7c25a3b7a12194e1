package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/store"
)

// prRepo is a repository whose main holds a valid pipeline and whose
// request head exists only under ref (as a fork's commit does on the
// base repository): the branch that made it is deleted.
func prRepo(t *testing.T, ref string) (dir, head string) {
	t.Helper()
	dir, _ = newRepo(t)
	git(t, dir, "checkout", "-q", "-b", "changes")
	head = commitFile(t, dir, "README", "a change from the request\n")
	git(t, dir, "update-ref", ref, head)
	git(t, dir, "checkout", "-q", "main")
	git(t, dir, "branch", "-q", "-D", "changes")
	return dir, head
}

// githubPR is the real pull_request example of action, at head commit,
// from headRepo ("" for the base repository itself), into main.
func githubPR(t *testing.T, action, head, headRepo string) []byte {
	t.Helper()
	return edit(t, fixture(t, "github/pull_request."+action+".json"), func(m map[string]any) {
		pr := m["pull_request"].(map[string]any)
		pr["head"].(map[string]any)["sha"] = head
		pr["base"].(map[string]any)["ref"] = "main"
		if headRepo != "" {
			repo := pr["head"].(map[string]any)["repo"].(map[string]any)
			repo["full_name"], repo["id"] = headRepo, 4242
		}
	})
}

type prAnswer struct {
	Result   string `json:"result"`
	BuildID  int64  `json:"build_id"`
	Approval string `json:"approval"`
}

func (e *env) pullRequest(delivery string, body []byte, code int) prAnswer {
	e.t.Helper()
	var out prAnswer
	e.hook("github", "hello", githubHeader("pull_request", delivery, hookSecret, body), body).want(e.t, code, &out)
	return out
}

// A request from a branch of the repository builds its head at once,
// fetched through refs/pull/N/head (the commit is on no branch); the
// build records the request; its job gets the request's variables and
// the project's secrets. A new push to it supersedes the older build;
// closing it cancels what is unfinished; a label changes nothing.
func TestPullRequestBuilds(t *testing.T) {
	e := newEnv(t)
	dir, head := prRepo(t, "refs/pull/2/head")
	e.project("hello", dir, map[string]any{"cancel_superseded": true})
	e.api("PUT", "/api/v1/projects/hello/secrets/DEPLOY_KEY", map[string]string{"value": "hunter2-deploy"}).want(t, http.StatusNoContent, nil)

	out := e.pullRequest("pr-1", githubPR(t, "opened", head, ""), http.StatusCreated)
	if out.Result != "build" || out.BuildID == 0 || out.Approval != "" {
		t.Fatalf("answer %+v", out)
	}
	b := e.waitPlanned(out.BuildID)
	wantQueued(t, b, head)
	want := store.PullRequest{Number: 2, Title: "Update the README with new information.", HeadBranch: "changes", BaseBranch: "main"}
	if b.Event != store.EventPullRequest || b.Trigger != "pull_request" || b.Ref != "refs/pull/2/head" || b.Branch != "" ||
		b.PullRequest == nil || *b.PullRequest != want || b.Author != "Codertocat" || b.Approval != "" {
		t.Fatalf("build %s", dump(b))
	}
	e.register("a1")
	a := e.mustClaim("a1")
	if a.Event != "pull_request" || a.PullRequest != 2 || a.HeadBranch != "changes" || a.BaseBranch != "main" || a.Untrusted ||
		a.Ref != "refs/pull/2/head" || a.Commit != head || a.Secrets["DEPLOY_KEY"] != "hunter2-deploy" {
		t.Errorf("assignment %s", dump(a))
	}

	// New commits: the older build is superseded.
	git(t, dir, "checkout", "-q", "-b", "changes", head)
	second := commitFile(t, dir, "README", "a second change\n")
	git(t, dir, "update-ref", "refs/pull/2/head", second)
	git(t, dir, "checkout", "-q", "main")
	out2 := e.pullRequest("pr-2", githubPR(t, "synchronize", second, ""), http.StatusCreated)
	wantQueued(t, e.waitPlanned(out2.BuildID), second)
	if old := e.build(out.BuildID); !old.CancelRequested || !strings.Contains(old.Error, "superseded") {
		t.Errorf("older build of the request: %s", dump(old))
	}

	// A label: nothing.
	if out := e.pullRequest("pr-3", githubPR(t, "labeled", second, ""), http.StatusAccepted); out.BuildID != 0 || !strings.Contains(out.Result, "labeled") {
		t.Errorf("labeled: %+v", out)
	}
	// Closed: its unfinished build is canceled.
	if out := e.pullRequest("pr-4", githubPR(t, "closed", second, ""), http.StatusAccepted); out.BuildID != 0 {
		t.Errorf("closed: %+v", out)
	}
	if b := e.build(out2.BuildID); !b.CancelRequested || !strings.Contains(b.Error, "request #2 closed") {
		t.Errorf("build of the closed request: %s", dump(b))
	}
	if n := len(e.builds()); n != 2 {
		t.Errorf("%d builds, want 2", n)
	}
}

// A fork's request waits for an admin: it is not planned (a later build
// is), and once approved it runs without the project's secrets and as
// untrusted. Approving again is 409; a rejected one is canceled, saying
// by whom.
func TestForkPullRequestWaitsForApproval(t *testing.T) {
	e := newEnv(t)
	dir, head := prRepo(t, "refs/pull/2/head")
	e.project("hello", dir, nil)
	e.api("PUT", "/api/v1/projects/hello/secrets/DEPLOY_KEY", map[string]string{"value": "hunter2-deploy"}).want(t, http.StatusNoContent, nil)

	out := e.pullRequest("fork-1", githubPR(t, "opened", head, "mallory/Hello-World"), http.StatusCreated)
	if out.Approval != store.ApprovalWaiting || !strings.Contains(out.Result, "waiting") {
		t.Fatalf("answer %+v", out)
	}
	// A build that came later is planned; the fork's still waits.
	later := e.trigger("hello", "main")
	e.waitPlanned(later.ID)
	if b := e.build(out.BuildID); b.Planned || b.Approval != store.ApprovalWaiting || b.PullRequest == nil || !b.PullRequest.Fork || b.Status != store.StatusQueued {
		t.Fatalf("fork's build before approval: %s", dump(b))
	}

	var approved store.Build
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/approve", out.BuildID), nil).want(t, http.StatusOK, &approved)
	if approved.Approval != store.ApprovalApproved || !strings.Contains(approved.ApprovedBy, "token") {
		t.Errorf("approved build %s", dump(approved))
	}
	wantQueued(t, e.waitPlanned(out.BuildID), head)
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/approve", out.BuildID), nil).wantError(t, http.StatusConflict, "not_waiting", "approved")
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/approve", later.ID), nil).wantError(t, http.StatusConflict, "not_waiting", "never needed one")

	e.register("a1")
	for range 2 {
		a := e.mustClaim("a1")
		if a.BuildID != out.BuildID {
			continue
		}
		if !a.Untrusted || len(a.Secrets) != 0 || a.PullRequest != 2 {
			t.Errorf("fork's assignment %s", dump(a))
		}
	}

	// Another fork's request, rejected.
	rej := e.pullRequest("fork-2", githubPR(t, "reopened", head, "mallory/Hello-World"), http.StatusCreated)
	var rejected store.Build
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/reject", rej.BuildID), nil).want(t, http.StatusOK, &rejected)
	if rejected.Status != store.StatusCanceled || rejected.Approval != store.ApprovalRejected || !strings.Contains(rejected.Error, "rejected by token") {
		t.Errorf("rejected build %s", dump(rejected))
	}
}

// The project's settings: forks off (ignored) or run (no approval, still
// untrusted); drafts wait until they are ready.
func TestPullRequestSettings(t *testing.T) {
	e := newEnv(t)
	dir, head := prRepo(t, "refs/pull/2/head")
	e.project("hello", dir, map[string]any{"fork_pull_requests": "off", "draft_pull_requests": "wait"})
	e.api("PATCH", "/api/v1/projects/hello", map[string]any{"fork_pull_requests": "maybe"}).wantError(t, http.StatusBadRequest, "invalid", "approve, run or off")

	if out := e.pullRequest("f-1", githubPR(t, "opened", head, "mallory/Hello-World"), http.StatusAccepted); out.BuildID != 0 || !strings.Contains(out.Result, "fork") {
		t.Errorf("fork with forks off: %+v", out)
	}
	draft := edit(t, githubPR(t, "opened", head, ""), func(m map[string]any) { m["pull_request"].(map[string]any)["draft"] = true })
	if out := e.pullRequest("d-1", draft, http.StatusAccepted); out.BuildID != 0 || !strings.Contains(out.Result, "draft") {
		t.Errorf("draft with drafts waiting: %+v", out)
	}
	if out := e.pullRequest("d-2", githubPR(t, "ready_for_review", head, ""), http.StatusCreated); out.BuildID == 0 {
		t.Errorf("ready for review: %+v", out)
	}

	e.api("PATCH", "/api/v1/projects/hello", map[string]any{"fork_pull_requests": "run"}).want(t, http.StatusOK, nil)
	out := e.pullRequest("f-2", githubPR(t, "opened", head, "mallory/Hello-World"), http.StatusCreated)
	if b := e.waitPlanned(out.BuildID); b.Approval != "" || !b.PullRequest.Fork {
		t.Errorf("fork with forks run: %s", dump(b))
	}
}

// A request whose head was force-pushed away before the build was
// planned: the build ends in error, saying so.
func TestPullRequestHeadGone(t *testing.T) {
	e := newEnv(t)
	dir, head := prRepo(t, "refs/pull/2/head")
	e.project("hello", dir, nil)
	// The request's ref moves on; the old head is on no ref any more.
	git(t, dir, "checkout", "-q", "-b", "other", "main")
	moved := commitFile(t, dir, "OTHER", "force-pushed\n")
	git(t, dir, "update-ref", "refs/pull/2/head", moved)
	git(t, dir, "checkout", "-q", "main")
	git(t, dir, "branch", "-q", "-D", "other")

	out := e.pullRequest("gone-1", githubPR(t, "opened", head, ""), http.StatusCreated)
	b := e.waitBuild(out.BuildID, "ended", func(b *store.Build) bool { return b.Status.Terminal() })
	if b.Status != store.StatusError || !strings.Contains(b.Error, "no longer on its ref") || !strings.Contains(b.Error, moved) {
		t.Errorf("build of a head force-pushed away: %s", dump(b))
	}
}

// GitLab's merge requests and Gitea's pull requests build through their
// own refs.
func TestMergeRequestsOtherForges(t *testing.T) {
	e := newEnv(t)
	dir, head := prRepo(t, "refs/merge-requests/7/head")
	git(t, dir, "update-ref", "refs/pull/4/head", head)
	e.project("hello", dir, nil)
	gl := edit(t, fixture(t, "gitlab/merge_request.open.json"), func(m map[string]any) {
		m["object_attributes"].(map[string]any)["last_commit"].(map[string]any)["id"] = head
	})
	gt := edit(t, fixture(t, "gitea/pull_request.opened.json"), func(m map[string]any) {
		m["pull_request"].(map[string]any)["head"].(map[string]any)["sha"] = head
	})
	giteaPR := giteaHeader("gt-pr-1", hookSecret, gt)
	giteaPR.Set("X-Gitea-Event", "pull_request")
	giteaPR.Set("X-GitHub-Event", "pull_request")
	tests := []struct {
		forge, ref string
		header     http.Header
		body       []byte
		number     int
	}{
		{"gitlab", "refs/merge-requests/7/head", gitlabHeader("Merge Request Hook", "gl-mr-1", hookSecret), gl, 7},
		{"gitea", "refs/pull/4/head", giteaPR, gt, 4},
	}
	for _, tc := range tests {
		t.Run(tc.forge, func(t *testing.T) {
			var out prAnswer
			e.hook(tc.forge, "hello", tc.header, tc.body).want(t, http.StatusCreated, &out)
			b := e.waitPlanned(out.BuildID)
			wantQueued(t, b, head)
			if b.Ref != tc.ref || b.PullRequest == nil || b.PullRequest.Number != tc.number || b.PullRequest.Fork || b.Forge != tc.forge {
				t.Errorf("build %s", dump(b))
			}
		})
	}
}

// A delivery repeated under a new delivery id (Gitea's Replay, GitLab's
// retries before 17.4) is a duplicate on every forge: the same event of
// the same ref at the same commit, a moment after the build it made. A
// new commit, or another action on the request, builds.
func TestRedeliveryUnderNewID(t *testing.T) {
	e := newEnv(t)
	dir, head := prRepo(t, "refs/pull/2/head")
	e.project("hello", dir, nil)
	gh := githubPush(t, "main", head)
	gt := edit(t, fixture(t, "gitea/push.json"), func(m map[string]any) {
		m["after"] = head
		m["head_commit"].(map[string]any)["id"] = head
	})
	gl := edit(t, fixture(t, "gitlab/push.json"), func(m map[string]any) { m["after"], m["checkout_sha"] = head, head })
	opened := githubPR(t, "opened", head, "")
	tests := []struct {
		name, forge string
		header      func(delivery string) http.Header
		body        []byte
	}{
		{"github push", "github", func(d string) http.Header { return githubHeader("push", d, hookSecret, gh) }, gh},
		{"gitea push", "gitea", func(d string) http.Header { return giteaHeader(d, hookSecret, gt) }, gt},
		{"gitlab push", "gitlab", func(d string) http.Header { return gitlabHeader("Push Hook", d, hookSecret) }, gl},
		{"github request", "github", func(d string) http.Header { return githubHeader("pull_request", d, hookSecret, opened) }, opened},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var first, again map[string]any
			e.hook(tc.forge, "hello", tc.header(tc.name+"-1"), tc.body).want(t, http.StatusCreated, &first)
			e.hook(tc.forge, "hello", tc.header(tc.name+"-2"), tc.body).want(t, http.StatusOK, &again)
			if again["duplicate"] != true || again["build_id"] != first["build_id"] {
				t.Errorf("redelivery under a new id: %v, want a duplicate of %v", again, first["build_id"])
			}
		})
	}
	// Another action on the same request at the same commit builds.
	reopened := githubPR(t, "reopened", head, "")
	e.hook("github", "hello", githubHeader("pull_request", "reopen-1", hookSecret, reopened), reopened).want(t, http.StatusCreated, nil)
}

// A request into another repository than the project's (when the two
// clone URLs can be compared) is 404, and nothing is stored.
func TestPullRequestForAnotherRepository(t *testing.T) {
	e := newEnv(t)
	e.project("hello", "https://git.example.invalid/acme/other.git", nil)
	body := githubPR(t, "opened", strings.Repeat("a", 40), "")
	e.hook("github", "hello", githubHeader("pull_request", "other-1", hookSecret, body), body).
		wantError(t, http.StatusNotFound, "not_found", "Codertocat/Hello-World")
	if n := len(e.builds()); n != 0 || e.deliveries() != 0 {
		t.Errorf("%d builds, %d deliveries stored", n, e.deliveries())
	}
}
