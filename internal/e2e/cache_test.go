package e2e

import (
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/cache"
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
		var entries []cache.Entry
		h.do("GET", "/api/v1/projects/app/caches", nil, &entries)
		if len(entries) != 2 {
			t.Fatalf("cache entries: %+v", entries)
		}
	})
}
