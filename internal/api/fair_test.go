package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// manyJobs is a .kiln.yml of n jobs, j0 … j(n-1), one step each.
func manyJobs(n int) string {
	var b strings.Builder
	b.WriteString("image: localhost/kiln/busybox:latest\njobs:\n")
	for i := range n {
		fmt.Fprintf(&b, "  j%d: {steps: [echo]}\n", i)
	}
	return b.String()
}

// fairProject creates project name over a repository whose .kiln.yml has
// n jobs, with the request's extra fields, and plans one build of it.
func (e *env) fairProject(name string, n int, extra map[string]any) *store.Build {
	e.t.Helper()
	dir, _ := newRepo(e.t)
	commitFile(e.t, dir, ".kiln.yml", manyJobs(n))
	e.project(name, dir, extra)
	b := e.waitPlanned(e.trigger(name, "main").ID)
	if b.Status != store.StatusQueued || len(b.Jobs) != n {
		e.t.Fatalf("build of %s: %s, %d jobs; want %d queued", name, b.Status, len(b.Jobs), n)
	}
	return b
}

// TestFairClaimAcrossProjects: a project with 3,000 queued jobs does not
// make another project's one-job build wait behind them. Over HTTP, the
// agent's second claim is the small project's job (first in, first out it
// would be the 3,001st): the big project runs one job, the small none.
func TestFairClaimAcrossProjects(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Scheduler.MaxJobsPerBuild = 5000 })
	e.fairProject("big", 3000, nil)
	small := e.fairProject("small", 1, nil)
	e.register("a1")
	var got []string
	for range 2 {
		a := e.mustClaim("a1")
		got = append(got, a.Project)
		if a.Project == "small" && a.BuildID != small.ID {
			t.Fatalf("claimed %s", dump(a))
		}
	}
	if got[1] != "small" {
		t.Fatalf("claims took jobs of %v; the second should be small's", got)
	}
}

// TestFairClaimOneAtATime: the same with an agent that runs one job at a
// time, so that nothing runs at each claim: the project served least
// recently goes first, and the small project's job is still the second.
func TestFairClaimOneAtATime(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Scheduler.MaxJobsPerBuild = 5000 })
	e.fairProject("big", 3000, nil)
	e.fairProject("small", 1, nil)
	e.register("a1")
	var got []string
	for range 2 {
		a := e.mustClaim("a1")
		got = append(got, a.Project)
		e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	}
	if got[1] != "small" {
		t.Fatalf("claims took jobs of %v; the second should be small's", got)
	}
}

// TestProjectMaxRunning: a project's cap on running jobs, set through the
// API, holds when 8 agents claim at once over HTTP; back to the server's
// default (-project-max-running 3), one more runs, then none. The API
// shows the setting and refuses nonsense.
func TestProjectMaxRunning(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Scheduler.ProjectMaxRunning = 3 })
	e.fairProject("capped", 5, map[string]any{"max_running": 2, "weight": 2})
	var v api.ProjectView
	e.api("GET", "/api/v1/projects/capped", nil).want(t, http.StatusOK, &v)
	if v.MaxRunning == nil || *v.MaxRunning != 2 || v.Weight != 2 {
		t.Fatalf("project view %s", dump(v))
	}
	e.refuse(e.admin, []refusal{
		{"negative cap", "PATCH", "/api/v1/projects/capped", map[string]any{"max_running": -2}, 400, "invalid", "max_running: -2"},
		{"zero weight", "PATCH", "/api/v1/projects/capped", map[string]any{"weight": 0}, 400, "invalid", "weight: 0: want 1 to 100"},
		{"huge weight", "POST", "/api/v1/projects", map[string]any{"name": "other", "clone_url": "/tmp/x", "weight": 1000}, 400, "invalid", "weight: 1000"},
	}, nil)

	claimAll := func(n int) (won int) {
		t.Helper()
		answers := e.sendAll(n, func(i int) (string, string, string, any, http.Header) {
			return e.agent, "POST", protocol.Prefix + "/claim", protocol.ClaimRequest{AgentID: fmt.Sprintf("a%d", i), Free: 1}, nil
		})
		for _, r := range answers {
			switch r.code {
			case http.StatusOK:
				won++
			case http.StatusNoContent:
			default:
				t.Fatalf("claim: HTTP %d: %s", r.code, r.body)
			}
		}
		return won
	}
	if won := claimAll(8); won != 2 {
		t.Fatalf("8 agents claiming at once won %d jobs; the project's cap is 2", won)
	}
	e.api("PATCH", "/api/v1/projects/capped", map[string]any{"max_running": -1}).want(t, http.StatusOK, &v)
	if v.MaxRunning != nil || v.Weight != 2 {
		t.Fatalf("after max_running -1: %s", dump(v))
	}
	if won := claimAll(8); won != 1 {
		t.Fatalf("at the server's default cap of 3 with 2 running, 8 agents won %d jobs; want 1", won)
	}
	e.api("PATCH", "/api/v1/projects/capped", map[string]any{"max_running": 0}).want(t, http.StatusOK, &v)
	if won := claimAll(8); won != 2 {
		t.Fatalf("no cap, 2 jobs left: 8 agents won %d", won)
	}
}

// TestMaxJobsPerBuild: a file with more jobs than -max-jobs-per-build fails
// its build with a located error at the first job past the limit.
func TestMaxJobsPerBuild(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Scheduler.MaxJobsPerBuild = 3 })
	dir, _ := newRepo(t)
	git(t, dir, "checkout", "-q", "-b", "many")
	commitFile(t, dir, ".kiln.yml", manyJobs(10))
	e.project("hello", dir, nil)
	e.wantPlanFailure("many", store.StatusFailure,
		`^\.kiln\.yml:6:3: jobs\.j3: job 4 of 10: a pipeline may define at most 3 jobs \(the server's -max-jobs-per-build\)`)
	// At the limit, the file is fine.
	e.waitPlanned(e.trigger("hello", "main").ID)
}
