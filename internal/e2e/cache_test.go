package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// A sticky volume keeps a successful job's writes for the next job of the
// project, and drops a failed job's writes.
func TestStickyCacheVolume(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.startAgent("a1", nil)
		count := `n=$(cat /cache/count 2>/dev/null || echo 0); echo "count was $n"; echo $((n+1)) > /cache/count`
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("cache: [/cache]\n", count)})
		h.addProject("app", repo, projectOpts{})

		b := h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "count was 0") || !strings.Contains(log, "sticky volume miss") {
			t.Fatalf("first build %s:\n%s", b.Status, log)
		}
		b = h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "count was 1") || !strings.Contains(log, "sticky volume hit") {
			t.Fatalf("second build %s:\n%s", b.Status, log)
		}
		// A failing job's writes are dropped.
		commit(t, repo, map[string]string{".kiln.yml": pipelineFile("cache: [/cache]\n", "echo 99 > /cache/count; exit 1")})
		if b = h.waitDone(h.trigger("app", "main")); b.Status != store.StatusFailure {
			t.Fatalf("failing build %s", b.Status)
		}
		commit(t, repo, map[string]string{".kiln.yml": pipelineFile("cache: [/cache]\n", count)})
		b = h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); !strings.Contains(log, "count was 2") {
			t.Fatalf("after a failed job the volume changed:\n%s", log)
		}
	})
}

// A keyed cache is saved to the cache service and restored on another
// agent (another host's view): by exact key, then by restore-key prefix.
func TestKeyedCacheFollowsTheProject(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		_, stop1 := h.startAgent("host1", nil)
		keyed := "cache:\n  - key: \"deps-${{ hashFiles('lock.txt') }}\"\n    restore-keys: [deps-]\n    paths: [/deps]\n"
		step := `if [ -f /deps/data ]; then echo "restored $(cat /deps/data)"; else echo "fresh" ; echo v1 > /deps/data; fi`
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile(keyed, step), "lock.txt": "a\n"})
		h.addProject("app", repo, projectOpts{})

		b := h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "fresh") || !strings.Contains(log, ": miss") || !strings.Contains(log, ": saved") {
			t.Fatalf("first build %s:\n%s", b.Status, log)
		}
		stop1()
		h.startAgent("host2", nil)
		b = h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); b.Status != store.StatusSuccess || !strings.Contains(log, "restored v1") || !strings.Contains(log, "hit on exact key") || !strings.Contains(log, "not saved again") {
			t.Fatalf("second build (another host) %s:\n%s", b.Status, log)
		}
		commit(t, repo, map[string]string{"lock.txt": "b\n"})
		b = h.waitDone(h.trigger("app", "main"))
		if log := h.logText(b.ID); !strings.Contains(log, "restored v1") || !strings.Contains(log, "hit on restore key") || !strings.Contains(log, ": saved") {
			t.Fatalf("third build (new key):\n%s", log)
		}
		var entries []api.CacheEntryView
		h.do("GET", "/api/v1/projects/app/caches", nil, &entries)
		if len(entries) != 2 {
			t.Fatalf("cache entries: %+v", entries)
		}
		// The agents' restore reports, recorded on the jobs: a miss, then
		// two hits, and the bytes the hits downloaded.
		var in api.InsightsView
		h.do("GET", "/api/v1/insights?project=app", nil, &in)
		if c := in.Cache; c.Restores != 3 || c.Hits != 2 || c.HitRate == nil || *c.HitRate != 2.0/3 || c.BytesRestored <= 0 {
			t.Errorf("insights' cache: %+v", c)
		}
	})
}

// After a successful job with sticky caches the agent makes the project's
// next sandbox ahead of time (a spare). The next job takes it: the job's
// environment and secrets reach its commands, the volumes hold the last
// job's writes, and the log says so. A job with other needs drops it, and
// so does the agent when it stops.
func TestSpareSandboxServesNextJob(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		_, stop := h.startAgent("a1", nil)
		count := `n=$(cat /cache/count 2>/dev/null || echo 0); echo "count was $n"; echo $((n+1)) > /cache/count; echo "attempt=$KILN_ATTEMPT secret=$API_TOKEN"`
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("cache: [/cache]\n", count)})
		h.addProject("app", repo, projectOpts{secrets: map[string]string{"API_TOKEN": "s3cr3t-t0ken-value"}})
		other, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("cache: [/cache]\n", "echo other")})
		h.addProject("other", other, projectOpts{})

		if b := h.waitDone(h.trigger("app", "main")); b.Status != store.StatusSuccess {
			t.Fatalf("first build %s:\n%s", b.Status, h.logText(b.ID))
		}
		h.waitSpares(1)
		b := h.waitDone(h.trigger("app", "main"))
		log := h.logText(b.ID)
		for _, want := range []string{"made ahead of time", "count was 1", "attempt=1 secret=***"} {
			if b.Status != store.StatusSuccess || !strings.Contains(log, want) {
				t.Fatalf("second build %s, want %q in its log:\n%s", b.Status, want, log)
			}
		}
		// The spare made after it serves no job of another project: that
		// job drops it and runs in a sandbox of its own (after which the
		// spare is the other project's).
		appSpare := h.waitSpares(1)[0].Name
		if b := h.waitDone(h.trigger("other", "main")); b.Status != store.StatusSuccess || strings.Contains(h.logText(b.ID), "made ahead of time") {
			t.Fatalf("other project's build %s:\n%s", b.Status, h.logText(b.ID))
		}
		waitUntil(t, "one spare, not "+appSpare, func() bool {
			s := h.spares()
			return len(s) == 1 && s[0].Name != appSpare
		}, func() string { return fmt.Sprintf("spares: %+v", h.spares()) })
		// Stopping the agent leaves no spare behind.
		if b := h.waitDone(h.trigger("app", "main")); b.Status != store.StatusSuccess {
			t.Fatalf("third build %s", b.Status)
		}
		h.waitSpares(1)
		stop()
		if n := len(h.spares()); n != 0 {
			t.Fatalf("%d spare sandboxes left after the agent stopped", n)
		}
	})
}

func (h *harness) spares() []sandbox.Info {
	h.t.Helper()
	list, err := h.rt.List(context.Background(), map[string]string{sandbox.LabelManaged: "true", sandbox.LabelJob: "spare"})
	if err != nil {
		h.t.Fatal(err)
	}
	return list
}

// waitSpares waits until the engine holds n spare sandboxes, and returns them.
func (h *harness) waitSpares(n int) []sandbox.Info {
	h.t.Helper()
	var s []sandbox.Info
	waitUntil(h.t, fmt.Sprintf("%d spare sandboxes", n), func() bool { s = h.spares(); return len(s) == n },
		func() string { return fmt.Sprintf("spares: %+v", s) })
	return s
}
