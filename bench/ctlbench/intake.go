package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnci/kiln/bench/internal/ghhook"
)

const (
	project       = "bench"
	webhookSecret = "ctlbench-webhook-secret-0123"
	// pipelineFile is one job of one step: each build queues one job.
	pipelineFile = "image: localhost/kiln/busybox:latest\nsteps:\n  - run: \"true\"\n"
)

// repo is the project's repository: a local one whose main has n commits
// on top of the one holding .kiln.yml, one per delivery (a push of a
// commit already built is a redelivery and builds nothing).
type repo struct {
	dir     string
	commits []string
}

func makeRepo(dir string, n int) (*repo, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte(pipelineFile), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "bench"}} {
		if err := git(dir, nil, nil, args...); err != nil {
			return nil, err
		}
	}
	// The n commits in one git process: fast-import, each an empty
	// commit on the last, its mark exported with its id.
	var in bytes.Buffer
	for i := 1; i <= n; i++ {
		msg := fmt.Sprintf("ctlbench %d", i)
		fmt.Fprintf(&in, "commit refs/heads/main\nmark :%d\ncommitter b <b@b> %d +0000\ndata %d\n%s\n", i, 1700000000+i, len(msg), msg)
		if i == 1 {
			in.WriteString("from refs/heads/main^0\n")
		}
		in.WriteString("\n")
	}
	marks := filepath.Join(dir, ".git", "ctlbench-marks")
	if err := git(dir, &in, nil, "fast-import", "--quiet", "--export-marks="+marks); err != nil {
		return nil, err
	}
	f, err := os.Open(marks)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &repo{dir: dir, commits: make([]string, n)}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var mark int
		var sha string
		if _, err := fmt.Sscanf(sc.Text(), ":%d %s", &mark, &sha); err != nil || mark < 1 || mark > n {
			return nil, fmt.Errorf("fast-import marks: %q", sc.Text())
		}
		r.commits[mark-1] = sha
	}
	return r, sc.Err()
}

func git(dir string, stdin io.Reader, stdout io.Writer, args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b")
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return nil
}

// deliveries are signed pushes of main to commits, built beforehand so
// that the senders only send.
func deliveries(fixtures, run string, commits []string) ([][]byte, []string, error) {
	bodies, ids := make([][]byte, len(commits)), make([]string, len(commits))
	for i, sha := range commits {
		body, err := ghhook.Push(fixtures, "refs/heads/main", sha)
		if err != nil {
			return nil, nil, err
		}
		bodies[i], ids[i] = body, fmt.Sprintf("%s-%d", run, i)
	}
	return bodies, ids, nil
}

// intakeResult is what one intake measured.
type intakeResult struct {
	n         int
	start     time.Time
	elapsed   time.Duration
	latencies []time.Duration
	builds    []int64
}

func (r intakeResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// intake sends the deliveries from senders goroutines at once, each to
// the next server in turn, and times each from its request to its answer
// (201, a new build: anything else is an error).
func intake(ctx context.Context, c *cluster, senders int, bodies [][]byte, ids []string) (intakeResult, error) {
	res := intakeResult{n: len(bodies), latencies: make([]time.Duration, len(bodies)), builds: make([]int64, len(bodies))}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	res.start = time.Now()
	for range senders {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(bodies) || ctx.Err() != nil {
					return
				}
				t := time.Now()
				id, err := deliver(ctx, c.url(), ids[i], bodies[i])
				if err != nil {
					errs <- fmt.Errorf("delivery %d: %w", i, err)
					next.Store(int64(len(bodies))) // the others stop too
					return
				}
				res.latencies[i], res.builds[i] = time.Since(t), id
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(res.start)
	close(errs)
	return res, <-errs
}

// deliver sends one signed push to the server at base, and returns the
// build it made.
func deliver(ctx context.Context, base, delivery string, body []byte) (int64, error) {
	req, err := ghhook.Request(base+"/hooks/github/"+project, webhookSecret, "push", delivery, body)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil || resp.StatusCode != http.StatusCreated || out.BuildID == 0 {
		return 0, fmt.Errorf("HTTP %d (want 201, a new build): %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	return out.BuildID, nil
}
