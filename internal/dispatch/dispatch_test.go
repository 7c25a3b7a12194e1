package dispatch

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/metrics"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/scheduler"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// setup is a dispatcher over a real store (the run's dialect) with one
// project holding a secret, and an agent token.
func setup(t *testing.T) (*Dispatcher, *store.Store, *store.Project, int64) {
	t.Helper()
	ctx := context.Background()
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, storetest.Database(t), box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sched := scheduler.New(scheduler.DefaultConfig(), st, nil, metrics.New(nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	p := &store.Project{Name: "web", CloneURL: "/tmp/web", DefaultBranch: "main"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSecret(ctx, p.ID, "NPM_TOKEN", "s3cr3t"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := st.CreateToken(ctx, "agent", store.TokenAgent)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RegisterAgent(ctx, &store.Agent{ID: "a1", Name: "a1", Capacity: 1}, tok.ID); err != nil {
		t.Fatal(err)
	}
	return New(st, sched, nil, nil, "http://kiln.test", 1<<20), st, p, tok.ID
}

func queue(t *testing.T, st *store.Store, b *store.Build, spec string) {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := st.PlanBuild(ctx, b.ID, strings.Repeat("a", 40), []*store.Job{{Name: "test", Spec: []byte(spec), TimeoutSeconds: 60}}); err != nil {
		t.Fatal(err)
	}
}

// A claimed job's assignment carries its spec, the project's secrets and
// the fence (attempt, lease); a fork's request gets no secrets.
func TestAssignmentCarriesSecretsExceptForForks(t *testing.T) {
	d, st, p, tok := setup(t)
	ctx := context.Background()
	spec := `{"image":"busybox","steps":[{"name":"hi","run":"echo hi"}],"timeout_seconds":60}`
	queue(t, st, &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main"}, spec)
	res, err := d.Next(ctx, Claim{AgentID: "a1", TokenID: tok})
	if err != nil || res.Assignment == nil {
		t.Fatalf("claim: %+v %v", res, err)
	}
	a := res.Assignment
	if a.Project != "web" || a.Attempt != 1 || a.Spec.Image != "busybox" || a.Secrets["NPM_TOKEN"] != "s3cr3t" || a.LeaseSeconds <= 0 {
		t.Errorf("assignment: %+v", a)
	}
	if _, err := st.FinishJob(ctx, a.JobID, a.Attempt, store.StatusSuccess, nil, "", 0); err != nil {
		t.Fatal(err)
	}

	queue(t, st, &store.Build{ProjectID: p.ID, Trigger: "push", Event: store.EventPullRequest, Ref: "refs/pull/3/head", Branch: "",
		PullRequest: &store.PullRequest{Number: 3, HeadBranch: "evil", BaseBranch: "main", Fork: true}}, spec)
	res, err = d.Next(ctx, Claim{AgentID: "a1", TokenID: tok})
	if err != nil || res.Assignment == nil {
		t.Fatalf("claim: %+v %v", res, err)
	}
	if a := res.Assignment; !a.Untrusted || len(a.Secrets) != 0 || a.PullRequest != 3 {
		t.Errorf("a fork's assignment: untrusted %v, secrets %v, request %d", a.Untrusted, a.Secrets, a.PullRequest)
	}
}

// A job that cannot be described (its stored spec does not decode) is not
// handed out: its attempt ends in error, to be retried, and the claim
// says why.
func TestUndescribableJobEndsItsAttempt(t *testing.T) {
	d, st, p, tok := setup(t)
	ctx := context.Background()
	queue(t, st, &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main"}, `{"image": 7}`)
	res, err := d.Next(ctx, Claim{AgentID: "a1", TokenID: tok, Max: pipeline.Resources{}})
	if err == nil || res.Assignment != nil || res.Job == nil {
		t.Fatalf("claim of a broken job: %+v %v", res, err)
	}
	j, err := st.Job(ctx, res.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != store.StatusQueued || !strings.Contains(j.Error, "server could not prepare the job") {
		t.Errorf("job after the failed dispatch: %s %q (want queued again, with the reason)", j.Status, j.Error)
	}
}

// No job queued: nothing, and no error.
func TestNothingQueued(t *testing.T) {
	d, _, _, tok := setup(t)
	res, err := d.Next(context.Background(), Claim{AgentID: "a1", TokenID: tok})
	if err != nil || res.Job != nil || res.Assignment != nil {
		t.Fatalf("empty queue: %+v %v", res, err)
	}
}

// A job's assignment carries the project's credentials for its image's
// registry only: none for an image of another registry, none for a
// fork's request.
func TestAssignmentCarriesRegistryForItsImageOnly(t *testing.T) {
	d, st, p, tok := setup(t)
	ctx := context.Background()
	if err := st.SetRegistry(ctx, p.ID, "registry.example.com", "ci", "pull-secret"); err != nil {
		t.Fatal(err)
	}
	if err := st.SetRegistry(ctx, p.ID, "other.example.com:5000", "bot", "other-secret"); err != nil {
		t.Fatal(err)
	}
	claimed := func(image string, b *store.Build) *Result {
		t.Helper()
		queue(t, st, b, `{"image":"`+image+`","steps":[{"name":"hi","run":"echo hi"}],"timeout_seconds":60}`)
		res, err := d.Next(ctx, Claim{AgentID: "a1", TokenID: tok})
		if err != nil || res.Assignment == nil {
			t.Fatalf("claim: %+v %v", res, err)
		}
		if _, err := st.FinishJob(ctx, res.Assignment.JobID, res.Assignment.Attempt, store.StatusSuccess, nil, "", 0); err != nil {
			t.Fatal(err)
		}
		return &res
	}
	push := func() *store.Build {
		return &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main"}
	}
	a := claimed("registry.example.com/team/ci:1", push()).Assignment
	if len(a.Registries) != 1 || a.Registries[0].Host != "registry.example.com" || a.Registries[0].Username != "ci" || a.Registries[0].Password != "pull-secret" {
		t.Errorf("registries for registry.example.com's image: %+v", a.Registries)
	}
	if a := claimed("elsewhere.example.com/team/ci:1", push()).Assignment; len(a.Registries) != 0 {
		t.Errorf("registries for another registry's image: %+v", a.Registries)
	}
	if a := claimed("busybox", push()).Assignment; len(a.Registries) != 0 {
		t.Errorf("registries for an image of the default registry: %+v", a.Registries)
	}
	fork := &store.Build{ProjectID: p.ID, Trigger: "push", Event: store.EventPullRequest, Ref: "refs/pull/4/head",
		PullRequest: &store.PullRequest{Number: 4, HeadBranch: "evil", BaseBranch: "main", Fork: true}}
	if a := claimed("registry.example.com/team/ci:1", fork).Assignment; !a.Untrusted || len(a.Registries) != 0 {
		t.Errorf("a fork's request: untrusted %v, registries %+v", a.Untrusted, a.Registries)
	}
}
