package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/store"
)

// TestWebhookRefused: a delivery that is not authentic, too large, malformed
// or for nothing Kiln knows is refused with a clear error, and nothing of
// it is stored: no delivery, no build. Each refusal is in the server's log
// with the forge, project, delivery id, reason and remote address.
func TestWebhookRefused(t *testing.T) {
	e, logs := newEnvLogged(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	e.project("nosecret", dir, map[string]any{"webhook_secret": ""})
	push := githubPush(t, "main", head)
	signed := githubHeader("push", "d-refused", hookSecret, push)

	// Over the 64 KiB limit: the real payload, padded.
	big := edit(t, push, func(m map[string]any) { m["padding"] = strings.Repeat("x", 65<<10) })

	tests := []struct {
		name        string
		forge, proj string
		header      http.Header
		body        []byte
		code        int
		errCode     string
		msg         []string
	}{
		{"bad signature", "github", "hello", githubHeader("push", "d1", "another-secret-of-16+", push), push,
			401, "bad_signature", []string{"X-Hub-Signature-256 does not match"}},
		{"signature of another body", "github", "hello", githubHeader("push", "d1", hookSecret, fixture(t, "github/push.4.json")), push,
			401, "bad_signature", []string{"does not match"}},
		{"missing signature", "github", "hello", githubHeader("push", "d1", "", push), push,
			401, "bad_signature", []string{"missing X-Hub-Signature-256"}},
		{"signature not hex", "github", "hello", with(signed, "X-Hub-Signature-256", "sha256=zz"), push,
			401, "bad_signature", []string{"not a hex HMAC-SHA256"}},
		{"project without a secret", "github", "nosecret", signed, push,
			401, "bad_signature", []string{"X-Hub-Signature-256 does not match"}},
		{"too large", "github", "hello", githubHeader("push", "d1", hookSecret, big), big,
			413, "too_large", []string{"65536 bytes"}},
		{"malformed JSON", "github", "hello", githubHeader("push", "d1", hookSecret, []byte(`{"ref": "refs/heads/main", "after": }`)), []byte(`{"ref": "refs/heads/main", "after": }`),
			400, "malformed", []string{"invalid character '}'", "at byte"}},
		{"push without after", "github", "hello", githubHeader("push", "d1", hookSecret, []byte(`{"ref": "refs/heads/main"}`)), []byte(`{"ref": "refs/heads/main"}`),
			400, "malformed", []string{`missing "after"`}},
		{"ping that is not an object", "github", "hello", githubHeader("ping", "d1", hookSecret, []byte(`[1]`)), []byte(`[1]`),
			400, "malformed", []string{"ping: the payload is a JSON array"}},
		{"missing delivery id", "github", "hello", without(signed, "X-GitHub-Delivery"), push,
			400, "malformed", []string{"missing X-GitHub-Delivery"}},
		{"unknown project", "github", "nope", signed, push,
			401, "bad_signature", []string{"X-Hub-Signature-256 does not match"}},
		{"too large, declared by the sender", "github", "hello", with(githubHeader("push", "d1", hookSecret, big), "X-Hub-Signature-256", "sha256="+strings.Repeat("00", 32)), big,
			413, "too_large", []string{"65536 bytes"}},
		{"unknown forge", "bitbucket", "hello", signed, push,
			404, "not_found", []string{`unknown forge "bitbucket"`}},
		{"gitlab: wrong token", "gitlab", "hello", gitlabHeader("Push Hook", "d1", "wrong-token-0123456789"), fixture(t, "gitlab/push.json"),
			401, "bad_signature", []string{"X-Gitlab-Token does not match"}},
		{"gitlab: no token", "gitlab", "hello", without(gitlabHeader("Push Hook", "d1", hookSecret), "X-Gitlab-Token"), fixture(t, "gitlab/push.json"),
			401, "bad_signature", []string{"missing X-Gitlab-Token"}},
		{"gitea: bad signature", "gitea", "hello", giteaHeader("d1", "another-secret-of-16+", push), push,
			401, "bad_signature", []string{"X-Gitea-Signature does not match"}},
	}
	reasons := map[string]string{"bad signature": "bad_signature", "project without a secret": "no_secret", "unknown project": "unknown_project",
		"too large": "too_large", "too large, declared by the sender": "too_large", "unknown forge": "unknown_forge"}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			e.hook(tc.forge, tc.proj, tc.header, tc.body).wantError(t, tc.code, tc.errCode, tc.msg...)
			reason, ok := reasons[tc.name]
			if !ok {
				reason = tc.errCode
			}
			delivery := tc.header.Get("X-GitHub-Delivery") + tc.header.Get("X-Gitea-Delivery") + tc.header.Get("Idempotency-Key")
			if tc.forge == "bitbucket" {
				delivery = "" // no forge to say which header names it
			}
			wantRefusalLogged(t, logs, i+1, tc.forge, tc.proj, delivery, reason, tc.code)
			e.wantBuilds(0)
			if n := e.deliveries(); n != 0 {
				t.Errorf("%d deliveries stored", n)
			}
		})
	}
}

