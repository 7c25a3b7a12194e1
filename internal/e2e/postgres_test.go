package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
	"github.com/kilnci/kiln/internal/testenv"
)

// Two control planes on one PostgreSQL database, as replicas behind a
// load balancer are: a push delivered to one is built by an agent of the
// other, in a real sandbox, and either shows the build and its log. (Both
// plan, each build under a lease of its own; the background work runs on
// the holder of the leader lease: internal/server's
// TestReplicasRunBackgroundWorkOnce.)
func TestTwoServersShareOnePostgres(t *testing.T) {
	if !storetest.HavePostgres() {
		t.Skipf("%s is not set: no PostgreSQL server to test (scripts/postgres.sh starts one)", storetest.Env)
	}
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		database := storetest.PostgresDatabase(t)
		same := func(c *server.Config) {
			c.Database = database
			// Replicas share the key sealing secrets at rest.
			c.SecretKey = strings.Repeat("5e", 32)
		}
		a := startServerWith(t, e, same)
		b := startServerWith(t, e, same)
		b.admin = a.admin // the first made the admin token; the second finds it there
		a.startAgent("a1", nil)
		repo, head := newRepo(t, map[string]string{
			".kiln.yml": pipelineFile("", `echo "built $KILN_COMMIT"`, `echo "token=$API_TOKEN"`),
		})
		b.addProject("app", repo, projectOpts{secrets: map[string]string{"API_TOKEN": "pg-s3cr3t-value"}})

		code, resp := b.postGitHub("app", "push", "pg-delivery-1", "webhook-secret-app", githubPush(t, "refs/heads/main", head))
		if code != http.StatusCreated {
			t.Fatalf("push to the second server: HTTP %d %v", code, resp)
		}
		id := int64(resp["build_id"].(float64))
		built := a.waitDone(id)
		if built.Status != store.StatusSuccess {
			t.Fatalf("build %s:\n%s", built.Status, a.logText(id))
		}
		for _, h := range []*harness{a, b} {
			log := h.logText(id)
			if !strings.Contains(log, "built "+head) || !strings.Contains(log, "token=***") || strings.Contains(log, "pg-s3cr3t") {
				t.Errorf("log through %s:\n%s", h.url, log)
			}
		}
		// The same delivery to the other replica is a duplicate.
		if code, resp := a.postGitHub("app", "push", "pg-delivery-1", "webhook-secret-app", githubPush(t, "refs/heads/main", head)); code != http.StatusOK || resp["duplicate"] != true {
			t.Fatalf("redelivery to the first server: HTTP %d %v", code, resp)
		}
	})
}
