package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// githubPR is the real pull_request example of action (from
// @octokit/webhooks-examples), at head, into main, from headRepo's
// branch ("" for the base repository itself).
func githubPR(t *testing.T, action, head, headRepo string) []byte {
	t.Helper()
	data, err := os.ReadFile("../forge/testdata/github/pull_request." + action + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	pr := m["pull_request"].(map[string]any)
	pr["head"].(map[string]any)["sha"] = head
	pr["base"].(map[string]any)["ref"] = "main"
	if headRepo != "" {
		repo := pr["head"].(map[string]any)["repo"].(map[string]any)
		repo["full_name"], repo["id"] = headRepo, 4242
	}
	out, _ := json.Marshal(m)
	return out
}

// A same-repository request and a fork's, end to end on each engine. The
// request's head is on no branch, only under refs/pull/N/head, as a
// fork's commit is on the base repository. The trusted request builds at
// once, with the project's secret and writing its caches. The fork's
// waits for approval; approved, it runs with no secret, reads the caches
// (its base branch's keyed cache, the sticky volume) but what it writes
// to them is not kept: the next trusted build sees the volume and the
// keyed entries as they were.
func TestPullRequestsEndToEnd(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		caches := "cache:\n  - /sticky\n  - key: deps-${{ branch }}\n    restore-keys: [deps-]\n    paths: [/deps]\n"
		step := `echo "event=$KILN_EVENT pr=$KILN_PULL_REQUEST head=$KILN_HEAD_BRANCH base=$KILN_BASE_BRANCH secret=[$API_TOKEN]"; ` +
			`echo "sticky=$(cat /sticky/who 2>/dev/null) deps=$(cat /deps/who 2>/dev/null)"; ` +
			`echo "$WHO" > /sticky/who; echo "$WHO" > /deps/who`
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("env:\n  WHO: main\n"+caches, step)})
		h.addProject("app", repo, projectOpts{secrets: map[string]string{"API_TOKEN": "s3cr3t-t0ken-value"}})
		if b := h.waitDone(h.trigger("app", "main")); b.Status != store.StatusSuccess {
			t.Fatalf("main build %s:\n%s", b.Status, h.logText(b.ID))
		}

		// A request's head, on no branch.
		git(t, repo, "checkout", "-q", "-b", "changes")
		head := commit(t, repo, map[string]string{".kiln.yml": pipelineFile("env:\n  WHO: request\n"+caches, step)})
		git(t, repo, "update-ref", "refs/pull/2/head", head)
		git(t, repo, "checkout", "-q", "main")
		git(t, repo, "branch", "-q", "-D", "changes")

		code, resp := h.postGitHub("app", "pull_request", "pr-1", "webhook-secret-app", githubPR(t, "opened", head, ""))
		if code != http.StatusCreated {
			t.Fatalf("same-repo request: HTTP %d %v", code, resp)
		}
		b := h.waitDone(int64(resp["build_id"].(float64)))
		log := h.logText(b.ID)
		if b.Status != store.StatusSuccess || b.Commit != head || !strings.Contains(log, "event=pull_request pr=2 head=changes base=main secret=[***]") ||
			!strings.Contains(log, "sticky=main deps=main") {
			t.Fatalf("same-repo request's build %s:\n%s", b.Status, log)
		}

		// A fork's request: waits, is approved, runs untrusted.
		git(t, repo, "checkout", "-q", "-b", "forked")
		forkHead := commit(t, repo, map[string]string{".kiln.yml": pipelineFile("env:\n  WHO: fork\n"+caches, step)})
		git(t, repo, "update-ref", "refs/pull/3/head", forkHead)
		git(t, repo, "checkout", "-q", "main")
		git(t, repo, "branch", "-q", "-D", "forked")
		forkPR := githubPR(t, "opened", forkHead, "mallory/Hello-World")
		forkPR = []byte(strings.Replace(string(forkPR), `"number":2`, `"number":3`, -1))
		code, resp = h.postGitHub("app", "pull_request", "pr-2", "webhook-secret-app", forkPR)
		if code != http.StatusCreated || resp["approval"] != store.ApprovalWaiting {
			t.Fatalf("fork's request: HTTP %d %v", code, resp)
		}
		fork := int64(resp["build_id"].(float64))
		if b := h.build(fork); b.Status != store.StatusQueued || b.Planned {
			t.Fatalf("fork's build before approval: %s", dump(b))
		}
		if code := h.do("POST", fmt.Sprintf("/api/v1/builds/%d/approve", fork), nil, nil); code != http.StatusOK {
			t.Fatalf("approve: HTTP %d", code)
		}
		b = h.waitDone(fork)
		log = h.logText(fork)
		for _, want := range []string{"comes from a fork: no secrets, caches read-only", "pr=3 head=changes base=main secret=[]", "sticky=request deps=main", "nothing it wrote is kept"} {
			if b.Status != store.StatusSuccess || !strings.Contains(log, want) {
				t.Fatalf("fork's build %s, want %q:\n%s", b.Status, want, log)
			}
		}
		if strings.Contains(log, "s3cr3t") {
			t.Fatalf("the fork's build saw the secret:\n%s", log)
		}

		// The fork wrote "fork" to both caches: neither kept it. (The
		// trusted request's sticky writes were kept; its keyed cache is
		// its own.)
		b = h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "sticky=request deps=main") {
			t.Fatalf("main build after the fork's:\n%s", log)
		}
		var entries []api.CacheEntryView
		h.do("GET", "/api/v1/projects/app/caches", nil, &entries)
		for _, en := range entries {
			if en.Scope != "main" && en.Scope != "refs/pull/2/head" {
				t.Errorf("cache entry of scope %q", en.Scope)
			}
		}
	})
}
