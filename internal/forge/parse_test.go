package forge

import (
	"bytes"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

const (
	helloSHA  = "6113728f27ae82c7b1a177c8d03f9e96e0adf246" // head of the octokit push examples
	zeroSHA   = "0000000000000000000000000000000000000000"
	gitlabSHA = "f2d94c1be07a3358c6e1d2b7a4f90e3c5b8d1a6e" // head of testdata/gitlab/push.json
)

// TestGitHubExamples signs every real payload extracted from
// @octokit/webhooks-examples as GitHub does and parses it, as GitHub and as
// Gitea (whose payloads are GitHub-shaped).
func TestGitHubExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/github/*.json")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, file := range files {
		event, _, _ := strings.Cut(filepath.Base(file), ".")
		seen[event]++
		body := readFixture(t, file)
		for _, tc := range []struct {
			forge  string
			header http.Header
		}{
			{"github", githubHeader(event, body)},
			{"gitea", giteaHeader(event, body)},
		} {
			t.Run(tc.forge+"/"+filepath.Base(file), func(t *testing.T) {
				ev, err := Parse(tc.forge, tc.header, body, testSecret)
				if err != nil {
					t.Fatal(err)
				}
				if ev.Forge != tc.forge || ev.Name != event || ev.DeliveryID == "" || ev.Kind != map[string]Kind{"push": KindPush, "ping": KindPing, "pull_request": KindPullRequest}[event] {
					t.Fatalf("event = %+v", ev)
				}
				if (ev.Push != nil) != (ev.Kind == KindPush) {
					t.Fatalf("kind %s with push %+v", ev.Kind, ev.Push)
				}
				if p := ev.Push; p != nil {
					if p.Ref == "" || p.Branch == "" && p.Tag == "" || p.Repo != "Codertocat/Hello-World" ||
						p.CloneURL != "https://github.com/Codertocat/Hello-World.git" || p.Author != "Codertocat" {
						t.Errorf("push = %+v", p)
					}
					if p.Deleted == (p.Commit != "") || !p.Deleted && p.Commit != helloSHA {
						t.Errorf("push deleted=%v commit=%q", p.Deleted, p.Commit)
					}
				}
			})
		}
	}
	if seen["push"] == 0 || seen["ping"] == 0 || seen["pull_request"] == 0 {
		t.Fatalf("fixtures: %v; run scripts/webhook-fixtures.sh", seen)
	}
}

// TestGitHubPush checks every field of pushes from real payloads, and of
// branch deletions derived from the real tag deletion (the examples have no
// deleted branch).
func TestGitHubPush(t *testing.T) {
	tagDeleted := readFixture(t, "testdata/github/push.2.json")
	branchDeleted := bytes.Replace(tagDeleted, []byte(`"refs/tags/simple-tag"`), []byte(`"refs/heads/gone"`), 1)
	zeroAfterOnly := bytes.Replace(branchDeleted, []byte(`"deleted": true`), []byte(`"deleted": false`), 1)
	deletedFlagOnly := bytes.Replace(branchDeleted, []byte(`"after": "`+zeroSHA+`"`), []byte(`"after": "`+helloSHA+`"`), 1)
	if bytes.Equal(branchDeleted, tagDeleted) || bytes.Equal(zeroAfterOnly, branchDeleted) || bytes.Equal(deletedFlagOnly, branchDeleted) {
		t.Fatal("testdata/github/push.2.json changed shape")
	}
	repo := Push{
		Author:   "Codertocat",
		Repo:     "Codertocat/Hello-World",
		CloneURL: "https://github.com/Codertocat/Hello-World.git",
		RepoURL:  "https://github.com/Codertocat/Hello-World",
	}
	gone := Push{
		Ref: "refs/heads/gone", Branch: "gone", Before: helloSHA, Deleted: true,
		HTMLURL: "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000",
	}
	tests := []struct {
		name string
		body []byte
		want Push
	}{
		{"new branch", readFixture(t, "testdata/github/push.4.json"), Push{
			Ref: "refs/heads/master", Branch: "master", Before: zeroSHA, Commit: helloSHA,
			Message: "Initial commit",
			HTMLURL: "https://github.com/Codertocat/Hello-World/commit/" + helloSHA,
		}},
		{"new tag", readFixture(t, "testdata/github/push.0.json"), Push{
			Ref: "refs/tags/simple-tag", Tag: "simple-tag", Before: zeroSHA, Commit: helloSHA,
			Message: "Adding a .gitignore file",
			HTMLURL: "https://github.com/Codertocat/Hello-World/compare/simple-tag",
		}},
		{"deleted tag", tagDeleted, Push{
			Ref: "refs/tags/simple-tag", Tag: "simple-tag", Before: helloSHA, Deleted: true,
			HTMLURL: "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000",
		}},
		{"deleted branch", branchDeleted, gone},
		{"zero after, deleted false", zeroAfterOnly, gone},
		{"deleted true, after set", deletedFlagOnly, gone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Parse("github", githubHeader("push", tc.body), tc.body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Author, want.Repo, want.CloneURL, want.RepoURL = repo.Author, repo.Repo, repo.CloneURL, repo.RepoURL
			if ev.Kind != KindPush || ev.Push == nil || *ev.Push != want {
				t.Errorf("got  %+v\nwant %+v", ev.Push, want)
			}
			if ev.DeliveryID != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
				t.Errorf("delivery id = %q", ev.DeliveryID)
			}
		})
	}
}

// TestGitHubAnnotatedTag: "after" names the tag object, head_commit the
// commit; the commit is what gets built.
func TestGitHubAnnotatedTag(t *testing.T) {
	const tagObject = "7c1b9e4a2d6f8035b1e9c7a3d5f2084e6b1c9a7d"
	body := readFixture(t, "testdata/github/push.0.json")
	body = bytes.Replace(body, []byte(`"after": "`+helloSHA+`"`), []byte(`"after": "`+tagObject+`"`), 1)
	ev, err := Parse("github", githubHeader("push", body), body, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Push.Commit != helloSHA || ev.Push.Tag != "simple-tag" {
		t.Errorf("push = %+v", ev.Push)
	}
}

func TestGitLabPush(t *testing.T) {
	repo := Push{
		Author:   "akeller",
		Repo:     "kiln-demo/hello",
		CloneURL: "https://gitlab.example.com/kiln-demo/hello.git",
		RepoURL:  "https://gitlab.example.com/kiln-demo/hello",
	}
	tests := []struct {
		file, event string
		want        Push
	}{
		{"push.json", "Push Hook", Push{
			Ref: "refs/heads/main", Branch: "main", Before: "8c3b5e1f0a9d47e2b6c4d1f3a5e7092b4d6f8a1c", Commit: gitlabSHA,
			Message: "Build with Kiln",
			HTMLURL: "https://gitlab.example.com/kiln-demo/hello/-/commit/" + gitlabSHA,
		}},
		// An annotated tag: after is the tag object, checkout_sha the commit.
		{"tag_push.json", "Tag Push Hook", Push{
			Ref: "refs/tags/v1.2.0", Tag: "v1.2.0", Before: zeroSHA, Commit: gitlabSHA,
		}},
		// A deleted branch: after is all zeros, checkout_sha null.
		{"push_deleted.json", "Push Hook", Push{
			Ref: "refs/heads/feature/old-ci", Branch: "feature/old-ci", Before: gitlabSHA, Deleted: true,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body := readFixture(t, "testdata/gitlab/"+tc.file)
			ev, err := Parse("gitlab", gitlabHeader(tc.event), body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Author, want.Repo, want.CloneURL, want.RepoURL = repo.Author, repo.Repo, repo.CloneURL, repo.RepoURL
			if ev.Forge != "gitlab" || ev.Kind != KindPush || ev.Name != tc.event || ev.Push == nil || *ev.Push != want {
				t.Errorf("got  %+v %+v\nwant %+v", ev, ev.Push, want)
			}
		})
	}
}

// TestGitLabDeliveryID: the id that stays the same across retries of one
// event wins; the per-request and the recursion-detection ids are fallbacks.
func TestGitLabDeliveryID(t *testing.T) {
	body := readFixture(t, "testdata/gitlab/push.json")
	full := gitlabHeader("Push Hook")
	tests := []struct {
		name   string
		header http.Header
		want   string
	}{
		{"all", full, "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"},
		{"before 17.4", without(full, "Idempotency-Key"), "0d2a7e1c-5b3f-4a8e-9c6d-2f1e0b9a8c7d"},
		{"before 16.2", without(full, "Idempotency-Key", "X-Gitlab-Webhook-UUID"), "13792a34-cac6-4fda-95a8-c58e00a3954e"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Parse("gitlab", tc.header, body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if ev.DeliveryID != tc.want {
				t.Errorf("delivery id = %q, want %q", ev.DeliveryID, tc.want)
			}
		})
	}
}

func TestGiteaPush(t *testing.T) {
	body := readFixture(t, "testdata/gitea/push.json")
	sig := hmacHex(testSecret, body)
	const head = "3b7e0d9c1a5f42e8b6d0c4a2e9f1b3d5c7a9e0f2"
	want := Push{
		Ref: "refs/heads/main", Branch: "main", Before: "e0c2a4b6d8f01325476a8b9c0d1e2f3a4b5c6d7e", Commit: head,
		Message:  "ci: run shellcheck on every push",
		Author:   "mbauer",
		Repo:     "infra/dotfiles",
		CloneURL: "https://git.example.org/infra/dotfiles.git",
		HTMLURL:  "https://git.example.org/infra/dotfiles/compare/e0c2a4b6d8f01325476a8b9c0d1e2f3a4b5c6d7e..." + head,
		RepoURL:  "https://git.example.org/infra/dotfiles",
	}
	onlyHub := http.Header{}
	onlyHub.Set("X-Gitea-Event", "push")
	onlyHub.Set("X-Gitea-Delivery", "d1")
	onlyHub.Set("X-Hub-Signature-256", "sha256="+sig)
	forgejo := http.Header{}
	forgejo.Set("X-Forgejo-Event", "push")
	forgejo.Set("X-Forgejo-Delivery", "d2")
	forgejo.Set("X-Forgejo-Signature", sig)
	tests := []struct {
		name, forge string
		header      http.Header
		delivery    string
	}{
		{"gitea", "gitea", giteaHeader("push", body), "9f4e5a3d-60c8-4b2e-8d7f-1a2b3c4d5e6f"},
		{"gitea, X-Hub-Signature-256 only", "gitea", onlyHub, "d1"},
		{"forgejo headers", "forgejo", forgejo, "d2"},
		{"forgejo with gitea headers", "forgejo", giteaHeader("push", body), "9f4e5a3d-60c8-4b2e-8d7f-1a2b3c4d5e6f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Parse(tc.forge, tc.header, body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Forge != "gitea" || ev.Kind != KindPush || ev.DeliveryID != tc.delivery || *ev.Push != want {
				t.Errorf("got  %+v %+v\nwant %+v", ev, ev.Push, want)
			}
		})
	}
}

// TestSignature: every way a delivery can fail authentication is
// ErrSignature, and is found before the body is parsed.
func TestSignature(t *testing.T) {
	push := readFixture(t, "testdata/github/push.4.json")
	notJSON := []byte("{not json")
	gh := githubHeader("push", push)
	gitea := giteaHeader("push", push)
	gl := gitlabHeader("Push Hook")
	tests := []struct {
		name, forge, secret string
		header              http.Header
		body                []byte
		reason              string
	}{
		{"github: wrong secret", "github", "another secret", gh, push, "does not match"},
		{"github: body changed", "github", testSecret, gh, append(bytes.Clone(push), ' '), "does not match"},
		{"github: missing", "github", testSecret, without(gh, "X-Hub-Signature-256"), push, "missing X-Hub-Signature-256"},
		{"github: sha1 prefix", "github", testSecret, with(gh, "X-Hub-Signature-256", "sha1="+hmacHex(testSecret, push)), push, `does not start with "sha256="`},
		{"github: no prefix", "github", testSecret, with(gh, "X-Hub-Signature-256", hmacHex(testSecret, push)), push, `does not start with "sha256="`},
		{"github: not hex", "github", testSecret, with(gh, "X-Hub-Signature-256", "sha256=zz"+hmacHex(testSecret, push)[2:]), push, "not a hex"},
		{"github: truncated", "github", testSecret, with(gh, "X-Hub-Signature-256", "sha256="+hmacHex(testSecret, push)[:40]), push, "not a hex"},
		{"github: old X-Hub-Signature only", "github", testSecret, with(without(gh, "X-Hub-Signature-256"), "X-Hub-Signature", "sha1=00"), push, "missing"},
		{"github: empty secret", "github", "", with(gh, "X-Hub-Signature-256", "sha256="+hmacHex("", push)), push, "no webhook secret"},
		{"github: bad JSON, bad signature", "github", testSecret, gh, notJSON, "does not match"},
		{"gitea: wrong secret", "gitea", "another secret", gitea, push, "X-Gitea-Signature does not match"},
		{"gitea: prefixed gitea signature", "gitea", testSecret, with(gitea, "X-Gitea-Signature", "sha256="+hmacHex(testSecret, push)), push, "not a hex"},
		{"gitea: gitea signature wrong, hub right", "gitea", testSecret, with(gitea, "X-Gitea-Signature", hmacHex("x", push)), push, "X-Gitea-Signature does not match"},
		{"gitea: missing", "gitea", testSecret, without(gitea, "X-Gitea-Signature", "X-Hub-Signature-256"), push, "missing X-Forgejo-Signature or X-Gitea-Signature or X-Hub-Signature-256"},
		{"gitea: empty secret", "forgejo", "", with(gitea, "X-Gitea-Signature", hmacHex("", push)), push, "no webhook secret"},
		{"gitlab: wrong token", "gitlab", "another secret", gl, push, "X-Gitlab-Token does not match"},
		{"gitlab: token is a prefix", "gitlab", testSecret + "!", gl, push, "does not match"},
		{"gitlab: secret is a prefix", "gitlab", testSecret[:5], gl, push, "does not match"},
		{"gitlab: missing token", "gitlab", testSecret, without(gl, "X-Gitlab-Token"), push, "missing X-Gitlab-Token"},
		{"gitlab: empty secret", "gitlab", "", with(gl, "X-Gitlab-Token", ""), push, "no webhook secret"},
		{"gitlab: bad JSON, bad token", "gitlab", "another secret", gl, notJSON, "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Parse(tc.forge, tc.header, tc.body, tc.secret)
			if !errors.Is(err, ErrSignature) || ev != nil {
				t.Fatalf("Parse = %+v, %v; want ErrSignature", ev, err)
			}
			if errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
		})
	}
}

// delivery is one request to Parse.
type delivery struct {
	forge  string
	header http.Header
	body   []byte
}

func githubDelivery(event string, body []byte) delivery {
	return delivery{"github", githubHeader(event, body), body}
}

func gitlabDelivery(event string, body []byte) delivery {
	return delivery{"gitlab", gitlabHeader(event), body}
}

// without returns d without the named headers.
func (d delivery) without(names ...string) delivery {
	d.header = without(d.header, names...)
	return d
}

// with returns d with the header name set to value.
func (d delivery) with(name, value string) delivery {
	d.header = with(d.header, name, value)
	return d
}

// TestMalformed: a verified delivery that cannot be used is ErrMalformed
// with a reason the sender can act on.
func TestMalformed(t *testing.T) {
	const sha = `"after": "` + helloSHA + `"`
	push := func(fields string) []byte { return []byte(`{"ref": "refs/heads/main", ` + fields + `}`) }
	ping := readFixture(t, "testdata/github/ping.0.json")
	glPush := readFixture(t, "testdata/gitlab/push.json")
	tests := []struct {
		name   string
		in     delivery
		reason string
	}{
		{"truncated JSON", githubDelivery("push", []byte(`{"ref": "refs/heads/main", "af`)), "push: unexpected end of JSON input (at byte 30)"},
		{"missing after", githubDelivery("push", push(`"before": "`+zeroSHA+`"`)), `malformed webhook payload: push: missing "after"`},
		{"missing ref", githubDelivery("push", []byte(`{`+sha+`}`)), `push: missing "ref"`},
		{"after not a SHA", githubDelivery("push", push(`"after": "6113728f"`)), `push: "after" "6113728f" is not a commit SHA`},
		{"after a number", githubDelivery("push", push(`"after": 6113728`)), `push: "after" is a JSON number where a string was expected (at byte 43)`},
		{"head commit not a SHA", githubDelivery("push", push(sha+`, "head_commit": {"id": "v1"}`)), `head commit id "v1" is not a commit SHA`},
		{"ref not full", githubDelivery("push", []byte(`{"ref": "main", `+sha+`}`)), `"ref" "main" does not start with "refs/"`},
		{"ref with ..", githubDelivery("push", []byte(`{"ref": "refs/heads/a..b", `+sha+`}`)), "is not a valid ref name"},
		{"ref with a space", githubDelivery("push", []byte(`{"ref": "refs/heads/a b", `+sha+`}`)), `contains ' '`},
		{"ref names nothing", githubDelivery("push", []byte(`{"ref": "refs/heads/", `+sha+`}`)), "names nothing"},
		{"ping not JSON", githubDelivery("ping", []byte(`hello`)), "ping: invalid character 'h' looking for beginning of value (at byte 1)"},
		{"ping a JSON array", githubDelivery("ping", []byte(`[1]`)), "ping: the payload is a JSON array where an object was expected (at byte 1)"},
		{"head commit a string", githubDelivery("push", push(sha+`, "head_commit": "x"`)), `push: "head_commit" is a JSON string where an object was expected`},
		{"commits not an array", gitlabDelivery("Push Hook", push(sha+`, "commits": {}`)), `Push Hook: "commits" is a JSON object where an array was expected`},
		{"trailing garbage", githubDelivery("ping", append(bytes.Clone(ping), '}')), "invalid character '}' after top-level value"},
		{"missing delivery id", githubDelivery("ping", ping).without("X-GitHub-Delivery"), "missing X-GitHub-Delivery header"},
		{"delivery id too long", githubDelivery("ping", ping).with("X-GitHub-Delivery", strings.Repeat("d", 257)), "X-GitHub-Delivery is longer than 256 bytes"},
		{"ref too long", githubDelivery("push", []byte(`{"ref": "refs/heads/`+strings.Repeat("b", 1020)+`", `+sha+`}`)), "is longer than 1024 bytes"},
		{"missing event", githubDelivery("ping", ping).without("X-GitHub-Event"), "missing X-GitHub-Event header"},
		{"event name too long", githubDelivery("ping", ping).with("X-GitHub-Event", strings.Repeat("e", 257)), "X-GitHub-Event is longer than 256 bytes"},
		{"gitea: missing delivery id", delivery{"gitea", without(giteaHeader("push", ping), "X-Gitea-Delivery"), ping}, "missing X-Forgejo-Delivery or X-Gitea-Delivery header"},
		{"gitea: missing event", delivery{"gitea", without(giteaHeader("push", ping), "X-Gitea-Event"), ping}, "missing X-Forgejo-Event or X-Gitea-Event header"},
		{"gitlab: missing delivery id", gitlabDelivery("Push Hook", glPush).without("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID"), "missing Idempotency-Key or X-Gitlab-Webhook-UUID or X-Gitlab-Event-UUID header"},
		{"gitlab: missing event", gitlabDelivery("Push Hook", glPush).without("X-Gitlab-Event"), "missing X-Gitlab-Event header"},
		{"gitlab: missing after", gitlabDelivery("Push Hook", []byte(`{"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": null}`)), `Push Hook: missing "after"`},
		{"gitlab: bad JSON", gitlabDelivery("Tag Push Hook", []byte(`{"ref": refs/tags/v1}`)), "Tag Push Hook: invalid character 'r' looking for beginning of value (at byte 9)"},
		{"gitlab: checkout_sha not a SHA", gitlabDelivery("Push Hook", push(sha+`, "checkout_sha": "main"`)), `head commit id "main" is not a commit SHA`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Parse(tc.in.forge, tc.in.header, tc.in.body, testSecret)
			if !errors.Is(err, ErrMalformed) || ev != nil {
				t.Fatalf("Parse = %+v, %v; want ErrMalformed", ev, err)
			}
			if errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
		})
	}
}

// TestOtherEvents: verified events Kiln does not handle are returned as
// KindOther, without a Push, whatever their body.
func TestOtherEvents(t *testing.T) {
	ping := readFixture(t, "testdata/github/ping.0.json")
	ghPush := readFixture(t, "testdata/github/push.4.json")
	glPush := readFixture(t, "testdata/gitlab/push.json")
	tests := []struct {
		forge, event string
		header       http.Header
		body         []byte
	}{
		{"github", "issues", githubHeader("issues", ping), ping},
		{"github", "workflow_run", githubHeader("workflow_run", ping), ping},
		{"github", "Push", githubHeader("Push", ghPush), ghPush},
		{"gitea", "create", giteaHeader("create", ghPush), ghPush},
		{"gitea", "delete", giteaHeader("delete", []byte(`{"ref": "old", "ref_type": "branch"}`)), []byte(`{"ref": "old", "ref_type": "branch"}`)},
		{"gitlab", "Note Hook", gitlabHeader("Note Hook"), []byte(`{"object_kind": "note"}`)},
		{"gitlab", "System Hook", gitlabHeader("System Hook"), glPush},
		{"gitlab", "push", gitlabHeader("push"), glPush},
	}
	for _, tc := range tests {
		t.Run(tc.forge+"/"+tc.event, func(t *testing.T) {
			ev, err := Parse(tc.forge, tc.header, tc.body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != KindOther || ev.Name != tc.event || ev.Push != nil || ev.DeliveryID == "" {
				t.Errorf("event = %+v", ev)
			}
		})
	}
}

func TestUnknownForge(t *testing.T) {
	body := readFixture(t, "testdata/github/ping.0.json")
	for _, name := range []string{"", "bitbucket", "GitHub", "gitea "} {
		t.Run(name, func(t *testing.T) {
			ev, err := Parse(name, githubHeader("ping", body), body, testSecret)
			if !errors.Is(err, ErrUnknownForge) || ev != nil {
				t.Fatalf("Parse(%q) = %+v, %v; want ErrUnknownForge", name, ev, err)
			}
			if errors.Is(err, ErrSignature) || errors.Is(err, ErrMalformed) {
				t.Errorf("error %v blames the sender", err)
			}
		})
	}
}
