package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// agent is a client of the agent protocol as internal/agent speaks it
// (bearer agent token, the protocol's version header, JSON messages),
// with no engine behind it: it reports each job it claims as a success
// at once, so what is measured is the control plane's claim path.
type agent struct {
	id, token string
}

// newAgents makes n agents the way an operator adds hosts: an agent
// token each (`kiln token create -kind agent`, the admin API), then the
// agent's registration with it.
func newAgents(ctx context.Context, c *cluster, n int) ([]*agent, error) {
	agents := make([]*agent, n)
	for i := range agents {
		a := &agent{id: fmt.Sprintf("ctlbench-agent-%02d", i)}
		var out struct{ Secret string }
		if err := c.api(ctx, "POST", "/api/v1/tokens", map[string]string{"name": a.id, "kind": string(store.TokenAgent)}, &out); err != nil {
			return nil, err
		}
		a.token = out.Secret
		req := protocol.RegisterRequest{ID: a.id, Labels: []string{"linux"}, Capacity: 1, Version: "ctlbench", Protocol: protocol.Version}
		var resp protocol.RegisterResponse
		if _, err := a.post(ctx, c.url(), "/register", req, &resp); err != nil {
			return nil, fmt.Errorf("register %s: %w", a.id, err)
		}
		agents[i] = a
	}
	return agents, nil
}

// post sends one agent protocol request to the server at base: (true,
// nil) on 200 with the answer in out, (false, nil) on 204.
func (a *agent) post(ctx context.Context, base, path string, in, out any) (bool, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+protocol.Prefix+path, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set(protocol.Header, protocol.Version)
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusNoContent:
		return false, nil
	case http.StatusOK:
		if out == nil {
			return true, nil
		}
		return true, json.Unmarshal(data, out)
	}
	return false, fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(data))
}

// claimResult is what one claims run measured.
type claimResult struct {
	n                  int
	allClaimed, allEnd time.Duration   // from the start, to the n-th claim and the n-th finish
	latencies          []time.Duration // of the claims that got a job
	twice              int             // jobs claimed more than once (must be 0)
}

// claims runs the agents until n jobs have been claimed and reported,
// each agent claiming one job at a time (capacity 1) through the next
// server in turn, then finishing it as a success through the next.
func claims(ctx context.Context, c *cluster, agents []*agent, n int) (claimResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := claimResult{n: n}
	var mu sync.Mutex
	seen := map[int64]int{}
	var claimed, finished atomic.Int64
	claimedAll, finishedAll := make(chan time.Duration, 1), make(chan time.Duration, 1)
	errs := make(chan error, len(agents))
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, a := range agents {
		wg.Go(func() {
			req := protocol.ClaimRequest{AgentID: a.id, Labels: []string{"linux"}, Free: 1, WaitSeconds: 30}
			for ctx.Err() == nil {
				var as protocol.Assignment
				t := time.Now()
				ok, err := a.post(ctx, c.url(), "/claim", req, &as)
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("%s: claim: %w", a.id, err)
					}
					return
				}
				if !ok {
					continue // nothing within the wait
				}
				d := time.Since(t)
				mu.Lock()
				seen[as.JobID]++
				res.latencies = append(res.latencies, d)
				mu.Unlock()
				if claimed.Add(1) == int64(n) {
					claimedAll <- time.Since(t0)
				}
				fin := protocol.FinishRequest{Attempt: as.Attempt, Status: string(store.StatusSuccess)}
				if _, err := a.post(ctx, c.url(), fmt.Sprintf("/jobs/%d/finish", as.JobID), fin, nil); err != nil {
					errs <- fmt.Errorf("%s: finish job %d: %w", a.id, as.JobID, err)
					return
				}
				if finished.Add(1) == int64(n) {
					finishedAll <- time.Since(t0)
				}
			}
		})
	}
	var err error
	for got := 0; got < 2 && err == nil; {
		select {
		case res.allClaimed = <-claimedAll:
			got++
		case res.allEnd = <-finishedAll:
			got++
		case err = <-errs:
		case <-time.After(10 * time.Minute):
			err = fmt.Errorf("%d of %d jobs claimed, %d finished after 10 minutes", claimed.Load(), n, finished.Load())
		}
	}
	cancel()
	wg.Wait()
	for _, k := range seen {
		if k > 1 {
			res.twice++
		}
	}
	return res, err
}
