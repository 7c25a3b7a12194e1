package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/logs"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/diskquota"
)

// Why a job's context ended; read with context.Cause.
var (
	errCanceled = errors.New("canceled")
	errLost     = errors.New("lease lost")
	errTimeout  = errors.New("timed out")
)

// Workspace is where the checkout appears inside the sandbox.
const Workspace = "/workspace"

// job is one claimed attempt being run.
type job struct {
	a       *Agent
	asg     *protocol.Assignment
	log     *slog.Logger
	batcher *logs.Batcher
	secrets []string
	life    context.Context // the agent's: a job's cleanup makes no spare once it ends
	// destroy removes the job's sandbox (once), when there is one.
	destroy func(logged bool)
	// execEnv is the job's environment, secrets included: it goes with
	// every command (exec), never into the sandbox's create spec, which
	// the engine shows to anyone who may inspect the container (`docker
	// inspect`: Config.Env) for the sandbox's whole life. Exec instances'
	// inspect shows their command, not their environment, on Docker and
	// Podman alike (see docs/security.md, "Secrets in the engine's view").
	execEnv []string
	// after holds the cleanups that run once the job's result is
	// reported, last registered first: destroying the sandbox (unless it
	// had to go before the report), keeping or dropping sticky caches,
	// removing the workspace. None of them changes the result, so none
	// of them makes the user wait for it.
	after []func()
	// cancel ends the job's context with a cause.
	cancel context.CancelCauseFunc
	// digest is the job's image's registry digest, once pulled or
	// inspected (pull.go); reported with the finish.
	digest string
}

// diskQuotaError ends a job that wrote past its disk quota outside its
// quota disk (the sandbox's writable layer).
type diskQuotaError struct{ msg string }

func (e *diskQuotaError) Error() string { return e.msg }

// atEnd registers f to run after the job's result is reported.
func (j *job) atEnd(f func()) { j.after = append(j.after, f) }

// cleanup runs what atEnd registered, last first.
func (j *job) cleanup() {
	for i := len(j.after) - 1; i >= 0; i-- {
		j.after[i]()
	}
	j.after = nil
}

// sys writes one of Kiln's own lines into the job's log.
func (j *job) sys(format string, args ...any) {
	j.batcher.Add(-1, "[kiln] "+fmt.Sprintf(format, args...))
}

