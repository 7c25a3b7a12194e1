package gitmirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// gitEnv is the environment of every git command: the caller's, without
// anything that changes what git does (GIT_DIR, GIT_CONFIG_*, ...) and
// without the user's or the system's configuration, so a developer's
// ~/.gitconfig cannot change the mirrors. ssh settings are kept: they are
// how a host is given its keys. home is an empty directory of ours.
func gitEnv(home string) []string {
	var env []string
	keep := map[string]bool{"GIT_SSH": true, "GIT_SSH_COMMAND": true, "GIT_SSH_VARIANT": true}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case keep[k]:
		case strings.HasPrefix(k, "GIT_"), k == "HOME", k == "XDG_CONFIG_HOME", k == "LC_ALL", k == "LANGUAGE":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HOME="+home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ALLOW_PROTOCOL="+allowedProtocols,
		"GIT_LITERAL_PATHSPECS=1", // a path we read is a name, not a pattern
		"LC_ALL=C",
	)
	if os.Getenv("GIT_SSH") == "" && os.Getenv("GIT_SSH_COMMAND") == "" {
		env = append(env, "GIT_SSH_COMMAND=ssh -o BatchMode=yes")
	}
	return env
}

// gitConfig is passed with -c to every command.
var gitConfig = []string{
	// A fetch may start an automatic gc or maintenance; detached, it would
	// run on after the mirror's lock is released, under readers' feet.
	"gc.autoDetach=false",
	"maintenance.autoDetach=false",
	"advice.detachedHead=false",
	"init.defaultBranch=main",
	"credential.helper=",
	"core.askPass=",
}

// gitCmd is one git invocation.
type gitCmd struct {
	dir    string    // working directory ("" for the current one)
	gitDir string    // GIT_DIR, so git never looks upwards for a repository
	work   string    // GIT_WORK_TREE
	stdin  io.Reader // nil: none
	args   []string
	remote *remote // whose credentials to scrub from errors; may be nil
	// network marks a command that talks to the remote (a fetch): it gets
	// the fetch deadline, every other command the local one.
	network bool
}

// gitError is a failed git command. Its message is redacted.
type gitError struct {
	args   string // redacted
	err    error
	stderr string // redacted
	code   int    // exit code, -1 if git did not run or was killed
	// timedOut is set when the command ran past its deadline and was
	// killed; the message then says so in words.
	timedOut time.Duration
	op, of   string // "fetch", "https://host/repo.git" (redacted), for that message
}

func (e *gitError) Error() string {
	if e.timedOut > 0 {
		msg := "git " + e.op
		if e.of != "" {
			msg += " of " + e.of
		}
		return fmt.Sprintf("%s timed out after %s (killed)", msg, e.timedOut)
	}
	msg := fmt.Sprintf("git %s: %v", e.args, e.err)
	if e.stderr != "" {
		msg += ": " + e.stderr
	}
	return msg
}

func (e *gitError) Unwrap() error { return e.err }

// run runs the command and returns its standard output. The command has a
// deadline (the fetch or the local one); at the deadline, or when ctx ends,
// its whole process group is killed: git runs helpers of its own
// (git-remote-https, ssh, upload-pack) that killing git alone would leave
// blocked on a silent server, holding our pipes open.
func (m *Mirrors) run(ctx context.Context, c gitCmd) ([]byte, error) {
	args := make([]string, 0, 2*len(gitConfig)+len(c.args))
	for _, kv := range gitConfig {
		args = append(args, "-c", kv)
	}
	args = append(args, c.args...)
	timeout := m.cfg.LocalTimeout
	if c.network {
		timeout = m.cfg.FetchTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	// Should a process that left the group still hold a pipe, Wait gives
	// up on it after this.
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = c.dir
	cmd.Env = m.env
	if c.gitDir != "" {
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "GIT_DIR="+c.gitDir)
	}
	if c.work != "" {
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "GIT_WORK_TREE="+c.work)
	}
	if c.network && c.remote != nil {
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], c.remote.fetchEnv...)
	}
	cmd.Stdin = c.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &limitedWriter{w: &stderr, n: 8 << 10}
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
		// Whatever git started and left behind in its group goes with it.
		// The group's id cannot have been reused: the kernel keeps a pid
		// while it names a live group.
		killGroup(cmd.Process.Pid)
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	ge := &gitError{
		args:   scrub(strings.Join(c.args, " "), c.remote),
		err:    err,
		stderr: scrub(strings.TrimSpace(stderr.String()), c.remote),
		code:   -1,
		op:     c.args[0],
	}
	if c.remote != nil {
		ge.of = c.remote.redacted
	}
	switch {
	case parent.Err() != nil:
		ge.err = parent.Err()
	case ctx.Err() != nil:
		ge.err, ge.timedOut = ctx.Err(), timeout
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		ge.code = exit.ExitCode()
	}
	return stdout.Bytes(), ge
}

// killGroup kills the process group whose leader is pid.
func killGroup(pid int) error {
	return syscall.Kill(-pid, syscall.SIGKILL)
}

// exitCode returns the exit code of a failed git command, -1 if unknown.
func exitCode(err error) int {
	var ge *gitError
	if errors.As(err, &ge) {
		return ge.code
	}
	return -1
}

// scrub removes r's credentials from s.
func scrub(s string, r *remote) string {
	if r != nil {
		s = strings.ReplaceAll(s, r.raw, r.redacted)
	}
	s = Redact(s)
	if r != nil {
		for _, secret := range r.secrets {
			if len(secret) >= 4 {
				s = strings.ReplaceAll(s, secret, "***")
			}
		}
	}
	return s
}

// limitedWriter keeps the first n bytes written to it and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
