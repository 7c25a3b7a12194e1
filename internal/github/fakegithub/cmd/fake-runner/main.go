// Command fake-runner behaves like GitHub's Actions runner started with a
// just-in-time configuration (`run.sh` with ACTIONS_RUNNER_INPUT_JITCONFIG),
// against fakegithub's broker instead of GitHub: it registers, waits for its
// one job, "runs" it, reports it complete and exits. Kiln's tests and
// benchmark bake it into a runner image (scripts/runner-image.sh, package
// runnerimage) so that a sandbox does what a real runner's sandbox does,
// network calls included.
//
// The configuration is read from the environment only, never from argv
// (which any process on the host can read), and never printed. The
// broker's address is the configuration's serverUrl; the host name
// host.kiln.test in it means the container's default gateway, or where that
// does not answer (slirp4netns) the host's address in /etc/hosts (see
// HostAlias), so one URL serves every per-job network.
//
// Output, as the real runner prints it:
//
//	√ Connected to GitHub
//
//	Current runner version: '2.999.0-fake'
//	2025-01-01 10:00:00Z: Listening for Jobs
//	2025-01-01 10:00:01Z: Running job: build
//	2025-01-01 10:00:01Z: Job build completed with result: Succeeded
//
// Environment (beyond the configuration), for tests to shape a job:
//
//	FAKE_RUNNER_JOB_DURATION  how long the job runs (Go duration; default 0);
//	                          a run cancelled meanwhile ends it as Canceled
//	FAKE_RUNNER_CONCLUSION    what the job concludes (default success)
//	FAKE_RUNNER_STALL=1       never register: print a line and sleep until
//	                          killed (a runner that never comes online)
//
// Exit status: 0 after its job (whatever the job's result), 1 on an error
// (the broker unreachable or refusing), 2 on a missing or invalid
// configuration, 3 when GitHub removed the runner before it got a job.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// EnvJITConfig is where the runner finds its JIT configuration, as
// actions/runner's run.sh does.
const EnvJITConfig = "ACTIONS_RUNNER_INPUT_JITCONFIG"

// Version is what the runner says it is.
const Version = "2.999.0-fake"

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitConfig  = 2
	exitRemoved = 3
)

func main() {
	// The configuration is a credential: keep it out of anything this
	// process starts or leaves behind.
	cfg := os.Getenv(EnvJITConfig)
	os.Unsetenv(EnvJITConfig)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := newRunner(os.Stdout, os.Getenv)
	os.Exit(r.main(ctx, cfg))
}

// runner is one run of the fake runner; its fields are what tests replace.
type runner struct {
	out    io.Writer
	getenv func(string) string
	client *http.Client
	now    func() time.Time

	pollInterval   time.Duration // between acquire calls while idle or busy
	connectTimeout time.Duration // how long to retry a broker that does not answer
}

func newRunner(out io.Writer, getenv func(string) string) *runner {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &runner{
		out:    out,
		getenv: getenv,
		client: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				Proxy:               nil, // the broker is local; never send the credential to a proxy
				DialContext:         gatewayDialer(d, "/proc/net/route", "/etc/hosts"),
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     90 * time.Second,
			},
		},
		now:            time.Now,
		pollInterval:   500 * time.Millisecond,
		connectTimeout: time.Minute,
	}
}

// main runs the runner and returns its exit code, having said why on out.
func (r *runner) main(ctx context.Context, encoded string) int {
	err := r.run(ctx, encoded)
	var ce configError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		r.printf("Error: %v", err)
		return exitConfig
	case errors.Is(err, errRemoved):
		r.printf("%s: %v", r.stamp(), err)
		return exitRemoved
	case ctx.Err() != nil:
		r.printf("%s: Runner received a shutdown signal: exiting", r.stamp())
		return exitError
	default:
		r.printf("Error: %v", err)
		return exitError
	}
}

type configError struct{ error }