// runJob runs one attempt from checkout to report. Whatever happens, the
// sandbox and workspace are destroyed before it returns.
//
// Timing and cancellation: ctx (the jobs' context, which outlives the
// agent's claiming by the shutdown grace) is the parent of jobCtx; life is
// the agent's claiming context (no spare is made once it ends). jobCtx
// ends with a cause: errCanceled when a heartbeat answer says the build
// was canceled, errLost when the server refuses our heartbeat (the lease
// passed to another attempt: report nothing more), errTimeout at the
// job's timeout, errShutdown (through ctx) when the agent stops. Cleanup
// and the final report use fresh contexts, because jobCtx is already done
// by then.
func (a *Agent) runJob(ctx, life context.Context, asg *protocol.Assignment) {
	log := a.log.With("job", asg.JobID, "attempt", asg.Attempt, "build", asg.BuildID)
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeout := time.Duration(asg.Spec.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Hour
	}
	timer := time.AfterFunc(timeout, func() { cancel(errTimeout) })
	defer timer.Stop()

	j := &job{a: a, asg: asg, log: log, life: life, cancel: cancel}
	for _, v := range asg.Secrets {
		j.secrets = append(j.secrets, v)
	}
	for _, r := range asg.Registries {
		j.secrets = append(j.secrets, r.Password)
	}
	j.secrets = append(j.secrets, gitCredentials(asg).Secrets()...)
	j.batcher = logs.NewBatcher(func(ctx context.Context, lines []logs.Line) error {
		return a.api.sendLogs(ctx, asg.JobID, asg.Attempt, lines)
	}, logs.Options{MaxBatchBytes: logs.MaxBatchBytes(protocol.MaxLogBatchBytes), MaxJobBytes: a.cfg.LogMaxBytes, MaxJobLines: a.cfg.LogMaxLines})
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); a.heartbeatLoop(jobCtx, cancel, asg, log) }()

	status, exit, msg := j.execute(jobCtx)
	cause := context.Cause(jobCtx)
	var dq *diskQuotaError
	switch {
	case errors.As(cause, &dq):
		status, exit, msg = "failure", nil, dq.msg
	case errors.Is(cause, errLost):
		status = ""
	case errors.Is(cause, errCanceled):
		status, msg = "canceled", "canceled"
		j.sys("job canceled")
	case errors.Is(cause, errTimeout):
		status, msg = "timed_out", fmt.Sprintf("job exceeded its timeout of %s", timeout)
		j.sys("%s", msg)
	case errors.Is(cause, errShutdown), ctx.Err() != nil:
		status, msg = "error", fmt.Sprint(context.Cause(ctx))
		j.sys("%s; it will be retried", msg)
	}
	cancel(nil)
	<-hbDone
	// Whatever happens below, the sandbox, the caches' views and the
	// workspace are dealt with before the job's slot is free again.
	defer j.cleanup()

	if asg.SkipCheckout && j.destroy != nil {
		// A GitHub Actions runner's sandbox goes before the report: its
		// pool's maximum counts running jobs, and must bound sandboxes.
		j.destroy(false)
	}
	flushCtx, flushCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer flushCancel()
	if err := j.batcher.Close(flushCtx); err != nil {
		log.Warn("some log lines could not be delivered", "err", err)
	}
	if d := j.batcher.DroppedLines(); d != (logs.Dropped{}) {
		log.Warn("log lines dropped (markers in the job's log)", "flood", d.Flood, "refused", d.Refused, "over_limit", d.OverLimit)
	}
	if status == "" {
		log.Warn("lease lost: sandbox destroyed, nothing reported")
		return
	}
	if err := a.api.finish(flushCtx, asg.JobID, protocol.FinishRequest{Attempt: asg.Attempt, Status: status, ExitCode: exit, Error: msg, ImageDigest: j.digest}); err != nil {
		log.Warn("report finish", "err", err)
		return
	}
	log.Info("job finished", "status", status)
}

func (a *Agent) heartbeatLoop(ctx context.Context, cancel context.CancelCauseFunc, asg *protocol.Assignment, log *slog.Logger) {
	every := a.heartbeat
	if every <= 0 {
		every = time.Duration(max(asg.LeaseSeconds/3, 1)) * time.Second
	}
	lease := time.Duration(asg.LeaseSeconds) * time.Second
	lastOK := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cancelled, err := a.api.heartbeat(ctx, asg.JobID, asg.Attempt, every)
		switch {
		case errors.Is(err, ErrStale):
			cancel(errLost)
			return
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			log.Warn("heartbeat failed", "err", err)
			// Past the lease the server has given the job up: keep nothing running.
			if time.Since(lastOK) > lease {
				cancel(errLost)
				return
			}
		case cancelled:
			lastOK = time.Now()
			cancel(errCanceled)
			return
		default:
			lastOK = time.Now()
		}
	}
}

