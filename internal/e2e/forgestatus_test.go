package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// A pushed build run by a real agent in real containers reports to the
// forge: pending, then each job's verdict and the build's, on fakegithub.
func TestForgeStatusesOfARealBuild(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gh := fakegithub.New()
		defer gh.Close()
		gh.AddToken("ghp_e2e")
		h := startServer(t, e)
		h.startAgent("a1", nil)
		repo, head := newRepo(t, map[string]string{
			".kiln.yml": fmt.Sprintf("image: %s\njobs:\n  ok:\n    steps:\n      - echo fine\n  bad:\n    steps:\n      - exit 3\n", testenv.BaseImage),
		})
		h.addProject("app", repo, projectOpts{})
		body := map[string]any{"forge": "github", "forge_repo": "acme/app", "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": "ghp_e2e"}
		if code := h.do("PATCH", "/api/v1/projects/app", body, nil); code != http.StatusOK {
			t.Fatalf("forge connection: HTTP %d", code)
		}
		code, resp := h.postGitHub("app", "push", "delivery-1", "webhook-secret-app", githubPush(t, "refs/heads/main", head))
		if code != http.StatusCreated {
			t.Fatalf("push: HTTP %d %v", code, resp)
		}
		id := int64(resp["build_id"].(float64))
		if b := h.waitDone(id); b.Status != store.StatusFailure {
			t.Fatalf("build %s: %s", b.Status, dump(b))
		}
		final := map[string]string{"kiln": "failure", "kiln/ok": "success", "kiln/bad": "failure"}
		deadline := time.Now().Add(waitLimit)
		for {
			last := map[string]string{}
			first := map[string]string{}
			for _, s := range gh.Statuses() {
				if s.SHA != head || s.Repo != "acme/app" {
					t.Fatalf("status of %s at %s", s.Repo, s.SHA)
				}
				if _, ok := first[s.Context]; !ok {
					first[s.Context] = s.State
				}
				last[s.Context] = s.State
			}
			if fmt.Sprint(last) == fmt.Sprint(final) {
				// Only the newest state of a context is sent: a build that
				// ends before the sender's first round shows only its
				// verdict, so the first state is pending or the final one
				// (the order itself is TestStatusesReachEachForge's).
				if f := first["kiln"]; f != "pending" && f != final["kiln"] {
					t.Errorf("the build's first status %q, want pending or %q", f, final["kiln"])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("statuses never reached %v: %+v", final, gh.Statuses())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
