package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/store"
)

// TestTriggerBuild: a build started through the API is planned from the
// head of its branch (the default branch when none is named), or from the
// commit it names.
func TestTriggerBuild(t *testing.T) {
	e := newEnv(t)
	dir, first := newRepo(t)
	git(t, dir, "checkout", "-q", "-b", "feature")
	feature := commitFile(t, dir, "README", "feature\n")
	git(t, dir, "checkout", "-q", "main")
	e.project("hello", dir, nil)

	b := e.trigger("hello", "feature")
	if b.ID == 0 || b.Number != 1 || b.Status != store.StatusQueued || b.Trigger != "api" || b.Branch != "feature" || b.Ref != "refs/heads/feature" || b.Commit != "" {
		t.Errorf("triggered %s", dump(b))
	}
	wantQueued(t, e.waitPlanned(b.ID), feature)

	var def store.Build
	e.api("POST", "/api/v1/projects/hello/builds", map[string]string{}).want(t, http.StatusCreated, &def)
	if def.Branch != "main" || def.Number != 2 {
		t.Errorf("triggered without a branch: %s", dump(def))
	}
	wantQueued(t, e.waitPlanned(def.ID), first)

	var pinned store.Build
	e.api("POST", "/api/v1/projects/hello/builds", map[string]string{"branch": "main", "commit": feature}).want(t, http.StatusCreated, &pinned)
	if pinned.Commit != feature {
		t.Errorf("triggered at a commit: %s", dump(pinned))
	}
	wantQueued(t, e.waitPlanned(pinned.ID), feature)

	// Listing, newest first, with filters.
	var bs []*store.Build
	e.api("GET", "/api/v1/builds?project=hello&branch=main", nil).want(t, http.StatusOK, &bs)
	if len(bs) != 2 || bs[0].ID != pinned.ID || bs[1].ID != def.ID || len(bs[0].Jobs) != 0 {
		t.Errorf("builds of main: %s", dump(bs))
	}
	e.api("GET", fmt.Sprintf("/api/v1/builds?limit=1&before=%d", pinned.ID), nil).want(t, http.StatusOK, &bs)
	if len(bs) != 1 || bs[0].ID != def.ID {
		t.Errorf("page: %s", dump(bs))
	}
	e.api("GET", "/api/v1/builds?status=success", nil).want(t, http.StatusOK, &bs)
	if len(bs) != 0 {
		t.Errorf("successful builds: %s", dump(bs))
	}
}

// TestTriggerBuildInvalid: a trigger that is not valid is refused with the
// reason and stores no build.
func TestTriggerBuildInvalid(t *testing.T) {
	e := newEnv(t)
	e.project("hello", "https://git.example.org/hello.git", nil)
	e.refuse(e.admin, []refusal{
		{"short commit", "POST", "/api/v1/projects/hello/builds", map[string]string{"commit": "abc123"}, 400, "invalid", `commit "abc123": want a full 40-character hex SHA`},
		{"upper-case commit", "POST", "/api/v1/projects/hello/builds", map[string]string{"commit": strings.Repeat("A", 40)}, 400, "invalid", "commit"},
		{"commit not hex", "POST", "/api/v1/projects/hello/builds", map[string]string{"commit": strings.Repeat("g", 40)}, 400, "invalid", "commit"},
		{"branch with a space", "POST", "/api/v1/projects/hello/builds", map[string]string{"branch": "my branch"}, 400, "invalid", `branch "my branch": invalid branch name`},
		{"branch with a colon", "POST", "/api/v1/projects/hello/builds", map[string]string{"branch": "a:b"}, 400, "invalid", "invalid branch name"},
		{"unknown field", "POST", "/api/v1/projects/hello/builds", map[string]string{"sha": "x"}, 400, "bad_request", `unknown field "sha"`},
		{"unknown project", "POST", "/api/v1/projects/nope/builds", map[string]string{}, 404, "not_found", `project "nope"`},
	}, func(e *env) { e.wantBuilds(0) })
}

