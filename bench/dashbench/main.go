// Command dashbench measures the dashboard's build page with a big log,
// in a real browser (Debian's Chromium through playwright-core:
// internal/browsertest), against baselines measured in the same run:
//
//	go run ./bench/dashbench            (scripts/browser.sh installs the browser)
//
// A control plane runs in this process on SQLite (no engine: the jobs'
// agent is this program, speaking the agent protocol over HTTP), with
// one project and two builds:
//
//   - big: one job whose log has -lines lines (ANSI colours on every
//     tenth, the word "needle" on every thousandth), finished. Server
//     time: the page's HTML, and the whole log through the JSON pages the
//     page reads, against the same log as one plain-text download.
//     Browser time, -runs times in a fresh page: navigation to the first
//     log row drawn, to the whole log loaded; then a jump to the middle
//     and a search, and the page's DOM size (the log is virtualised).
//     Baseline: the same browser fetching the plain-text log.
//   - insights: -builds finished builds seeded into the store
//     (bench/internal/seed); the insights page over every project for 30
//     days and one project's 7 days, server time against the API's JSON
//     of the same report, and browser time to the figures and charts
//     drawn against the browser loading that JSON;
//   - live: a running job whose page is open; -latency lines are sent
//     one at a time, -interval apart, each timed from its send to its
//     row's arrival in the page (the page's kiln:lines event), p50/p95;
//     baseline: a bare server-sent-events client of the same stream, in
//     this process, timed the same way.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/bench/internal/seed"
	"github.com/kilnci/kiln/bench/internal/stats"
	"github.com/kilnci/kiln/internal/browsertest"
	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
)

func main() {
	lines := flag.Int("lines", 200_000, "big: log lines of the finished job")
	runs := flag.Int("runs", 3, "big: page loads measured (and server reads)")
	latency := flag.Int("latency", 200, "live: lines sent to the open page")
	builds := flag.Int("builds", 100_000, "insights: finished builds seeded into the store (bench/internal/seed: 10 projects, over 365 days)")
	interval := flag.Duration("interval", 25*time.Millisecond, "live: time between two lines")
	flag.Parse()
	if err := run(*lines, *runs, *latency, *interval, *builds); err != nil {
		fmt.Fprintln(os.Stderr, "dashbench:", err)
		os.Exit(1)
	}
}

// kiln is the control plane and what the benchmark holds of it.
type kiln struct {
	url, admin, agentToken string
	http                   *http.Client
}

func run(nLines, runs, nLatency int, interval time.Duration, nBuilds int) error {
	b, err := browsertest.Find()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "dashbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	k, srv, err := start(ctx, dir)
	if err != nil {
		return err
	}
	// The many finished builds first: the seed numbers its rows from 1.
	t0 := time.Now()
	if _, err := (seed.Plan{Builds: nBuilds, Projects: 10, Spread: 365, Now: time.Now()}).Into(ctx, srv.Store); err != nil {
		return err
	}
	fmt.Printf("dashbench: seeded %d builds in %v\n", nBuilds, time.Since(t0).Round(time.Millisecond))
	big, live, err := k.seed(dir)
	if err != nil {
		return err
	}
	fmt.Printf("dashbench: %d-line log (build %d), %d live lines (build %d), %s\n", nLines, big.build, nLatency, live.build, time.Now().UTC().Format(time.RFC3339))
	if err := k.writeLog(big, nLines); err != nil {
		return err
	}
	if err := k.agent(fmt.Sprintf("/jobs/%d/finish", big.job), protocol.FinishRequest{Attempt: big.attempt, Status: "success", ExitCode: new(int)}, nil); err != nil {
		return err
	}
	go k.keepAlive(ctx, live)

	// Server: the page, its JSON log pages, the plain-text log.
	var page, pages, raw []time.Duration
	for range runs {
		d, _, err := k.timeGET(fmt.Sprintf("/builds/%d", big.build))
		if err != nil {
			return err
		}
		page = append(page, d)
		if d, err = k.timeLogPages(big); err != nil {
			return err
		}
		pages = append(pages, d)
		d, n, err := k.timeGET(fmt.Sprintf("/api/v1/builds/%d/logs?job=%d&format=text", big.build, big.job))
		if err != nil {
			return err
		}
		raw = append(raw, d)
		if n == 0 {
			return fmt.Errorf("the plain-text log is empty")
		}
	}

	// Server: the insights page over every project, 30 days, and one
	// project's 7; baseline, the API's JSON of the same report.
	ins := map[string][]time.Duration{}
	for range runs {
		for _, path := range insightsPaths {
			d, _, err := k.timeGET(path)
			if err != nil {
				return err
			}
			ins[path] = append(ins[path], d)
		}
	}

	// Browser: the scenario loads the big page, then opens the live one
	// and says READY; the lines are sent; DONE ends it.
	cmd := b.Command(ctx, "dashbench.mjs", map[string]string{
		"KILN_URL": k.url, "KILN_TOKEN": k.admin, "KILN_BIG_BUILD": strconv.FormatInt(big.build, 10),
		"KILN_LIVE_BUILD": strconv.FormatInt(live.build, 10), "KILN_RUNS": strconv.Itoa(runs), "KILN_LINES": strconv.Itoa(nLines),
	})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	out := bufio.NewScanner(stdout)
	out.Buffer(make([]byte, 1<<20), 64<<20)
	ready := false
	for !ready && out.Scan() {
		ready = out.Text() == "READY"
	}
	if !ready {
		_ = cmd.Wait()
		return fmt.Errorf("the browser scenario did not get ready:\n%s", stderr.String())
	}
	sse, err := k.watch(ctx, live, nLatency)
	if err != nil {
		return err
	}
	sent, err := k.sendLive(live, nLatency, interval)
	if err != nil {
		return err
	}
	bare := sse.wait(10 * time.Second)
	fmt.Fprintln(stdin, "DONE")
	stdin.Close()
	var res browserResults
	for out.Scan() {
		if line := out.Text(); strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return err
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("browser scenario: %v\n%s", err, stderr.String())
	}
	report(nLines, page, pages, raw, res, sent, bare)
	reportInsights(nBuilds, ins, res)
	return nil
}

