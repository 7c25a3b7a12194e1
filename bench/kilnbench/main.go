// Command kilnbench measures Kiln against a bare container run of the same
// image, side by side in one run on one machine, and prints the ratios.
//
//	go run ./bench/kilnbench -engine unix:///run/kiln-docker.sock -cli docker
//	go run ./bench/kilnbench -engine unix:///run/kiln-podman.sock -cli podman
//
// latency: the time from a signed GitHub push webhook's arrival to the first
// output line of the build's first step (as the server receives it from the
// agent), over -n builds, against `docker run --rm IMAGE echo` (or podman)
// from process start to its first output line. It also breaks Kiln's time
// down by phase, from the build's own records.
//
// throughput: -builds trivial builds queued at once, one agent of capacity
// -capacity; completed builds per second.
package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnci/kiln/bench/internal/inproc"
	"github.com/kilnci/kiln/bench/internal/stats"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

const image = "localhost/kiln/busybox:latest"

type bench struct {
	url, admin string
	repo       string
}

func main() {
	engine := flag.String("engine", "unix:///run/kiln-docker.sock", "engine socket for Kiln's agent")
	cli := flag.String("cli", "docker", "CLI for the baseline run: docker or podman (talks to the same engine)")
	n := flag.Int("n", 30, "latency: builds measured")
	builds := flag.Int("builds", 200, "throughput: builds queued at once")
	capacity := flag.Int("capacity", 2, "throughput: the agent's capacity")
	only := flag.String("only", "", "run only 'latency' or 'throughput'")
	bareRuns := flag.Int("bare-runs", 40, "throughput: bare container runs for the baseline rate")
	flag.Parse()
	ctx := context.Background()
	if *only != "throughput" {
		if err := latency(ctx, *engine, *cli, *n); err != nil {
			fmt.Fprintln(os.Stderr, "latency:", err)
			os.Exit(1)
		}
	}
	if *only != "latency" {
		if err := throughput(ctx, *engine, *cli, *builds, *capacity, *bareRuns); err != nil {
			fmt.Fprintln(os.Stderr, "throughput:", err)
			os.Exit(1)
		}
	}
}

// start runs a control plane and one agent in this process, as `kiln up`
// does (the agent still speaks HTTP to the server on loopback).
func start(ctx context.Context, engine string, capacity int, pipeline string) (*bench, func(), error) {
	dir, err := os.MkdirTemp("", "kilnbench")
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	up, err := inproc.Up(ctx, server.DefaultConfig(), engine, inproc.Agent{ID: "bench-agent", Capacity: capacity, Labels: []string{"linux"}, Memory: 256 << 20}, dir, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	stop := func() { up.Stop(); os.RemoveAll(dir) }
	b := &bench{url: up.URL, admin: up.Admin, repo: filepath.Join(dir, "repo")}
	if _, err = makeRepo(b.repo, pipeline); err != nil {
		stop()
		return nil, nil, err
	}
	if err := b.api("POST", "/api/v1/projects", map[string]any{"name": "bench", "clone_url": b.repo, "webhook_secret": "bench-webhook-secret-0123"}, nil); err != nil {
		stop()
		return nil, nil, err
	}
	return b, stop, nil
}

func makeRepo(dir, pipeline string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte(pipeline), 0o644); err != nil {
		return "", err
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "bench"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %v: %v: %s", args, err, out)
		}
	}
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	return strings.TrimSpace(string(out)), err
}

func (b *bench) api(method, path string, in, out any) error {
	return apiclient.Client{URL: b.url, Token: b.admin}.Do(context.Background(), method, path, in, out)
}

// push delivers a signed GitHub push webhook and returns the build id.
// newCommit adds an empty commit to the project's repository and returns
// it. Each push names a commit of its own: a push of a commit already
// built within minutes is a redelivery (the webhooks' duplicate rule) and
// builds nothing.
func (b *bench) newCommit(i int) (string, error) {
	msg := fmt.Sprintf("bench %d %d", i, time.Now().UnixNano())
	if out, err := exec.Command("git", "-C", b.repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", msg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git commit: %v: %s", err, out)
	}
	out, err := exec.Command("git", "-C", b.repo, "rev-parse", "HEAD").Output()
	return strings.TrimSpace(string(out)), err
}