func (r *runner) run(ctx context.Context, encoded string) error {
	if encoded == "" {
		return configError{fmt.Errorf("%s is not set: start the runner with its JIT configuration in the environment", EnvJITConfig)}
	}
	jit, err := decodeJIT(encoded)
	if err != nil {
		return configError{fmt.Errorf("%s: invalid JIT configuration: %w", EnvJITConfig, err)}
	}
	if r.getenv("FAKE_RUNNER_STALL") == "1" {
		r.printf("%s: Runner %s stalls before registering (FAKE_RUNNER_STALL=1)", r.stamp(), jit.AgentName)
		<-ctx.Done()
		return ctx.Err()
	}
	var duration time.Duration
	if s := r.getenv("FAKE_RUNNER_JOB_DURATION"); s != "" {
		if duration, err = time.ParseDuration(s); err != nil || duration < 0 {
			return configError{fmt.Errorf("FAKE_RUNNER_JOB_DURATION=%q: want a duration like 30s", s)}
		}
	}
	conclusion := r.getenv("FAKE_RUNNER_CONCLUSION")
	if conclusion == "" {
		conclusion = "success"
	}

	b := &broker{url: jit.ServerURL, client: r.client}
	a, err := r.register(ctx, b, encoded)
	if err != nil {
		return err
	}
	r.printf("√ Connected to GitHub\n")
	r.printf("Current runner version: '%s'", Version)
	r.printf("%s: Listening for Jobs", r.stamp())
	for a.JobID == 0 {
		if err := sleep(ctx, r.pollInterval); err != nil {
			return err
		}
		if a, err = b.acquire(ctx, jit.AgentID); err != nil {
			if errors.Is(err, errNotFound) {
				return fmt.Errorf("%w while it waited for a job", errRemoved)
			}
			return err
		}
	}
	r.printf("%s: Running job: %s", r.stamp(), a.JobName)
	if cancelled, err := r.work(ctx, b, jit.AgentID, duration); err != nil {
		return err
	} else if cancelled {
		r.printf("%s: Job %s completed with result: %s", r.stamp(), a.JobName, result("cancelled"))
		return nil
	}
	done, err := b.complete(ctx, jit.AgentID, conclusion)
	switch {
	case errors.Is(err, errNotFound): // the run was cancelled as the job ended
		conclusion = "cancelled"
	case err != nil:
		return err
	default:
		conclusion = done.Conclusion
	}
	r.printf("%s: Job %s completed with result: %s", r.stamp(), a.JobName, result(conclusion))
	return nil
}

// register brings the runner online, retrying while the broker cannot be
// reached or fails (a sandbox's network may take a moment), for up to
// connectTimeout. A refusal (4xx) is final: the configuration is used,
// unknown or wrong, and trying again changes nothing.
func (r *runner) register(ctx context.Context, b *broker, encoded string) (assignment, error) {
	deadline := r.now().Add(r.connectTimeout)
	wait := 100 * time.Millisecond
	for {
		a, err := b.register(ctx, encoded)
		var re *refusedError
		if err == nil || errors.As(err, &re) || ctx.Err() != nil {
			if errors.Is(err, errNotFound) {
				return a, fmt.Errorf("%w before it came online", errRemoved)
			}
			return a, err
		}
		if r.now().Add(wait).After(deadline) {
			return a, fmt.Errorf("could not connect to GitHub in %s: %w", r.connectTimeout, err)
		}
		if err := sleep(ctx, wait); err != nil {
			return a, err
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// work "runs" the job for d, asking the broker every pollInterval whether
// the runner still exists: GitHub removes the runner of a cancelled run.
func (r *runner) work(ctx context.Context, b *broker, id int64, d time.Duration) (cancelled bool, err error) {
	end := r.now().Add(d)
	for r.now().Before(end) {
		if err := sleep(ctx, min(r.pollInterval, end.Sub(r.now()))); err != nil {
			return false, err
		}
		if _, err := b.acquire(ctx, id); errors.Is(err, errNotFound) {
			return true, nil
		} else if err != nil {
			return false, err
		}
	}
	return false, nil
}

// result is how the runner words a conclusion.
func result(conclusion string) string {
	switch conclusion {
	case "success":
		return "Succeeded"
	case "failure":
		return "Failed"
	case "cancelled":
		return "Canceled"
	case "skipped":
		return "Skipped"
	}
	return conclusion
}

func (r *runner) stamp() string { return r.now().UTC().Format("2006-01-02 15:04:05Z") }

func (r *runner) printf(format string, args ...any) {
	fmt.Fprintf(r.out, format+"\n", args...)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
