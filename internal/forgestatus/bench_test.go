package forgestatus_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/forgestatus"
	"github.com/kilnci/kiln/internal/forgestatus/fakeforge"
	"github.com/kilnci/kiln/internal/store"
)

// BenchmarkDelivery measures the outbox's delivery rate (statuses/s) to a
// fake Gitea answering at once and one answering in 50 ms: each op
// delivers the pending statuses of 400 builds (distinct commits, so
// nothing is coalesced) with the default 8 workers.
//
//	go test -run '^$' -bench BenchmarkDelivery -benchtime 3x ./internal/forgestatus/
func BenchmarkDelivery(b *testing.B) {
	for _, delay := range []time.Duration{0, 50 * time.Millisecond} {
		b.Run(fmt.Sprintf("forge-%s", delay), func(b *testing.B) {
			gt := fakeforge.New(fakeforge.Gitea, "acme/web", "tok")
			defer gt.Close()
			gt.SetDelay(delay)
			st := openStore(b, b.TempDir())
			p := &store.Project{Name: "web", CloneURL: "/tmp/x", DefaultBranch: "main"}
			if err := st.CreateProject(ctx, p); err != nil {
				b.Fatal(err)
			}
			if err := st.SetProjectForge(ctx, p.ID, &store.ForgeConnection{Forge: "gitea", Repo: "acme/web", APIURL: gt.URL(), Token: "tok"}); err != nil {
				b.Fatal(err)
			}
			s := forgestatus.New(forgestatus.Config{PublicURL: "http://k"}, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			const perOp = 400
			var sent int
			var elapsed time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				for j := range perOp {
					commit := fmt.Sprintf("%040x", i*perOp+j+1)
					if err := st.CreateBuild(ctx, &store.Build{ProjectID: p.ID, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: commit}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				for {
					n, err := s.Round(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if n == 0 {
						break
					}
					sent += n
				}
				elapsed += time.Since(start)
			}
			if got := len(gt.Statuses()); got != sent {
				b.Fatalf("the fake got %d statuses, %d sent", got, sent)
			}
			b.ReportMetric(float64(sent)/elapsed.Seconds(), "statuses/s")
		})
	}
}