// execute checks out the source, creates the sandbox and runs the steps. It
// returns the job's status, exit code and message as far as it can tell;
// runJob overrides them when the context ended for a known cause.
func (j *job) execute(ctx context.Context) (status string, exit *int, msg string) {
	a, asg := j.a, j.asg
	spec := asg.Spec
	j.sys("job %q, attempt %d, on agent %s", spec.Name, asg.Attempt, a.cfg.Name)
	if asg.Untrusted {
		j.sys("request #%d comes from a fork: no secrets, caches read-only", asg.PullRequest)
	}
	// The server hands out only jobs within this agent's limits; one from
	// an older server, or a pool's runner job, is refused, never run with
	// more than the limits.
	if over := spec.Resources.Exceeds(a.limits()); len(over) > 0 {
		for _, f := range over {
			j.sys("resources.%s: the job asks for %s; this agent allows at most %s", f, spec.Resources.Describe(f), a.limits().Describe(f))
		}
		return "failure", nil, fmt.Sprintf("the job asks for more than this agent's limits (%s)", a.limits())
	}

	spareKey, spareable := a.spareKeyOf(asg)
	var sp *spare
	if spareable {
		sp = a.takeSpare(ctx, spareKey)
	}
	ws := filepath.Join(a.cfg.WorkDir, "jobs", fmt.Sprintf("%d-%d", asg.JobID, asg.Attempt))
	adopted := false
	var disk *diskquota.Disk
	var wsMounts []sandbox.Mount
	if sp != nil {
		ws, disk, wsMounts = sp.ws, sp.disk, sp.wsMounts
		// Until the job has adopted the spare's sandbox and views, they
		// are the spare's to drop.
		j.atEnd(func() {
			if !adopted {
				a.dropSpare(sp)
			}
		})
	}
	if sp == nil {
		var err error
		if disk, wsMounts, err = a.makeWorkspace(ctx, ws, a.diskSize(spec)); err != nil {
			j.sys("cannot make the job's workspace: %v", err)
			return "error", nil, err.Error()
		}
	}
	// Removing a workspace with restored caches in it takes seconds
	// (unmounting its disk does not).
	j.atEnd(func() { a.removeWorkspace(ws, disk) })
	src := filepath.Join(ws, "src")
	// diskFull tells a job that failed on its full disk why.
	diskFull := func(what string) (string, bool) {
		if disk == nil || !disk.Full() {
			return "", false
		}
		note := diskFullNote(disk, a.cfg.DefaultDisk)
		j.sys("%s: %s", what, note)
		return note, true
	}
	// The checkout and the sandbox's creation are independent (the bind
	// mount only needs src to exist), so they overlap; steps wait for both.
	checkout := make(chan error, 1)
	if asg.SkipCheckout {
		// A GitHub Actions runner fetches the repository itself.
		checkout <- nil
	} else {
		j.sys("checking out %s at %s", redact(asg.CloneURL), asg.Commit)
		// The forge connection's credentials go to git's environment for
		// the fetch; the checkout's origin is the URL without them, and
		// the job's environment never has them.
		auth := gitmirror.WithCredentials(gitCredentials(asg))
		go func() {
			t0 := time.Now()
			var err error
			if asg.PullRequest > 0 {
				// A request's head may be on no branch of the repository (a
				// fork's): the forge serves it under the request's ref.
				err = a.mirrors.FetchRef(ctx, asg.CloneURL, asg.Ref, asg.Commit, auth)
			}
			if err == nil {
				err = a.mirrors.Checkout(ctx, asg.CloneURL, asg.Commit, src, auth)
			}
			if err == nil {
				j.sys("checked out in %s", time.Since(t0).Round(time.Millisecond))
			}
			checkout <- err
		}()
	}
	waitCheckout := func() (string, *int, string, bool) {
		if cerr := <-checkout; cerr != nil {
			if ctx.Err() != nil {
				return "error", nil, ctx.Err().Error(), false
			}
			j.sys("checkout failed: %v", cerr)
			if note, full := diskFull("checkout failed"); full {
				return "failure", nil, "checkout: " + note, false // a bigger repository than the quota: not retried
			}
			return "error", nil, "checkout: " + cerr.Error(), false
		}
		return "", nil, "", true
	}
	checkedOut := false
	if hasKeyed(spec) {
		// Keyed caches' keys may hash files of the checkout.
		if st, code, msg, ok := waitCheckout(); !ok {
			return st, code, msg
		}
		checkedOut = true
	}
	caches := &jobCaches{j: j}
	succeeded := false
	// Runs after the sandbox is destroyed (registered before it, so run
	// after it), so nothing writes the caches while they are kept or
	// dropped. Keyed caches are saved before the report (see below); here
	// sticky volumes keep a successful job's writes.
	j.atEnd(func() {
		caches.waitRestored() // ends with the job's context, if not before
		if !succeeded || asg.Untrusted {
			caches.release()
			return
		}
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		caches.keepSticky(fctx)
		if spareable && j.life.Err() == nil {
			a.makeSpare(spareKey, stickyPaths(spec))
		}
	})
	if sp != nil {
		caches.adopt(sp.views)
		adopted = true
	} else {
		caches.prepare(ctx, ws, src)
	}

	sbSpec := sandbox.Spec{
		// Job ids are unique per control plane, not per engine: the agent's
		// id keeps two Kiln installations sharing an engine apart.
		Name:  fmt.Sprintf("kiln-%d-%d-%s", asg.JobID, asg.Attempt, nameSafe(a.cfg.ID)),
		Image: spec.Image,
		Labels: map[string]string{
			sandbox.LabelManaged: "true", sandbox.LabelAgent: a.cfg.ID,
			sandbox.LabelJob: strconv.FormatInt(asg.JobID, 10), sandbox.LabelAttempt: strconv.Itoa(asg.Attempt),
		},
		WorkDir:     Workspace,
		Mounts:      append(slices.Clone(wsMounts), caches.mounts...),
		CPUs:        firstNonZero(spec.Resources.CPUs, a.cfg.DefaultCPUs),
		MemoryBytes: firstNonZero(spec.Resources.MemoryBytes, a.cfg.DefaultMemory),
		PidsLimit:   firstNonZero(spec.Resources.Pids, a.cfg.DefaultPids),
	}
	j.execEnv = j.env()
	if sp == nil {
		if st, msg, ok := a.pullImage(ctx, j, asg); !ok {
			return st, nil, msg
		}
	}
	tCreate := time.Now()
	var id string
	var err error
	if sp != nil {
		id, sbSpec.Name = sp.id, sp.name
	} else {
		id, err = a.rt.Create(ctx, sbSpec)
	}
	created := time.Since(tCreate)
	// Destroy always, also after a failed Create (it may have left parts).
	var destroyOnce sync.Once
	destroy := func(logged bool) {
		destroyOnce.Do(func() {
			dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			target := id
			if target == "" {
				target = sbSpec.Name
			}
			t0 := time.Now()
			if err := a.rt.Destroy(dctx, target); err != nil {
				j.log.Warn("destroy sandbox", "sandbox", sbSpec.Name, "err", err)
			} else if logged && id != "" {
				j.sys("sandbox destroyed in %s", time.Since(t0).Round(time.Millisecond))
			}
		})
	}
	j.atEnd(func() { destroy(false) })
	j.destroy = destroy
	caches.waitRestored()
	if !checkedOut {
		if st, code, msg, ok := waitCheckout(); !ok {
			return st, code, msg
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return "error", nil, ctx.Err().Error()
		}
		switch {
		case errors.Is(err, sandbox.ErrImageNotFound):
			j.sys("image %q is not present on this host: build or pull it there first (%v)", spec.Image, err)
		default:
			j.sys("cannot create the sandbox: %v", err)
		}
		return "error", nil, "create sandbox: " + err.Error()
	}
	how := fmt.Sprintf("up in %s", created.Round(time.Millisecond))
	if sp != nil {
		how = "made ahead of time for this project"
	}
	quota := "no disk quota"
	if disk != nil {
		quota = "disk " + formatBytes(disk.Bytes)
	}
	j.sys("sandbox %s (image %s, %.3g CPUs, %d MiB, %d pids, %s; %s)", sbSpec.Name, spec.Image, sbSpec.CPUs, sbSpec.MemoryBytes>>20, sbSpec.PidsLimit, quota, how)

	if disk != nil && a.cfg.LayerWatch > 0 {
		if ls, ok := a.rt.(sandbox.LayerSizer); ok {
			watchCtx, stopWatch := context.WithCancel(ctx)
			defer stopWatch()
			go j.watchLayer(watchCtx, ls, id, disk.Bytes)
		}
	}
	for i, st := range spec.Steps {
		code, err := j.step(ctx, id, i, st.Name, st.Run)
		if ctx.Err() != nil {
			j.reportStep(i, stepStatusFor(ctx), nil)
			return "error", nil, "interrupted"
		}
		if err != nil {
			// An error (not an exit code) is the infrastructure's: the
			// server retries the job while attempts remain.
			j.reportStep(i, "error", nil)
			if errors.Is(err, sandbox.ErrGone) {
				j.sys("the sandbox went away while step %q ran: %v (not the step's failure)", st.Name, err)
			} else {
				j.sys("step %q could not run: %v", st.Name, err)
			}
			return "error", nil, fmt.Sprintf("step %q: %v", st.Name, err)
		}
		if code != 0 {
			j.reportStep(i, "failure", &code)
			j.sys("step %q failed with exit code %d", st.Name, code)
			if err := j.saveArtifacts(ctx, src, false); err != nil && !errors.Is(err, errArtifactsTooLarge) {
				return "error", nil, err.Error()
			}
			if note, full := diskFull(fmt.Sprintf("step %q", st.Name)); full {
				return "failure", &code, fmt.Sprintf("step %q exited with code %d: %s", st.Name, code, note)
			}
			return "failure", &code, fmt.Sprintf("step %q exited with code %d", st.Name, code)
		}
		j.reportStep(i, "success", &code)
	}
	// The artifacts are part of the job's result: a success whose files
	// could not be kept is not one.
	if err := j.saveArtifacts(ctx, src, true); errors.Is(err, errArtifactsTooLarge) {
		return "failure", nil, err.Error()
	} else if err != nil {
		return "error", nil, err.Error()
	}
	succeeded = true
	// Keyed caches are part of the job's result: a job of the project on
	// another host may want them as soon as this one is reported. They are
	// read after the sandbox is gone (exact hits are not saved again).
	if caches.keyedToSave() {
		destroy(true)
	}
	zero := 0
	if asg.Untrusted {
		if len(spec.Caches) > 0 {
			j.sys("caches: a fork's build only reads them; nothing it wrote is kept")
		}
		return "success", &zero, ""
	}
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	caches.saveKeyed(fctx)
	caches.announceSticky()
	return "success", &zero, ""
}

