package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// Two servers on one PostgreSQL database whose loops poll once an hour:
// only the hints between them (NOTIFY) can wake a claim waiting on one
// when the other queues a job, and the leader's status sender when the
// other writes the outbox.
func TestHintsWakeTheOtherServer(t *testing.T) {
	if !storetest.HavePostgres() {
		t.Skipf("%s is not set: no PostgreSQL server to test (scripts/postgres.sh starts one)", storetest.Env)
	}
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	database := storetest.PostgresDatabase(t)
	slow := func(c *Config) {
		c.Scheduler.PollInterval = time.Hour
		c.ForgeStatuses.Poll = time.Hour
	}
	a, b := startReplicaWith(t, database, slow), startReplicaWith(t, database, slow)
	ctx := context.Background()
	waitFor(t, "a leader", func() bool { return a.Leader.Leading() || b.Leader.Leading() })
	lead, follow := a, b
	if b.Leader.Leading() {
		lead, follow = b, a
	}

	// A claim waits on the leader; the follower queues the job.
	p := &store.Project{Name: "web", CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := follow.Store.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	claimed := make(chan *store.Job, 1)
	go func() {
		j, err := lead.Sched.Claim(ctx, "agent-1", 0, nil, pipeline.Resources{}, time.Minute)
		if err != nil {
			t.Error(err)
		}
		claimed <- j
	}()
	time.Sleep(200 * time.Millisecond) // let the claim look once and wait (if not, it finds the job at once: no harm)
	bl := &store.Build{ProjectID: p.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := follow.Store.CreateBuild(ctx, bl); err != nil {
		t.Fatal(err)
	}
	if err := follow.Store.PlanBuild(ctx, bl.ID, "abc", []*store.Job{{Name: "test", Spec: []byte(`{}`), TimeoutSeconds: 60}}); err != nil {
		t.Fatal(err)
	}
	follow.Sched.JobsChanged()
	if j := <-claimed; j == nil || j.BuildID != bl.ID {
		t.Fatalf("the claim waiting on the other server got %+v: no hint woke it (its poll is an hour)", j)
	}

	// The follower writes a status; the leader's sender sends it.
	if err := follow.Store.SetProjectForge(ctx, p.ID, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 20)
	if err := follow.Store.CreateBuild(ctx, &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: sha}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the follower's status sent by the leader", func() bool { return len(gh.Statuses()) > 0 })
	if got := gh.Statuses()[0]; got.SHA != sha {
		t.Fatalf("status %+v", got)
	}
}