// push delivers a signed push of commit; anything but a new build (201)
// is an error.
func (b *bench) push(commit string, i int) (int64, error) {
	body := fmt.Sprintf(`{"ref":"refs/heads/main","before":"%s","after":"%s","deleted":false,"head_commit":{"id":"%s","message":"bench"},"repository":{"full_name":"bench/bench"},"pusher":{"name":"bench"}}`,
		strings.Repeat("0", 40), commit, commit)
	mac := hmac.New(sha256.New, []byte("bench-webhook-secret-0123"))
	mac.Write([]byte(body))
	req, _ := http.NewRequest("POST", b.url+"/hooks/github/bench", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.BuildID == 0 || resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("push: HTTP %d (want 201, a new build): %v", resp.StatusCode, err)
	}
	return out.BuildID, nil
}

// stream follows the build's live log: it sends the time the first line
// of step 0 arrives on first, and returns the build when it ends.
func (b *bench) stream(id int64, first chan<- time.Time) (*api.BuildView, error) {
	sent := false
	return apiclient.Client{URL: b.url, Token: b.admin}.FollowLogs(context.Background(), id, func(l api.StreamLine) {
		if l.Step == 0 && !sent {
			first <- time.Now()
			sent = true
		}
	})
}

type phases struct{ total, toClaim, toSandbox, toFirstLine, e2e []time.Duration }

func latency(ctx context.Context, engine, cli string, n int) error {
	b, stop, err := start(ctx, engine, 2, "image: "+image+"\nsteps:\n  - run: echo hello\n")
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("== latency: push webhook → first line of the first step, vs `%s run --rm %s echo hello` (n=%d, engine %s)\n", cli, image, n, engine)
	var kiln, bare []time.Duration
	var ph phases
	// One warm-up of each, not counted: the first run pays one-time costs
	// (the git mirror's creation, the engine's caches) that a long-running
	// installation does not.
	for i := -1; i < n; i++ {
		d, p, err := b.one(i)
		if err != nil {
			return err
		}
		bd, err := bareRun(cli, engine)
		if err != nil {
			return err
		}
		if i >= 0 {
			kiln, bare = append(kiln, d), append(bare, bd)
			ph.add(p)
		}
	}
	kp50, kp95 := stats.Pct(kiln, 50), stats.Pct(kiln, 95)
	bp50, bp95 := stats.Pct(bare, 50), stats.Pct(bare, 95)
	fmt.Printf("%-36s %10s %10s\n", "", "p50", "p95")
	fmt.Printf("%-36s %10s %10s\n", "kiln: webhook → first step line", ms(kp50), ms(kp95))
	fmt.Printf("%-36s %10s %10s\n", cli+" run: start → first line", ms(bp50), ms(bp95))
	fmt.Printf("%-36s %9.2fx %9.2fx\n", "ratio kiln / "+cli+" run", float64(kp50)/float64(bp50), float64(kp95)/float64(bp95))
	fmt.Println("where kiln's time goes (p50 of each phase, from the build's records):")
	fmt.Printf("  webhook → job claimed by the agent (store, plan .kiln.yml, long-poll wake): %s\n", ms(stats.Pct(ph.toClaim, 50)))
	fmt.Printf("  claimed → sandbox started (checkout from the git mirror, network, container): %s\n", ms(stats.Pct(ph.toSandbox, 50)))
	fmt.Printf("  sandbox started → first step line at the server (exec, log batch):        %s\n", ms(stats.Pct(ph.toFirstLine, 50)))
	fmt.Printf("  whole build, webhook → finished (incl. sandbox destroy, reports):         %s\n", ms(stats.Pct(ph.e2e, 50)))
	return nil
}

func (p *phases) add(q phase) {
	p.toClaim = append(p.toClaim, q.claimed.Sub(q.sent))
	p.toSandbox = append(p.toSandbox, q.sandbox.Sub(q.claimed))
	p.toFirstLine = append(p.toFirstLine, q.first.Sub(q.sandbox))
	p.e2e = append(p.e2e, q.done.Sub(q.sent))
}

type phase struct{ sent, claimed, sandbox, first, done time.Time }