// insightsPaths are the insights pages timed, and the JSON baselines.
var insightsPaths = []string{"/insights?days=30", "/api/v1/insights?days=30", "/insights?project=p00&days=7", "/api/v1/insights?project=p00&days=7", "/"}

// browserResults is what dashbench.mjs prints.
type browserResults struct {
	// Insights: the overall 30 days' page to its figures drawn, and the
	// API's JSON of it loaded, ms per run.
	Insights []struct{ Page, JSON float64 } `json:"insights"`
	Runs     []struct {
		FirstRow, AllLoaded, Jump, Search, RawFetch float64
		Nodes, Rows                                 int
		HeapMiB                                     float64
	} `json:"runs"`
	// Arrivals: a live line's seq → when its row arrived (Unix ms).
	Arrivals map[string]float64 `json:"arrivals"`
}

func start(ctx context.Context, dir string) (*kiln, *server.Server, error) {
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Listen = filepath.Join(dir, "server"), "127.0.0.1:0"
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, nil, err
	}
	ln, err := srv.Listen()
	if err != nil {
		return nil, nil, err
	}
	go func() { _ = srv.Serve(ctx, ln) }()
	k := &kiln{url: "http://" + ln.Addr().String(), http: &http.Client{}}
	if k.admin, _, err = srv.EnsureAdminToken(ctx); err != nil {
		return nil, nil, err
	}
	if k.agentToken, err = srv.LocalAgentToken(ctx); err != nil {
		return nil, nil, err
	}
	return k, srv, nil
}

// job is a claimed job of a build.
type job struct {
	build, job int64
	attempt    int
}

// seed makes the project (a local repository: the planner plans its
// builds; nothing runs them but this program) and claims two builds' jobs.
func (k *kiln) seed(dir string) (big, live job, err error) {
	repo := filepath.Join(dir, "repo")
	for _, args := range [][]string{{"init", "-q", "-b", "main", repo}, {"-C", repo, "config", "user.email", "bench@example.com"}, {"-C", repo, "config", "user.name", "bench"}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return big, live, fmt.Errorf("git %v: %v %s", args, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, ".kiln.yml"), []byte("image: busybox\njobs:\n  test:\n    steps:\n      - run: echo\n"), 0o644); err != nil {
		return big, live, err
	}
	for _, args := range [][]string{{"-C", repo, "add", "."}, {"-C", repo, "commit", "-q", "-m", "bench"}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return big, live, fmt.Errorf("git %v: %v %s", args, err, out)
		}
	}
	if err := k.api("POST", "/api/v1/projects", map[string]any{"name": "web", "clone_url": repo, "default_branch": "main", "webhook_secret": "dashbench-webhook-secret"}, nil); err != nil {
		return big, live, err
	}
	if err := k.agent("/register", protocol.RegisterRequest{ID: "bench", Capacity: 2, Labels: []string{"linux"}, Version: "bench", Protocol: protocol.Version}, nil); err != nil {
		return big, live, err
	}
	claim := func() (job, error) {
		var b struct{ ID int64 }
		if err := k.api("POST", "/api/v1/projects/web/builds", map[string]string{"branch": "main"}, &b); err != nil {
			return job{}, err
		}
		var a protocol.Assignment
		if err := k.agent("/claim", protocol.ClaimRequest{AgentID: "bench", Labels: []string{"linux"}, Free: 1, WaitSeconds: 30}, &a); err != nil {
			return job{}, err
		}
		return job{build: b.ID, job: a.JobID, attempt: a.Attempt}, nil
	}
	if big, err = claim(); err != nil {
		return big, live, err
	}
	live, err = claim()
	return big, live, err
}