// watchLayer ends the job when its sandbox's writable layer (what it wrote
// outside /workspace and /tmp, which the engines cannot bound here) grows
// past the disk quota. It looks every Config.LayerWatch, so a fast writer
// may pass the quota by what it writes in that time before it is stopped.
func (j *job) watchLayer(ctx context.Context, ls sandbox.LayerSizer, id string, limit int64) {
	t := time.NewTicker(j.a.cfg.LayerWatch)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		size, err := ls.LayerSize(ctx, id)
		if err != nil || size <= limit {
			continue
		}
		msg := fmt.Sprintf("the job wrote %s to its sandbox's own filesystem (outside /workspace and /tmp), past its disk quota of %s: stopped; ask for up to %s with resources.disk, or write less",
			formatBytes(size), formatBytes(limit), formatBytes(j.a.cfg.DefaultDisk))
		j.sys("%s", msg)
		j.cancel(&diskQuotaError{msg: "disk quota: " + msg})
		return
	}
}

func stepStatusFor(ctx context.Context) string {
	var dq *diskQuotaError
	switch cause := context.Cause(ctx); {
	case errors.As(cause, &dq):
		return "failure"
	case errors.Is(cause, errCanceled):
		return "canceled"
	case errors.Is(cause, errTimeout):
		return "timed_out"
	}
	return "error"
}

