package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// replica is a server serving on a shared database.
type replica struct {
	*Server
	url  string
	stop func()
}

func startReplica(t *testing.T, database string) *replica {
	t.Helper()
	return startReplicaWith(t, database, nil)
}

// startReplicaWith is startReplica with tune applied to its config.
func startReplicaWith(t *testing.T, database string, tune func(*Config)) *replica {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database = database
	cfg.SecretKey = strings.Repeat("5e", 32) // replicas share the key
	cfg.Listen = "127.0.0.1:0"
	cfg.ReserveBytes = 0
	cfg.ForgeStatuses.Poll = 20 * time.Millisecond
	cfg.LeaderTTL = 3 * time.Second // a try every second
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ln, _ := srv.Listen()
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	r := &replica{Server: srv, url: "http://" + ln.Addr().String()}
	stopped := false
	r.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			srv.Close()
		}
	}
	t.Cleanup(r.stop)
	return r
}

// metric reads one sample from the replica's /metrics (0 when absent).
func (r *replica) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", sample, sc.Text())
			}
			return f
		}
	}
	return 0
}

const (
	leaderSample    = `kiln_leader{lease="background"}`
	deliveredSample = `kiln_forge_statuses_total{forge="github",result="delivered"}`
)

// Two servers on one PostgreSQL database: one holds the leader lease and
// runs the background work, so each commit status reaches GitHub once,
// sent by it alone, and only its reaper ends an expired job lease;
// stopped, it hands the lease over and the other sends the statuses
// written after.
func TestReplicasRunBackgroundWorkOnce(t *testing.T) {
	if !storetest.HavePostgres() {
		t.Skipf("%s is not set: no PostgreSQL server to test (scripts/postgres.sh starts one)", storetest.Env)
	}
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	database := storetest.PostgresDatabase(t)
	a, b := startReplica(t, database), startReplica(t, database)
	ctx := context.Background()

	// One leads, the other does not, whichever it is.
	waitFor(t, "a leader", func() bool { return a.Leader.Leading() || b.Leader.Leading() })
	lead, follow := a, b
	if b.Leader.Leading() {
		lead, follow = b, a
	}
	if follow.Leader.Leading() || lead.metric(t, leaderSample) != 1 || follow.metric(t, leaderSample) != 0 {
		t.Fatalf("kiln_leader: %v and %v", lead.metric(t, leaderSample), follow.metric(t, leaderSample))
	}

	p := &store.Project{Name: "web", CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := follow.Store.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := follow.Store.SetProjectForge(ctx, p.ID, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	// Builds stored through either server: each writes one pending
	// status to the outbox.
	push := func(srv *replica, from, n int) {
		for i := from; i < from+n; i++ {
			sha := fmt.Sprintf("%040x", i+1)
			if err := srv.Store.CreateBuild(ctx, &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: sha}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sentOnce := func(want int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d statuses sent", want), func() bool {
			n, _, err := lead.Store.OldestPendingForgeStatus(ctx)
			return err == nil && n == 0 && len(gh.Statuses()) >= want
		})
		per := map[string]int{}
		for _, s := range gh.Statuses() {
			per[s.SHA]++
		}
		if len(per) != want || len(gh.Statuses()) != want {
			t.Fatalf("GitHub got %d statuses for %d commits, want %d once each: %v", len(gh.Statuses()), len(per), want, per)
		}
	}
	push(a, 0, 3)
	push(b, 3, 3)
	sentOnce(6)
	if got := lead.metric(t, deliveredSample); got != 6 {
		t.Errorf("the leader delivered %v statuses, want 6", got)
	}
	if got := follow.metric(t, deliveredSample); got != 0 {
		t.Errorf("the other server delivered %v statuses, want none", got)
	}

	// The reaper too: a job whose lease ran out is ended by the leader.
	q := &store.Project{Name: "api", CloneURL: "/tmp/y", DefaultBranch: "main"}
	if err := follow.Store.CreateProject(ctx, q); err != nil {
		t.Fatal(err)
	}
	jb := &store.Build{ProjectID: q.ID, Trigger: "api", Ref: "refs/heads/main", Branch: "main"}
	if err := follow.Store.CreateBuild(ctx, jb); err != nil {
		t.Fatal(err)
	}
	if err := follow.Store.PlanBuild(ctx, jb.ID, "abc", []*store.Job{{Name: "test", Spec: []byte(`{}`), TimeoutSeconds: 60, MaxAttempts: 1}}); err != nil {
		t.Fatal(err)
	}
	if j, err := follow.Store.ClaimJob(ctx, store.Claim{AgentID: "gone", Lease: time.Millisecond, StepNames: func([]byte) []string { return nil }, AliveWithin: time.Minute}); err != nil || j == nil {
		t.Fatalf("claim: %v %v", j, err)
	}
	waitFor(t, "the reaper ended the job", func() bool {
		got, err := follow.Store.Build(ctx, jb.ID)
		return err == nil && got.Status == store.StatusError
	})
	if l, f := lead.metric(t, "kiln_leases_expired_total"), follow.metric(t, "kiln_leases_expired_total"); l != 1 || f != 0 {
		t.Errorf("leases expired: %v by the leader, %v by the other, want 1 and 0", l, f)
	}

	// The leader stops: it releases the lease, and the other takes over
	// at its next try (well before the lease's 3s would have run out
	// were that the only way; the wait here is not what is tested).
	lead.stop()
	waitFor(t, "the other server leads", func() bool { return follow.Leader.Leading() })
	l, err := follow.Store.Lease(ctx, backgroundLease)
	if err != nil || l.Token != 2 {
		t.Fatalf("lease after the handover: %+v, %v", l, err)
	}
	lead = follow
	push(follow, 6, 4)
	sentOnce(10)
	if got := follow.metric(t, deliveredSample); got != 4 {
		t.Errorf("the new leader delivered %v statuses, want 4", got)
	}
	if follow.metric(t, leaderSample) != 1 {
		t.Error("kiln_leader is not 1 on the new leader")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