// writeLog sends n lines to j as the agent does, in batches.
func (k *kiln) writeLog(j job, n int) error {
	const batch = 5000
	now := time.Now()
	for first := 1; first <= n; first += batch {
		b := protocol.LogBatch{Attempt: j.attempt}
		for seq := first; seq < first+batch && seq <= n; seq++ {
			text := fmt.Sprintf("line %d: compiling package number %d of the build, nothing to see", seq, seq%977)
			switch {
			case seq%1000 == 0:
				text += " needle"
			case seq%10 == 0:
				text = "\x1b[32mok\x1b[0m   " + text
			}
			b.Lines = append(b.Lines, logs.Line{Seq: int64(seq), Step: 0, Time: now, Text: text})
		}
		if err := k.agent(fmt.Sprintf("/jobs/%d/logs", j.job), b, nil); err != nil {
			return err
		}
	}
	return nil
}

// keepAlive heartbeats the live job while the benchmark runs.
func (k *kiln) keepAlive(ctx context.Context, j job) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = k.agent(fmt.Sprintf("/jobs/%d/heartbeat", j.job), protocol.Fence{Attempt: j.attempt}, nil)
		}
	}
}

// sendLive sends n lines to the live job one at a time, and returns when
// each was sent (Unix ms by seq).
func (k *kiln) sendLive(j job, n int, interval time.Duration) (map[int64]float64, error) {
	sent := map[int64]float64{}
	for seq := int64(1); seq <= int64(n); seq++ {
		t := time.Now()
		sent[seq] = float64(t.UnixMicro()) / 1000
		if err := k.agent(fmt.Sprintf("/jobs/%d/logs", j.job), protocol.LogBatch{Attempt: j.attempt, Lines: []logs.Line{{Seq: seq, Time: t, Text: fmt.Sprintf("live line %d", seq)}}}, nil); err != nil {
			return nil, err
		}
		time.Sleep(interval - time.Since(t))
	}
	return sent, nil
}

// sseWatch is the baseline: a bare client of the live job's stream.
type sseWatch struct {
	mu       sync.Mutex
	arrivals map[int64]float64
	want     int
	done     chan struct{}
}

func (k *kiln) watch(ctx context.Context, j job, want int) (*sseWatch, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/v1/builds/%d/logs/stream?job=%d", k.url, j.build, j.job), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.admin)
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, err
	}
	w := &sseWatch{arrivals: map[int64]float64{}, want: want, done: make(chan struct{})}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var l struct {
				Seq  int64  `json:"seq"`
				Text string `json:"text"`
			}
			if json.Unmarshal([]byte(data), &l) != nil || !strings.HasPrefix(l.Text, "live line ") {
				continue
			}
			w.mu.Lock()
			w.arrivals[l.Seq] = float64(time.Now().UnixMicro()) / 1000
			full := len(w.arrivals) == w.want
			w.mu.Unlock()
			if full {
				close(w.done)
				return
			}
		}
	}()
	return w, nil
}

func (w *sseWatch) wait(limit time.Duration) map[int64]float64 {
	select {
	case <-w.done:
	case <-time.After(limit):
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.arrivals)
}

// timeGET reads path whole with the admin token.
func (k *kiln) timeGET(path string) (time.Duration, int64, error) {
	req, _ := http.NewRequest("GET", k.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+k.admin)
	t := time.Now()
	resp, err := k.http.Do(req)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return time.Since(t), n, err
}

// timeLogPages reads j's whole log through the JSON pages, as the page does.
func (k *kiln) timeLogPages(j job) (time.Duration, error) {
	t := time.Now()
	var after int64
	for {
		var pages []struct {
			Truncated bool  `json:"truncated"`
			Next      int64 `json:"next"`
		}
		if err := k.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs?job=%d&after=%d&limit=10000", j.build, j.job, after), nil, &pages); err != nil {
			return 0, err
		}
		if len(pages) != 1 || !pages[0].Truncated {
			return time.Since(t), nil
		}
		after = pages[0].Next
	}
}