// step runs one shell step, streaming its output through the secret masker
// and the line splitter into the log batcher.
func (j *job) step(ctx context.Context, sandboxID string, idx int, name, run string) (int, error) {
	j.reportStep(idx, "running", nil)
	j.sys("step %d/%d: %s", idx+1, len(j.asg.Spec.Steps), name)
	// Each stream has its own masker and line splitter: a secret or a
	// line of one is never cut by the other's output.
	emit := func(text string) { j.batcher.Add(idx, text) }
	stdout, stderr := logs.NewStream(j.secrets, emit), logs.NewStream(j.secrets, emit)
	code, err := j.a.rt.Exec(ctx, sandboxID, sandbox.ExecSpec{
		Cmd:     []string{"/bin/sh", "-e", "-c", run},
		Env:     j.execEnv,
		WorkDir: Workspace,
		Output:  stdout,
		Stderr:  stderr,
	})
	_ = stdout.Flush()
	_ = stderr.Flush()
	return code, err
}

// reportStep reports a step transition. It must not block the job on a slow
// server beyond a bound, and a refused (stale) report is ignored: the
// heartbeat notices a lost lease.
func (j *job) reportStep(idx int, status string, exit *int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := j.a.api.step(ctx, j.asg.JobID, protocol.StepUpdate{Attempt: j.asg.Attempt, Index: idx, Status: status, ExitCode: exit}); err != nil && !errors.Is(err, ErrStale) {
		j.log.Warn("report step", "step", idx, "err", err)
	}
}

