package forge

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
)

const (
	prSHA    = "ec26c3e57ca3a959ca5aad62de7213c562f8c821" // head of the octokit pull_request examples
	giteaSHA = "3b7e0d9c1a5f42e8b6d0c4a2e9f1b3d5c7a9e0f2" // head of testdata/gitea/pull_request.*.json
)

// Every request fixture of the three forges parses into the request it
// describes: the action in Kiln's words, the forge's ref of the head,
// head and base, and whether it comes from a fork.
func TestPullRequests(t *testing.T) {
	github := PullRequest{
		Number: 2, Title: "Update the README with new information.", Ref: "refs/pull/2/head", Commit: prSHA,
		HeadBranch: "changes", BaseBranch: "master", HeadRepo: "Codertocat/Hello-World", BaseRepo: "Codertocat/Hello-World",
		Author: "Codertocat", HTMLURL: "https://github.com/Codertocat/Hello-World/pull/2",
		CloneURL: "https://github.com/Codertocat/Hello-World.git", RepoURL: "https://github.com/Codertocat/Hello-World",
	}
	gitlab := PullRequest{
		Number: 7, Title: "Add a Kiln pipeline", Ref: "refs/merge-requests/7/head", Commit: gitlabSHA,
		HeadBranch: "feature/ci", BaseBranch: "main", HeadRepo: "kiln-demo/hello", BaseRepo: "kiln-demo/hello",
		Author: "akeller", HTMLURL: "https://gitlab.example.com/kiln-demo/hello/-/merge_requests/7",
		CloneURL: "https://gitlab.example.com/kiln-demo/hello.git", RepoURL: "https://gitlab.example.com/kiln-demo/hello",
	}
	gitea := PullRequest{
		Number: 4, Title: "ci: run shellcheck", Ref: "refs/pull/4/head", Commit: giteaSHA,
		HeadBranch: "ci/shellcheck", BaseBranch: "main", HeadRepo: "infra/dotfiles", BaseRepo: "infra/dotfiles",
		Author: "mbauer", HTMLURL: "https://git.example.org/infra/dotfiles/pulls/4",
		CloneURL: "https://git.example.org/infra/dotfiles.git", RepoURL: "https://git.example.org/infra/dotfiles",
	}
	with := func(p PullRequest, action PRAction, forgeAction string, edit func(*PullRequest)) PullRequest {
		p.Action, p.ForgeAction = action, forgeAction
		if edit != nil {
			edit(&p)
		}
		return p
	}
	draft := func(p *PullRequest) { p.Draft = true }
	tests := []struct {
		forge, file string
		want        PullRequest
	}{
		{"github", "github/pull_request.opened.json", with(github, PROpened, "opened", nil)},
		{"github", "github/pull_request.synchronize.json", with(github, PRUpdated, "synchronize", nil)},
		{"github", "github/pull_request.reopened.json", with(github, PRReopened, "reopened", nil)},
		{"github", "github/pull_request.ready_for_review.json", with(github, PRReady, "ready_for_review", nil)},
		{"github", "github/pull_request.closed.json", with(github, PRClosed, "closed", nil)},
		{"github", "github/pull_request.converted_to_draft.json", with(github, PROther, "converted_to_draft", draft)},
		{"github", "github/pull_request.labeled.json", with(github, PROther, "labeled", nil)},
		{"gitlab", "gitlab/merge_request.open.json", with(gitlab, PROpened, "open", nil)},
		{"gitlab", "gitlab/merge_request.update.json", with(gitlab, PRUpdated, "update", nil)},
		{"gitlab", "gitlab/merge_request.update_title.json", with(gitlab, PROther, "update", nil)},
		{"gitlab", "gitlab/merge_request.close.json", with(gitlab, PRClosed, "close", nil)},
		{"gitlab", "gitlab/merge_request.merge.json", with(gitlab, PRMerged, "merge", nil)},
		{"gitlab", "gitlab/merge_request.open_draft.json", with(gitlab, PROpened, "open", draft)},
		{"gitlab", "gitlab/merge_request.open_fork.json", with(gitlab, PROpened, "open", func(p *PullRequest) { p.HeadRepo, p.Fork = "mallory/hello", true })},
		{"gitea", "gitea/pull_request.opened.json", with(gitea, PROpened, "opened", nil)},
		{"gitea", "gitea/pull_request.synchronized.json", with(gitea, PRUpdated, "synchronized", nil)},
		{"gitea", "gitea/pull_request.closed_merged.json", with(gitea, PRMerged, "closed", nil)},
		{"gitea", "gitea/pull_request.opened_fork.json", with(gitea, PROpened, "opened", func(p *PullRequest) {
			p.HeadRepo, p.Fork, p.Author = "mallory/dotfiles", true, "mallory"
		})},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body := readFixture(t, "testdata/"+tc.file)
			ev, err := Parse(tc.forge, prHeader(tc.forge, body), body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != KindPullRequest || ev.PullRequest == nil {
				t.Fatalf("event %+v", ev)
			}
			if *ev.PullRequest != tc.want {
				t.Errorf("got  %+v\nwant %+v", *ev.PullRequest, tc.want)
			}
		})
	}
}

// prHeader is the header each forge sends with a request event.
func prHeader(forge string, body []byte) http.Header {
	switch forge {
	case "gitlab":
		return gitlabHeader("Merge Request Hook")
	case "gitea":
		return giteaHeader("pull_request", body)
	}
	return githubHeader("pull_request", body)
}

// A fork whose repository was deleted has no head repository: still a
// fork. A request without a number, a head SHA or a valid branch is
// malformed, with the reason.
func TestPullRequestEdges(t *testing.T) {
	opened := readFixture(t, "testdata/github/pull_request.opened.json")
	var m map[string]any
	if err := json.Unmarshal(opened, &m); err != nil {
		t.Fatal(err)
	}
	m["pull_request"].(map[string]any)["head"].(map[string]any)["repo"] = nil
	gone, _ := json.Marshal(m)
	ev, err := Parse("github", githubHeader("pull_request", gone), gone, testSecret)
	if err != nil || !ev.PullRequest.Fork || ev.PullRequest.HeadRepo != "" {
		t.Fatalf("request from a deleted fork: %+v %v", ev.PullRequest, err)
	}
	ev, err = Parse("github", githubHeader("pull_request", opened), opened, testSecret)
	if err != nil || ev.PullRequest.Fork {
		t.Fatalf("same-repo request: %+v %v", ev, err)
	}

	bad := []struct {
		name, old, new, want string
	}{
		{"no head sha", `"sha": "` + prSHA + `"`, `"sha": ""`, "head commit"},
		{"branch with a space", `"ref": "changes"`, `"ref": "bad branch"`, "head branch"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			body := replaceOnce(t, opened, tc.old, tc.new)
			_, err := Parse("github", githubHeader("pull_request", body), body, testSecret)
			if !errors.Is(err, ErrMalformed) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Errorf("err = %v, want ErrMalformed about %s", err, tc.want)
			}
		})
	}
}

func replaceOnce(t *testing.T, body []byte, old, new string) []byte {
	t.Helper()
	out := bytes.Replace(body, []byte(old), []byte(new), 1)
	if bytes.Equal(out, body) {
		t.Fatalf("fixture changed shape: %q not found", old)
	}
	return out
}
