package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/kilnci/kiln/internal/sandbox"
)

// Exec runs spec.Cmd in the sandbox and returns its exit code. Its stdout
// and stderr are demultiplexed into spec.Output as they arrive.
//
// Three round trips: create the exec instance, start it attached (the
// output streams over that hijacked connection until the process ends),
// inspect it for the exit code.
//
// When ctx is canceled Exec closes the stream and returns ctx.Err() at
// once; the process may still run inside the sandbox until Destroy. No
// write reaches spec.Output after Exec returned.
//
// A command that failed (or could not run) in a sandbox that is no longer
// running is reported as ErrGone: the exit code an engine gives then (126
// from a failed exec start, 137 from the kill) is not the command's.
func (r *Runtime) Exec(ctx context.Context, id string, spec sandbox.ExecSpec) (int, error) {
	code, err := r.exec(ctx, id, spec)
	if (err == nil && code == 0) || ctx.Err() != nil {
		return code, err
	}
	why := r.notRunning(ctx, id)
	// A command killed by a signal may have died with its sandbox, whose
	// own exit the engine records a moment later (Docker reports the
	// exec's exit first): look again for a short while before calling it
	// the command's own exit.
	for delay := 50 * time.Millisecond; why == "" && err == nil && (code == 128+9 || code == 128+15) && delay <= 800*time.Millisecond; delay *= 2 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return code, err
		case <-t.C:
		}
		why = r.notRunning(ctx, id)
	}
	switch why {
	case "":
		return code, err
	case removed:
		return -1, fmt.Errorf("docker: exec in %s: %w: %s (%w)", id, sandbox.ErrGone, why, sandbox.ErrNotFound)
	default:
		return -1, fmt.Errorf("docker: exec in %s: %w: %s", id, sandbox.ErrGone, why)
	}
}

const removed = "it was removed"

// notRunning says why the sandbox is not running, or "" when it is (or
// the engine cannot tell).
func (r *Runtime) notRunning(ctx context.Context, id string) string {
	c, err := r.cli.ContainerInspect(ctx, id)
	switch {
	case isGone(err):
		return removed
	case err != nil || c.State == nil || c.State.Running:
		return ""
	case c.State.OOMKilled:
		return "its main process was killed for lack of memory"
	}
	return fmt.Sprintf("it stopped (%s, exit code %d)", c.State.Status, c.State.ExitCode)
}

func (r *Runtime) exec(ctx context.Context, id string, spec sandbox.ExecSpec) (int, error) {
	if len(spec.Cmd) == 0 {
		return -1, errors.New("docker: exec: empty command")
	}
	created, err := r.cli.ContainerExecCreate(ctx, id, container.ExecOptions{
		Cmd:          spec.Cmd,
		Env:          spec.Env,
		WorkingDir:   spec.WorkDir,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return -1, r.wrap("exec in "+id, err)
	}
	resp, err := r.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, r.wrap("exec in "+id+": start", err)
	}
	out := &guardedWriter{w: spec.Output}
	out.init()
	if out.w == nil {
		out.w = io.Discard
	}
	defer out.close()
	var errOut io.Writer = out
	if spec.Stderr != nil {
		// One lock for both streams: writes stay serialized.
		errOut = &guardedWriter{w: spec.Stderr, mu: out.mu, closed: out.closed}
	}
	defer resp.Close() // runs first: ends a copy still in progress

	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(out, errOut, resp.Reader)
		copied <- err
	}()
	select {
	case err = <-copied:
	case <-ctx.Done():
		// The hijacked connection ignores ctx: closing it ends the copy.
		return -1, ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, fmt.Errorf("docker: exec in %s: read output: %w", id, err)
	}
	return r.exitCode(ctx, id, created.ID)
}

// exitCode inspects a finished exec instance. The stream ends when the
// engine saw the output close, which in principle can come a moment before
// it has recorded the exit (not seen in 30 tries on Docker 20.10 or Podman
// 4.3, but nothing in the API orders the two), so a still-running exec is
// polled with a short, growing backoff.
func (r *Runtime) exitCode(ctx context.Context, id, execID string) (int, error) {
	delay := time.Millisecond
	for {
		ins, err := r.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			return -1, r.wrap("exec in "+id+": inspect", err)
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return -1, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// guardedWriter serializes writes to the caller's writer and drops those
// that arrive after close, so a canceled Exec never writes into an Output
// its caller has moved on from.
// Two of them (stdout and stderr) may share one lock and flag.
type guardedWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	closed *bool
}

func (g *guardedWriter) init() {
	if g.mu == nil {
		g.mu, g.closed = new(sync.Mutex), new(bool)
	}
}

func (g *guardedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if *g.closed {
		return 0, io.ErrClosedPipe
	}
	return g.w.Write(p)
}

func (g *guardedWriter) close() {
	g.mu.Lock()
	*g.closed = true
	g.mu.Unlock()
}