// TestTriggerBuildRefName: a branch name git refuses as a ref, and that a
// forge's push is refused for (forge.checkRef), is refused by the API too,
// instead of making a build that can only end in error.
func TestTriggerBuildRefName(t *testing.T) {
	e := newEnv(t)
	e.project("hello", "https://git.example.org/hello.git", nil)
	for _, branch := range []string{"a..b", "a//b", "/a", "a/", "a.", "a@{1}"} {
		t.Run(branch, func(t *testing.T) {
			e := e.sub(t)
			e.api("POST", "/api/v1/projects/hello/builds", map[string]string{"branch": branch}).wantError(t, http.StatusBadRequest, "invalid", "invalid branch name")
			e.wantBuilds(0)
		})
	}
}

// TestBuildNotFound: build endpoints answer 404 for an unknown build and
// 400 for an id that is not a positive integer.
func TestBuildNotFound(t *testing.T) {
	e := newEnv(t)
	for _, ep := range []struct{ method, suffix string }{
		{"GET", ""}, {"POST", "/cancel"}, {"POST", "/retry"}, {"GET", "/logs"}, {"GET", "/logs/stream"},
	} {
		t.Run(ep.method+ep.suffix, func(t *testing.T) {
			e := e.sub(t)
			e.api(ep.method, "/api/v1/builds/42"+ep.suffix, nil).wantError(t, http.StatusNotFound, "not_found", "build: not found")
			for _, id := range []string{"abc", "0", "-1", "1.5", "99999999999999999999"} {
				e.api(ep.method, "/api/v1/builds/"+id+ep.suffix, nil).wantError(t, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid id %q: want a positive integer", id))
			}
		})
	}
	tests := []struct{ query, msg string }{
		{"limit=0", "limit: want a positive integer"},
		{"limit=x", "limit: want a positive integer"},
		{"before=x", "before: want an integer"},
	}
	for _, tc := range tests {
		e.api("GET", "/api/v1/builds?"+tc.query, nil).wantError(t, http.StatusBadRequest, "invalid", tc.msg)
	}
	e.api("GET", "/api/v1/builds?project=nope", nil).wantError(t, http.StatusNotFound, "not_found", `project "nope"`)
}

// TestCancelAndRetry: a queued build is canceled at once, jobs and all; a
// finished build is retried as a new build of the same commit; an unfinished
// one cannot be retried.
func TestCancelAndRetry(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)

	// Canceled whether or not the planner got to it yet.
	early := e.trigger("hello", "main")
	var canceled store.Build
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", early.ID), nil).want(t, http.StatusAccepted, &canceled)
	if canceled.Status != store.StatusCanceled || !canceled.CancelRequested || canceled.FinishedAt == nil || !strings.Contains(canceled.Error, `canceled by token "admin"`) {
		t.Errorf("canceled %s", dump(canceled))
	}

	planned := e.trigger("hello", "main")
	e.waitPlanned(planned.ID)
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/retry", planned.ID), nil).wantError(t, http.StatusConflict, "conflict", "is queued: only a finished build can be retried")
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", planned.ID), nil).want(t, http.StatusAccepted, &canceled)
	if canceled.Status != store.StatusCanceled || len(canceled.Jobs) != 1 || canceled.Jobs[0].Status != store.StatusCanceled {
		t.Errorf("canceled %s", dump(canceled))
	}
	// Again: nothing changes.
	var again store.Build
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", planned.ID), nil).want(t, http.StatusAccepted, &again)
	if dump(again) != dump(canceled) {
		t.Errorf("second cancel changed the build: %s", dump(again))
	}
	// Nothing of a canceled build is claimable.
	e.register("a1")
	if a := e.claim("a1", 0); a != nil {
		t.Errorf("claimed a job of a canceled build: %s", dump(a))
	}

	git(t, dir, "commit", "-q", "--allow-empty", "-m", "later") // main moves on; the retry must not
	var retry store.Build
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/retry", planned.ID), nil).want(t, http.StatusCreated, &retry)
	if retry.ID == planned.ID || retry.Trigger != "retry" || retry.Commit != head || retry.Branch != "main" || retry.Number != 3 || retry.Status != store.StatusQueued {
		t.Errorf("retry %s", dump(retry))
	}
	wantQueued(t, e.waitPlanned(retry.ID), head)
	e.wantBuilds(3)
}