// env is the job's environment: the pipeline's env, the project's secrets,
// and Kiln's own variables (which win).
func (j *job) env() []string {
	asg := j.asg
	vars := map[string]string{}
	for k, v := range asg.Spec.Env {
		vars[k] = v
	}
	for k, v := range asg.Secrets {
		vars[k] = v
	}
	for k, v := range map[string]string{
		"CI": "true", "KILN": "true",
		"KILN_PROJECT": asg.Project, "KILN_BUILD_ID": strconv.FormatInt(asg.BuildID, 10),
		"KILN_BUILD_NUMBER": strconv.FormatInt(asg.BuildNumber, 10), "KILN_JOB": asg.Spec.Name,
		"KILN_JOB_ID": strconv.FormatInt(asg.JobID, 10), "KILN_ATTEMPT": strconv.Itoa(asg.Attempt),
		"KILN_COMMIT": asg.Commit, "KILN_REF": asg.Ref, "KILN_BRANCH": asg.Branch, "KILN_WORKSPACE": Workspace,
		"KILN_EVENT": asg.Event,
	} {
		vars[k] = v
	}
	if asg.PullRequest > 0 {
		vars["KILN_PULL_REQUEST"] = strconv.Itoa(asg.PullRequest)
		vars["KILN_HEAD_BRANCH"] = asg.HeadBranch
		vars["KILN_BASE_BRANCH"] = asg.BaseBranch
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func firstNonZero[T int64 | float64](v, def T) T {
	if v != 0 {
		return v
	}
	return def
}

// redact hides credentials in a clone URL (https://user:pass@host/...).
func redact(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	if at := strings.Index(rest, "@"); at >= 0 && !strings.Contains(rest[:at], "/") {
		return scheme + "://***@" + rest[at+1:]
	}
	return url
}

// nameSafe keeps the characters container engines accept in a name, at
// most the last 24 of them (agent ids end in their random part).
func nameSafe(s string) string {
	b := []byte{}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b = append(b, c)
		}
	}
	if len(b) > 24 {
		b = b[len(b)-24:]
	}
	return string(b)
}

// gitCredentials are the assignment's git credentials for gitmirror (a
// zero value: none).
func gitCredentials(asg *protocol.Assignment) *gitmirror.Credentials {
	if asg.Git == nil {
		return &gitmirror.Credentials{}
	}
	return &gitmirror.Credentials{Username: asg.Git.Username, Password: asg.Git.Password}
}