// one sends a push and measures it to the first line of step 0.
func (b *bench) one(i int) (time.Duration, phase, error) {
	var p phase
	commit, err := b.newCommit(i)
	if err != nil {
		return 0, p, err
	}
	p.sent = time.Now()
	id, err := b.push(commit, i)
	if err != nil {
		return 0, p, err
	}
	first := make(chan time.Time, 1)
	type result struct {
		b   *api.BuildView
		err error
	}
	res := make(chan result, 1)
	go func() { bd, err := b.stream(id, first); res <- result{bd, err} }()
	var r result
	select {
	case p.first = <-first:
		r = <-res
	case r = <-res:
		if r.err == nil {
			return 0, p, fmt.Errorf("build %d ended (%s) without a step line", id, r.b.Status)
		}
	}
	if r.err != nil {
		return 0, p, r.err
	}
	p.done = time.Now()
	if r.b.Status != store.StatusSuccess {
		return 0, p, fmt.Errorf("build %d: %s", id, r.b.Status)
	}
	j := r.b.Jobs[0]
	p.claimed = *j.StartedAt
	var lines []struct {
		Lines []store.LogLine
	}
	if err := b.api("GET", fmt.Sprintf("/api/v1/builds/%d/logs", id), nil, &lines); err != nil {
		return 0, p, err
	}
	for _, l := range lines[0].Lines {
		if strings.HasPrefix(l.Text, "[kiln] sandbox ") {
			p.sandbox = l.Time
		}
	}
	return p.first.Sub(p.sent), p, nil
}

// bareRun times `cli run --rm IMAGE echo hello` from process start to its
// first output line.
func bareRun(cli, engine string) (time.Duration, error) {
	cmd := exec.Command(cli, "run", "--rm", image, "echo", "hello")
	if cli == "docker" {
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+engine)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	r := bufio.NewReader(out)
	if _, err := r.ReadString('\n'); err != nil {
		return 0, fmt.Errorf("%s run: %v", cli, err)
	}
	d := time.Since(t0)
	_, _ = io.Copy(io.Discard, r)
	return d, cmd.Wait()
}

func throughput(ctx context.Context, engine, cli string, builds, capacity, bareRuns int) error {
	b, stop, err := start(ctx, engine, capacity, "image: "+image+"\nsteps:\n  - run: \"true\"\n")
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("== throughput: %d trivial builds queued at once, one agent of capacity %d (engine %s)\n", builds, capacity, engine)
	commits := make([]string, builds)
	for i := range commits {
		if commits[i], err = b.newCommit(i); err != nil {
			return err
		}
	}
	t0 := time.Now()
	ids := make([]int64, 0, builds)
	for i := 0; i < builds; i++ {
		id, err := b.push(commits[i], i)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	queued := time.Since(t0)
	for {
		var list []api.BuildView
		if err := b.api("GET", "/api/v1/builds?project=bench&limit=500", nil, &list); err != nil {
			return err
		}
		done, failed := 0, 0
		for _, bd := range list {
			if bd.Status.Terminal() {
				done++
				if bd.Status != store.StatusSuccess {
					failed++
				}
			}
		}
		if done == builds {
			el := time.Since(t0)
			fmt.Printf("queued %d builds in %s; all finished after %s (%d not successful)\n", builds, ms(queued), el.Round(10*time.Millisecond), failed)
			rate := float64(builds) / el.Seconds()
			fmt.Printf("throughput: %.2f builds/s (%.2f per unit of capacity)\n", rate, rate/float64(capacity))
			bare, err := bareRate(cli, engine, bareRuns, capacity)
			if err != nil {
				return err
			}
			fmt.Printf("baseline: `%s run --rm %s true`, %d runs, %d at a time: %.2f runs/s\n", cli, image, bareRuns, capacity, bare)
			fmt.Printf("ratio kiln builds/s / bare runs/s: %.2f\n", rate/bare)
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

// bareRate runs `cli run --rm IMAGE true` n times, conc at a time, and
// returns runs per second: what the engine alone sustains.
func bareRate(cli, engine string, n, conc int) (float64, error) {
	t0 := time.Now()
	sem := make(chan struct{}, conc)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			cmd := exec.Command(cli, "run", "--rm", image, "true")
			if cli == "docker" {
				cmd.Env = append(os.Environ(), "DOCKER_HOST="+engine)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s run: %v: %s", cli, err, out)
			}
		}()
	}
	for i := 0; i < conc; i++ {
		sem <- struct{}{}
	}
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
