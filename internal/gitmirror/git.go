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
}

// gitError is a failed git command. Its message is redacted.
type gitError struct {
	args   string // redacted
	err    error
	stderr string // redacted
	code   int    // exit code, -1 if git did not run or was killed
}

func (e *gitError) Error() string {
	msg := fmt.Sprintf("git %s: %v", e.args, e.err)
	if e.stderr != "" {
		msg += ": " + e.stderr
	}
	return msg
}

func (e *gitError) Unwrap() error { return e.err }

// run runs the command and returns its standard output.
func (m *Mirrors) run(ctx context.Context, c gitCmd) ([]byte, error) {
	args := make([]string, 0, 2*len(gitConfig)+len(c.args))
	for _, kv := range gitConfig {
		args = append(args, "-c", kv)
	}
	args = append(args, c.args...)
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = c.dir
	cmd.Env = m.env
	if c.gitDir != "" {
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "GIT_DIR="+c.gitDir)
	}
	if c.work != "" {
		cmd.Env = append(cmd.Env, "GIT_WORK_TREE="+c.work)
	}
	cmd.Stdin = c.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &limitedWriter{w: &stderr, n: 8 << 10}
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = ctxErr
	}
	ge := &gitError{
		args:   scrub(strings.Join(c.args, " "), c.remote),
		err:    err,
		stderr: scrub(strings.TrimSpace(stderr.String()), c.remote),
		code:   -1,
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		ge.code = exit.ExitCode()
	}
	return stdout.Bytes(), ge
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