// TestPlanFailures: a build whose pipeline cannot be planned fails with the
// reason in its log, as the lines of a job named "pipeline": located
// messages for an invalid .kiln.yml.
func TestPlanFailures(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	git(t, dir, "checkout", "-q", "-b", "broken")
	commitFile(t, dir, ".kiln.yml", "image: localhost/kiln/busybox:latest\njobs:\n  Test:\n    steps:\n      - run: \"\"\n")
	git(t, dir, "checkout", "-q", "-b", "nofile")
	git(t, dir, "rm", "-q", ".kiln.yml")
	git(t, dir, "commit", "-q", "-m", "no pipeline")
	git(t, dir, "checkout", "-q", "-b", "symlink")
	commitFile(t, dir, "ci.yml", pipelineOK)
	if err := os.Symlink("ci.yml", filepath.Join(dir, ".kiln.yml")); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", ".kiln.yml")
	git(t, dir, "commit", "-q", "-m", "pipeline as a symlink")
	e.project("hello", dir, nil)

	tests := []struct {
		branch string
		status store.Status
		lines  []string // regular expressions, one per log line
	}{
		{"broken", store.StatusFailure, []string{
			`^\.kiln\.yml:3:3: jobs\.Test: invalid job name "Test": use 1 to 63 lowercase letters`,
			`^\.kiln\.yml:5:14: jobs\.Test\.steps\[0\]\.run: `,
		}},
		{"nofile", store.StatusFailure, []string{`^\.kiln\.yml: no such file at commit [0-9a-f]{12}$`}},
		{"symlink", store.StatusFailure, []string{`^\.kiln\.yml: is a symlink \(to "ci\.yml"\) at commit [0-9a-f]{12}: Kiln reads the pipeline file only as a regular file`}},
	}
	for _, tc := range tests {
		t.Run(tc.branch, func(t *testing.T) {
			e := e.sub(t)
			e.sub(t).wantPlanFailure(tc.branch, tc.status, tc.lines...)
		})
	}
}

// TestPlanMissingBranch: a branch that does not exist is the user's
// mistake, not an infrastructure fault: the build fails at its first
// planning attempt, saying which ref is missing.
func TestPlanMissingBranch(t *testing.T) {
	e := newEnv(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	e.wantPlanFailure("nosuchbranch", store.StatusFailure, `refs/heads/nosuchbranch`)
}

// wantPlanFailure triggers a build of branch and checks that planning ended
// it with status, at the first attempt, the log lines matching the
// regular expressions lines.
func (e *env) wantPlanFailure(branch string, status store.Status, lines ...string) {
	t := e.t
	t.Helper()
	id := e.trigger("hello", branch).ID
	b := e.waitBuild(id, "finished", func(b *store.Build) bool { return b.Status.Terminal() })
	if b.Status != status || len(b.Jobs) != 1 || b.Jobs[0].Name != "pipeline" || b.Jobs[0].Status != status || b.FinishedAt == nil || b.PlanAttempts != 1 {
		t.Fatalf("build %s", dump(b))
	}
	l := e.logs(id)
	if len(l) != 1 || l[0].Name != "pipeline" || len(l[0].Lines) != len(lines) {
		t.Fatalf("logs %s", dump(l))
	}
	for i, re := range lines {
		if got := l[0].Lines[i].Text; !regexp.MustCompile(re).MatchString(got) {
			t.Errorf("log line %d %q does not match %q", i+1, got, re)
		}
		if !strings.Contains(b.Error, l[0].Lines[i].Text) {
			t.Errorf("build error %q lacks line %d", b.Error, i+1)
		}
	}
}

// TestListBuildsInvalid: a filter that can match nothing because it is not
// a valid value is refused with the valid ones, not answered [].
func TestListBuildsInvalid(t *testing.T) {
	e := newEnv(t)
	e.refuse(e.admin, []refusal{
		{"unknown status", "GET", "/api/v1/builds?status=bogus", nil, 400, "invalid",
			`status "bogus": want one of queued, running, success, failure, canceled, timed_out, error`},
		{"status in capitals", "GET", "/api/v1/builds?status=SUCCESS", nil, 400, "invalid", `status "SUCCESS": want one of`},
		{"limit not a number", "GET", "/api/v1/builds?limit=x", nil, 400, "invalid", "limit: want a positive integer"},
		{"unknown project", "GET", "/api/v1/builds?project=nope", nil, 404, "not_found", `project "nope"`},
	}, nil)
	for _, st := range []string{"queued", "running", "success", "failure", "canceled", "timed_out", "error"} {
		var bs []*store.Build
		e.api("GET", "/api/v1/builds?status="+st, nil).want(t, http.StatusOK, &bs)
	}
}
