package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/store/storetest"

	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/store"
)

// A server stopped with statuses still to send (here: never served)
// delivers them when a new server starts on the same data directory.
func TestRestartDeliversForgeStatuses(t *testing.T) {
	gh := fakegithub.New()
	defer gh.Close()
	gh.AddToken("tok")
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database = storetest.Database(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.ReserveBytes = 0
	cfg.ForgeStatuses.Poll = 20 * time.Millisecond
	ctx := context.Background()

	srv, err := New(ctx, cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	st := srv.Store
	p := &store.Project{Name: "web", CloneURL: "/tmp/x", DefaultBranch: "main"}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.SetProjectForge(ctx, p.ID, &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: strings.TrimSuffix(gh.URL(), "/"), Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	const sha = "89abcdef0123456789abcdef0123456789abcdef"
	b := &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: sha}
	if err := st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n, _, err := st.OldestPendingForgeStatus(ctx); err != nil || n != 1 {
		t.Fatalf("pending before the restart: %d, %v", n, err)
	}
	srv.Close()

	srv, err = New(ctx, cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	ln, _ := srv.Listen()
	go func() { defer close(done); _ = srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-done; srv.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for len(gh.Statuses()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the restarted server never sent the status")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := gh.Statuses(); len(got) != 1 || got[0].SHA != sha || got[0].State != "pending" || got[0].Context != "kiln" {
		t.Fatalf("sent %+v", got)
	}
}