func (k *kiln) api(method, path string, body, out any) error {
	return k.call(k.admin, method, path, body, out)
}

func (k *kiln) agent(path string, body, out any) error {
	return k.call(k.agentToken, "POST", protocol.Prefix+path, body, out)
}

func (k *kiln) call(token, method, path string, body, out any) error {
	var in io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		in = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, k.url+path, in)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if strings.HasPrefix(path, protocol.Prefix) {
		req.Header.Set(protocol.Header, protocol.Version)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

func report(nLines int, page, pages, raw []time.Duration, res browserResults, sent, bare map[int64]float64) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("\nServer, %d-line log (median of %d):\n\n", nLines, len(page))
	fmt.Printf("| read | ms |\n|---|---|\n")
	fmt.Printf("| the build page's HTML | %.1f |\n", ms(median(page)))
	fmt.Printf("| the whole log, the page's JSON pages | %.0f |\n", ms(median(pages)))
	fmt.Printf("| baseline: the same log as plain text | %.0f |\n", ms(median(raw)))
	fmt.Printf("| ratio JSON pages / plain text | %.2f× |\n", ms(median(pages))/ms(median(raw)))

	fmt.Printf("\nBrowser, %d-line log:\n\n", nLines)
	fmt.Printf("| run | first row drawn ms | whole log loaded ms | baseline: fetch of the plain text ms | ratio loaded / fetch | jump to the middle ms | search ms | DOM elements | rows in the DOM | JS heap MiB |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range res.Runs {
		fmt.Printf("| %d | %.0f | %.0f | %.0f | %.2f× | %.1f | %.0f | %d | %d | %.0f |\n", i+1, r.FirstRow, r.AllLoaded, r.RawFetch, r.AllLoaded/r.RawFetch, r.Jump, r.Search, r.Nodes, r.Rows, r.HeapMiB)
	}

	var inPage, inSSE []time.Duration
	since := func(at, got float64) time.Duration { return time.Duration((got - at) * float64(time.Millisecond)) }
	for seq, at := range sent {
		if got, ok := res.Arrivals[strconv.FormatInt(seq, 10)]; ok {
			inPage = append(inPage, since(at, got))
		}
		if got, ok := bare[seq]; ok {
			inSSE = append(inSSE, since(at, got))
		}
	}
	p := func(ds []time.Duration, pct int) float64 { return ms(stats.Pct(ds, pct)) }
	fmt.Printf("\nLive: a line's send (the agent protocol) to its arrival, %d lines:\n\n", len(sent))
	fmt.Printf("| where | arrived | p50 ms | p95 ms |\n|---|---|---|---|\n")
	fmt.Printf("| the open build page (row added) | %d | %.1f | %.1f |\n", len(inPage), p(inPage, 50), p(inPage, 95))
	fmt.Printf("| baseline: a bare SSE client | %d | %.1f | %.1f |\n", len(inSSE), p(inSSE, 50), p(inSSE, 95))
	if len(inSSE) > 0 {
		fmt.Printf("| ratio page / bare | | %.2f× | %.2f× |\n", stats.Ratio(p(inPage, 50), p(inSSE, 50)), stats.Ratio(p(inPage, 95), p(inSSE, 95)))
	}
}

// median is the median of runs, by nearest rank (stats.Pct).
func median(ds []time.Duration) time.Duration { return stats.Pct(ds, 50) }

func reportInsights(nBuilds int, ins map[string][]time.Duration, res browserResults) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("\nServer, insights with %d builds in the store (median of %d):\n\n", nBuilds, len(ins["/"]))
	fmt.Printf("| read | ms |\n|---|---|\n")
	for _, p := range insightsPaths {
		fmt.Printf("| `%s` | %.1f |\n", p, ms(median(ins[p])))
	}
	fmt.Printf("| ratio page / JSON, overall 30 days | %.2f× |\n", ms(median(ins[insightsPaths[0]]))/ms(median(ins[insightsPaths[1]])))
	fmt.Printf("\nBrowser, the insights page over every project, 30 days:\n\n")
	fmt.Printf("| run | page: navigation to figures and charts drawn ms | baseline: the API's JSON loaded ms | ratio |\n|---|---|---|---|\n")
	for i, r := range res.Insights {
		fmt.Printf("| %d | %.0f | %.0f | %.2f× |\n", i+1, r.Page, r.JSON, r.Page/r.JSON)
	}
}
