package api_test

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// metrics scrapes /metrics (no token needed) and returns each sample, keyed
// as the text format writes it: name{label="value",...} with the labels
// sorted by name.
func (e *env) metrics() map[string]float64 {
	e.t.Helper()
	r := e.do("", "GET", "/metrics", nil, nil)
	r.want(e.t, http.StatusOK, nil)
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			e.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sample names a series as metrics keys it; labels are name, value pairs.
func sample(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	m := map[string]string{}
	for i := 0; i < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// wantMetrics checks the value of each named series.
func wantMetrics(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// TestMetrics: deliveries are counted by forge and result, builds by
// status, claims by their queue wait, and agent writes.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)

	push := githubPush(t, "main", head)
	big := edit(t, push, func(m map[string]any) { m["padding"] = strings.Repeat("x", 65<<10) })
	bad := []byte(`{"ref": "refs/heads/main", "after": }`)
	ping := fixture(t, "github/ping.1.json")
	gl := edit(t, fixture(t, "gitlab/push.json"), func(m map[string]any) { m["after"], m["checkout_sha"] = head, head })
	deliveries := []struct {
		forge, project string
		header         http.Header
		body           []byte
		code           int
	}{
		{"github", "hello", githubHeader("push", "m-1", hookSecret, push), push, 201},
		{"github", "hello", githubHeader("push", "m-1", hookSecret, push), push, 200},
		{"github", "hello", githubHeader("push", "m-1", hookSecret, push), push, 200},
		{"github", "hello", githubHeader("push", "m-2", "not-the-secret-at-all", push), push, 401},
		{"github", "hello", githubHeader("push", "m-3", hookSecret, big), big, 413},
		{"github", "hello", githubHeader("push", "m-4", hookSecret, bad), bad, 400},
		{"github", "hello", githubHeader("ping", "m-5", hookSecret, ping), ping, 200},
		{"github", "hello", githubHeader("issues", "m-6", hookSecret, ping), ping, 202},
		{"github", "nope", githubHeader("push", "m-7", hookSecret, push), push, 401}, // as a bad signature
		{"gitlab", "hello", gitlabHeader("Push Hook", "m-8", hookSecret), gl, 201},
	}
	for _, d := range deliveries {
		if r := e.hook(d.forge, d.project, d.header, d.body); r.code != d.code {
			t.Fatalf("delivery %s: HTTP %d, want %d: %s", d.header.Get("X-GitHub-Delivery"), r.code, d.code, r.body)
		}
	}
	bs := e.wantBuilds(2)
	gh, glb := bs[1], bs[0]
	e.waitPlanned(gh.ID)
	e.waitPlanned(glb.ID)

	m := e.metrics()
	wantMetrics(t, m, map[string]float64{
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "build"):           1,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "duplicate"):       2,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "bad_signature"):   1,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "too_large"):       1,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "malformed"):       1,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "ping"):            1,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "ignored"):         1,
		sample("kiln_webhook_deliveries_total", "forge", "github", "result", "unknown_project"): 1,
		sample("kiln_webhook_deliveries_total", "forge", "gitlab", "result", "build"):           1,
		sample("kiln_builds", "status", "queued"):                                               2,
		sample("kiln_builds", "status", "running"):                                              0,
		sample("kiln_job_queue_wait_seconds_count"):                                             0,
	})

	// Play the agent through the GitHub build; cancel the GitLab one.
	e.register("a1")
	a := e.mustClaim("a1")
	if a.BuildID != gh.ID {
		t.Fatalf("claimed a job of build %d, want the oldest, %d", a.BuildID, gh.ID)
	}
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", glb.ID), nil).want(t, http.StatusAccepted, nil)
	wantMetrics(t, e.metrics(), map[string]float64{
		sample("kiln_builds", "status", "queued"):   0,
		sample("kiln_builds", "status", "running"):  1,
		sample("kiln_builds", "status", "canceled"): 1,
		sample("kiln_job_queue_wait_seconds_count"): 1,
	})
	e.sendLogs(a.JobID, a.Attempt, 1, 2, 3).want(t, http.StatusNoContent, nil)
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	e.heartbeat(a.JobID, a.Attempt).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)

	m = e.metrics()
	wantMetrics(t, m, map[string]float64{
		sample("kiln_builds", "status", "success"):                      1,
		sample("kiln_builds", "status", "canceled"):                     1,
		sample("kiln_builds", "status", "running"):                      0,
		sample("kiln_builds", "status", "failure"):                      0,
		sample("kiln_builds", "status", "error"):                        0,
		sample("kiln_builds", "status", "timed_out"):                    0,
		sample("kiln_job_queue_wait_seconds_count"):                     1,
		sample("kiln_log_lines_received_total"):                         3,
		sample("kiln_stale_writes_refused_total"):                       1,
		sample("kiln_job_attempts_finished_total", "status", "success"): 1,
		sample("kiln_job_duration_seconds_count", "status", "success"):  1,
		sample("kiln_leases_expired_total"):                             0,
	})
	if v := m[sample("kiln_job_queue_wait_seconds_sum")]; v <= 0 {
		t.Errorf("queue wait sum %v", v)
	}
}

// TestMetricsForgeLabel: the forge label of the delivery counter takes only
// the forges Kiln knows. It comes from the URL, which anyone can send: were
// it copied as is, each request to /hooks/<random>/<project> would add a
// series to /metrics for good, without a token.
func TestMetricsForgeLabel(t *testing.T) {
	e := newEnv(t)
	e.project("hello", "https://git.example.org/hello.git", nil)
	for i := range 5 {
		e.hook(fmt.Sprintf("junk%d", i), "hello", nil, []byte(`{}`)).wantError(t, http.StatusNotFound, "not_found")
		e.hook(fmt.Sprintf("junk%d", i), "nope", nil, []byte(`{}`)).wantError(t, http.StatusNotFound, "not_found")
	}
	for k := range e.metrics() {
		if strings.Contains(k, "junk") {
			t.Errorf("series %s", k)
		}
	}
}

// With -metrics-token, /metrics needs that token as a bearer token; nothing
// else (no token, a wrong one, an admin API token) gets the metrics.
func TestMetricsToken(t *testing.T) {
	const tok = "scrape-me-0123456789"
	e := newEnv(t, func(c *server.Config) { c.MetricsToken = tok })
	for _, bad := range []string{"", "scrape-me", tok + "x", e.admin} {
		r := e.do(bad, "GET", "/metrics", nil, nil)
		r.wantError(t, http.StatusUnauthorized, "unauthorized")
		if bytes.Contains(r.body, []byte("kiln_")) {
			t.Fatalf("token %q: metrics leaked: %s", bad, r.body)
		}
	}
	r := e.do(tok, "GET", "/metrics", nil, nil)
	r.want(t, http.StatusOK, nil)
	if !bytes.Contains(r.body, []byte("kiln_")) {
		t.Fatalf("no kiln metrics with the token:\n%s", r.body)
	}
	// /healthz stays open: it says only whether the store can write.
	e.do("", "GET", "/healthz", nil, nil).want(t, http.StatusOK, nil)
}
