// Package browsertest drives a real browser for the dashboard's tests
// and benchmark: Debian's Chromium, through playwright-core on Node.js
// (installed from driver/package-lock.json on first use, never a browser
// download). A scenario is a Node script in driver/ that takes its inputs
// from the environment, asserts with node:assert, and prints one JSON
// line of results last; Run fails the test with its output when it
// exits non-zero.
package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Browser is a Chromium and the driver's scripts, ready to run.
type Browser struct {
	Chromium string
	driver   string
}

var (
	setupOnce sync.Once
	setupErr  error
	driverDir string
)

// Find returns the browser, installing the driver's packages when they
// are missing; an error says what is missing.
func Find() (*Browser, error) {
	chromium := os.Getenv("KILN_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		return nil, fmt.Errorf("%s is missing (Debian: apt-get install chromium; or scripts/browser.sh)", chromium)
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is missing (Debian: apt-get install nodejs npm)", tool)
		}
	}
	setupOnce.Do(func() { setupErr = install() })
	if setupErr != nil {
		return nil, setupErr
	}
	return &Browser{Chromium: chromium, driver: driverDir}, nil
}

// Require returns the browser, or skips the test when Chromium, node or
// npm is missing — unless KILN_REQUIRE_BROWSER is set (scripts/test.sh
// sets it, after installing them), and then it fails.
func Require(t testing.TB) *Browser {
	t.Helper()
	b, err := Find()
	if err != nil {
		if os.Getenv("KILN_REQUIRE_BROWSER") != "" {
			t.Fatalf("browser tests: %v (KILN_REQUIRE_BROWSER is set)", err)
		}
		t.Skipf("no browser: %v", err)
	}
	return b
}

// Command is scenario (a script in driver/) as a process to start, with
// env added to this process's environment and KILN_CHROMIUM set: for a
// benchmark that talks to its scenario over stdin and stdout.
func (b *Browser) Command(ctx context.Context, scenario string, env map[string]string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "node", scenario)
	cmd.Dir = b.driver
	cmd.Env = append(os.Environ(), "KILN_CHROMIUM="+b.Chromium)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// install runs npm ci in driver/ unless playwright-core is there.
func install() error {
	_, file, _, _ := runtime.Caller(0)
	driverDir = filepath.Join(filepath.Dir(file), "driver")
	if _, err := os.Stat(filepath.Join(driverDir, "node_modules", "playwright-core", "package.json")); err == nil {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = driverDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s failed (is the npm registry reachable?): %v\n%s", driverDir, err, out)
	}
	return nil
}

// Run runs scenario (a script in driver/) with env added to the
// process's environment and KILN_CHROMIUM set, for at most timeout, and
// decodes the last line it printed (JSON) into out (nil: ignored).
func (b *Browser) Run(t testing.TB, scenario string, timeout time.Duration, env map[string]string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := b.Command(ctx, scenario, env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Fatalf("browser scenario %s: %v\nstdout:\n%s\nstderr:\n%s", scenario, err, stdout.String(), stderr.String())
	}
	if testing.Verbose() {
		t.Logf("browser scenario %s:\n%s%s", scenario, stdout.String(), stderr.String())
	}
	if out == nil {
		return
	}
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], out); err != nil {
		t.Fatalf("browser scenario %s: its last line is not JSON results (%v):\n%s", scenario, err, stdout.String())
	}
}