// TestWebhookAcknowledged: verified deliveries that build nothing (ping, a
// deleted branch, an event Kiln does not handle) are stored and answered.
func TestWebhookAcknowledged(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	ping := fixture(t, "github/ping.0.json")
	// The examples hold no deleted branch; push.2 deletes a tag.
	deleted := edit(t, fixture(t, "github/push.2.json"), func(m map[string]any) { m["ref"] = "refs/heads/feature" })
	glDeleted := fixture(t, "gitlab/push_deleted.json")

	tests := []struct {
		name   string
		forge  string
		header http.Header
		body   []byte
		code   int
		result string
	}{
		{"ping", "github", githubHeader("ping", "a-ping", hookSecret, ping), ping, 200, "ping"},
		{"branch deleted", "github", githubHeader("push", "a-deleted", hookSecret, deleted), deleted, 202, "ignored: ref deleted"},
		{"gitlab: branch deleted", "gitlab", gitlabHeader("Push Hook", "a-gl-deleted", hookSecret), glDeleted, 202, "ignored: ref deleted"},
		{"issues", "github", githubHeader("issues", "a-issues", hookSecret, ping), ping, 202, "ignored: event issues"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			var out map[string]any
			e.hook(tc.forge, "hello", tc.header, tc.body).want(t, tc.code, &out)
			if out["result"] != tc.result || out["delivery"] == "" || out["build_id"] != nil {
				t.Errorf("answer %v, want result %q and no build", out, tc.result)
			}
			if tc.result == "ping" && out["message"] != "pong" {
				t.Errorf("ping answer %v, want message pong", out)
			}
			e.wantBuilds(0)
			if n := e.deliveries(); n != i+1 {
				t.Errorf("%d deliveries stored, want %d", n, i+1)
			}
		})
	}
}

// TestWebhookPushBuilds: a real GitHub push makes one build of the pushed
// commit, planned into its jobs; the same delivery again is acknowledged as
// a duplicate and builds nothing more.
func TestWebhookPushBuilds(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	body := githubPush(t, "main", head)
	header := githubHeader("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", hookSecret, body)

	var first struct {
		Delivery string `json:"delivery"`
		Result   string `json:"result"`
		BuildID  int64  `json:"build_id"`
		Number   int64  `json:"number"`
	}
	e.hook("github", "hello", header, body).want(t, http.StatusCreated, &first)
	if first.Result != "build" || first.BuildID == 0 || first.Number != 1 || first.Delivery != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
		t.Fatalf("answer %+v", first)
	}

	var again map[string]any
	e.hook("github", "hello", header, body).want(t, http.StatusOK, &again)
	if again["duplicate"] != true || again["build_id"] != float64(first.BuildID) {
		t.Errorf("second delivery: %v, want duplicate of build %d", again, first.BuildID)
	}
	bs := e.wantBuilds(1)
	if n := e.deliveries(); n != 1 {
		t.Errorf("%d deliveries stored, want 1", n)
	}
	if b := bs[0]; b.ID != first.BuildID || b.Trigger != "push" || b.Forge != "github" || b.Branch != "main" || b.Ref != "refs/heads/main" ||
		b.Commit != head || b.Author != "Codertocat" || b.DeliveryID != first.Delivery {
		t.Errorf("build %s", dump(b))
	}
	wantQueued(t, e.waitPlanned(first.BuildID), head)
}

// TestWebhookConcurrentDuplicates: a delivery that arrives several times at
// once (a forge's retry racing the original) makes exactly one build.
func TestWebhookConcurrentDuplicates(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	body := githubPush(t, "main", head)
	header := githubHeader("push", "race-1", hookSecret, body)
	answers := e.sendAll(8, func(int) (string, string, string, any, http.Header) {
		return "", "POST", "/hooks/github/hello", body, header
	})
	created := 0
	var id float64
	for _, r := range answers {
		var out map[string]any
		switch r.code {
		case http.StatusCreated:
			created++
			r.want(t, http.StatusCreated, &out)
		case http.StatusOK:
			r.want(t, http.StatusOK, &out)
			if out["duplicate"] != true {
				t.Errorf("200 that is not a duplicate: %s", r.body)
			}
		default:
			t.Fatalf("HTTP %d: %s", r.code, r.body)
		}
		if id == 0 {
			id = out["build_id"].(float64)
		} else if out["build_id"] != id {
			t.Errorf("answers name builds %v and %v", id, out["build_id"])
		}
	}
	if created != 1 {
		t.Errorf("%d deliveries answered 201, want 1", created)
	}
	e.wantBuilds(1)
	if n := e.deliveries(); n != 1 {
		t.Errorf("%d deliveries stored, want 1", n)
	}
}

