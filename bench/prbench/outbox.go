package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/forgestatus"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

// outbox is the statuses sender (forgestatus.Sender) over a real SQLite
// store in a temporary directory, for one project connected to a fake
// GitHub with a token.
type outbox struct {
	gh     *fakegithub.Server
	st     *store.Store
	sender *forgestatus.Sender
	conn   *store.ForgeConnection
	proj   int64
	seq    int // commits made so far: each row's commit is new
	dir    string
}

func newOutbox(ctx context.Context, workers int, delay time.Duration) (*outbox, error) {
	dir, err := os.MkdirTemp("", "prbench-outbox")
	if err != nil {
		return nil, err
	}
	o := &outbox{gh: fakegithub.New(), dir: dir}
	fail := func(err error) (*outbox, error) { o.close(); return nil, err }
	o.gh.AddToken(ghToken)
	o.gh.SetLatency(fakegithub.EndpointCreateStatus, delay)
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		return fail(err)
	}
	if o.st, err = store.OpenSQLite(ctx, filepath.Join(dir, "kiln.db"), box); err != nil {
		return fail(err)
	}
	p := &store.Project{Name: project, CloneURL: "/nonexistent", DefaultBranch: "main"}
	if err := o.st.CreateProject(ctx, p); err != nil {
		return fail(err)
	}
	o.proj = p.ID
	o.conn = &store.ForgeConnection{Forge: store.ForgeGitHub, Repo: ghRepo, APIURL: strings.TrimSuffix(o.gh.URL(), "/"), Token: ghToken}
	if err := o.st.SetProjectForge(ctx, p.ID, o.conn); err != nil {
		return fail(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o.sender = forgestatus.New(forgestatus.Config{PublicURL: "http://127.0.0.1:8080", Workers: workers}, o.st, nil, log)
	return o, nil
}

func (o *outbox) close() {
	if o.st != nil {
		o.st.Close()
	}
	o.gh.Close()
	os.RemoveAll(o.dir)
}

func (o *outbox) commit() string {
	o.seq++
	return fmt.Sprintf("%040x", o.seq)
}

// backlog queues n builds, each of its own commit: n pending statuses in
// the outbox, none coalesced (as after a forge outage, when only the
// newest state of each commit's context is left to send).
func (o *outbox) backlog(ctx context.Context, n int) error {
	for range n {
		if err := o.st.CreateBuild(ctx, &store.Build{ProjectID: o.proj, Trigger: "push", Ref: "refs/heads/main", Branch: "main", Commit: o.commit()}); err != nil {
			return err
		}
	}
	return nil
}

// drain runs the sender's rounds back to back until the outbox is empty,
// as Sender.Run does while there is a backlog, and returns the time it
// took; every row must have reached the fake.
func (o *outbox) drain(ctx context.Context, n int) (time.Duration, error) {
	before := len(o.gh.Statuses())
	t0 := time.Now()
	for {
		sent, err := o.sender.Round(ctx)
		if err != nil {
			return 0, err
		}
		if sent == 0 {
			break
		}
	}
	d := time.Since(t0)
	if got := len(o.gh.Statuses()) - before; got != n {
		return 0, fmt.Errorf("the sender delivered %d statuses of %d", got, n)
	}
	return d, nil
}

// bare is the baseline: n POSTs of the very requests the sender makes
// (Sender.Request: same URL, headers and body), each of a new commit,
// from workers goroutines sharing one client like the sender's, with no
// store behind them.
func (o *outbox) bare(ctx context.Context, n, workers int) (time.Duration, error) {
	client := &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	reqs := make([]*http.Request, n)
	for i := range reqs {
		row := &store.ForgeStatus{BuildID: int64(i + 1), ProjectID: o.proj, Commit: o.commit(), Context: store.ContextBuild, State: store.StatusQueued, Description: "build queued"}
		var err error
		if reqs[i], err = o.sender.Request(ctx, o.conn, row); err != nil {
			return 0, err
		}
	}
	work := make(chan *http.Request)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			var first error
			for req := range work {
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("bare POST: %s", resp.Status)
					}
				}
				if err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		})
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	d := time.Since(t0)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return d, nil
}

// rates is one latency's outcome: statuses per second, the sender's and
// the bare client's, over the repetitions.
type rates struct {
	delay        time.Duration
	sender, bare []float64
}

// deliveryRate measures the sender draining a backlog of n statuses, and
// the bare client sending as many, reps times each alternately, to a fake
// GitHub that answers after delay.
func deliveryRate(ctx context.Context, n, workers, reps int, delay time.Duration) (rates, error) {
	r := rates{delay: delay}
	o, err := newOutbox(ctx, workers, delay)
	if err != nil {
		return r, err
	}
	defer o.close()
	// One warm-up of each, not counted (connections, the store's pages).
	for i := -1; i < reps; i++ {
		m := n
		if i < 0 {
			m = min(n, 50)
		}
		if err := o.backlog(ctx, m); err != nil {
			return r, err
		}
		d, err := o.drain(ctx, m)
		if err != nil {
			return r, err
		}
		b, err := o.bare(ctx, m, workers)
		if err != nil {
			return r, err
		}
		if i >= 0 {
			r.sender = append(r.sender, float64(m)/d.Seconds())
			r.bare = append(r.bare, float64(m)/b.Seconds())
		}
	}
	return r, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