// TestWebhookOtherForges: a GitLab Push Hook with the right token and a
// Gitea push, each a build of the pushed commit.
func TestWebhookOtherForges(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)

	gl := edit(t, fixture(t, "gitlab/push.json"), func(m map[string]any) {
		m["after"], m["checkout_sha"] = head, head
	})
	gt := edit(t, fixture(t, "gitea/push.json"), func(m map[string]any) {
		m["after"] = head
		m["head_commit"].(map[string]any)["id"] = head
	})
	tests := []struct {
		forge  string
		header http.Header
		body   []byte
		author string
	}{
		{"gitlab", gitlabHeader("Push Hook", "gl-1", hookSecret), gl, "akeller"},
		{"gitea", giteaHeader("gt-1", hookSecret, gt), gt, ""},
	}
	for _, tc := range tests {
		t.Run(tc.forge, func(t *testing.T) {
			e := e.sub(t)
			var out struct {
				BuildID int64 `json:"build_id"`
			}
			e.hook(tc.forge, "hello", tc.header, tc.body).want(t, http.StatusCreated, &out)
			b := e.waitPlanned(out.BuildID)
			wantQueued(t, b, head)
			if b.Forge != tc.forge || b.Branch != "main" || tc.author != "" && b.Author != tc.author {
				t.Errorf("build %s", dump(b))
			}
		})
	}
}

// TestWebhookIgnoresPayloadCloneURL: the repository a build clones is the
// project's, whatever the payload says. The payload here points at another
// repository that holds the pushed commit too, with a pipeline of its own:
// the build must be planned from, and assigned with, the project's.
func TestWebhookIgnoresPayloadCloneURL(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	evil := t.TempDir()
	git(t, evil, "clone", "-q", dir, ".")
	evilHead := commitFile(t, evil, ".kiln.yml", strings.Replace(pipelineOK, "test:", "evil:", 1))

	body := edit(t, githubPush(t, "main", head), func(m map[string]any) {
		repo := m["repository"].(map[string]any)
		repo["clone_url"], repo["git_url"], repo["ssh_url"], repo["url"] = evil, evil, evil, evil
	})
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	e.hook("github", "hello", githubHeader("push", "evil-1", hookSecret, body), body).want(t, http.StatusCreated, &out)
	wantQueued(t, e.waitPlanned(out.BuildID), head)

	// A commit only the payload's repository holds is not found.
	body = edit(t, githubPush(t, "main", evilHead), func(m map[string]any) {
		m["repository"].(map[string]any)["clone_url"] = evil
	})
	e.hook("github", "hello", githubHeader("push", "evil-2", hookSecret, body), body).want(t, http.StatusCreated, &out)
	b := e.waitBuild(out.BuildID, "finished", func(b *store.Build) bool { return b.Status.Terminal() })
	if b.Status != store.StatusFailure || !strings.Contains(b.Error, "not found in "+dir) {
		t.Errorf("build of a commit of the payload's repository: %s", dump(b))
	}

	e.register("a1")
	a := e.mustClaim("a1")
	if a.CloneURL != dir || a.Commit != head || a.Spec.Name != "test" {
		t.Errorf("assignment clones %q at %s, job %q; want the project's %q at %s, job test", a.CloneURL, a.Commit, a.Spec.Name, dir, head)
	}
}

// TestWebhookCancelsSuperseded: with cancel_superseded, a second push to a
// branch cancels the build of the first; other branches are left alone.
func TestWebhookCancelsSuperseded(t *testing.T) {
	e := newEnv(t)
	dir, first := newRepo(t)
	git(t, dir, "branch", "other")
	second := commitFile(t, dir, "README", "second\n")
	e.project("hello", dir, map[string]any{"cancel_superseded": true})

	other := e.pushGitHub("hello", "s-0", "other", first)
	old := e.pushGitHub("hello", "s-1", "main", first)
	e.waitPlanned(old)
	cur := e.pushGitHub("hello", "s-2", "main", second)

	b := e.build(old)
	if b.Status != store.StatusCanceled || !b.CancelRequested || !strings.Contains(b.Error, "superseded by build #3") {
		t.Errorf("superseded build: %s", dump(b))
	}
	for _, j := range b.Jobs {
		if j.Status != store.StatusCanceled {
			t.Errorf("job of the superseded build: %s", dump(j))
		}
	}
	wantQueued(t, e.waitPlanned(cur), second)
	wantQueued(t, e.waitPlanned(other), first)
}

// gitlabHeader is what GitLab 17.4+ sends, with token as X-Gitlab-Token.
func gitlabHeader(event, delivery, token string) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Gitlab-Event", event)
	h.Set("X-Gitlab-Token", token)
	h.Set("X-Gitlab-Instance", "https://gitlab.example.com")
	h.Set("Idempotency-Key", delivery)
	return h
}

// giteaHeader is what Gitea sends with a push: its own signature and
// GitHub's, and the event under both names.
func giteaHeader(delivery, secret string, body []byte) http.Header {
	h := http.Header{}
	sig := hmacHex(secret, body)
	h.Set("Content-Type", "application/json")
	h.Set("X-Gitea-Event", "push")
	h.Set("X-Gitea-Delivery", delivery)
	h.Set("X-Gitea-Signature", sig)
	h.Set("X-GitHub-Event", "push")
	h.Set("X-Hub-Signature-256", "sha256="+sig)
	return h
}

func with(h http.Header, name, value string) http.Header {
	h = h.Clone()
	h.Set(name, value)
	return h
}

func without(h http.Header, name string) http.Header {
	h = h.Clone()
	h.Del(name)
	return h
}
