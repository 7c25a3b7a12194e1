package main

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"time"
)

// bareRun is kilnbench's baseline: `docker run --rm IMAGE echo hello` (or
// podman, on the same engine), timed from the process's start to its
// first output line.
func bareRun(cli []string) (time.Duration, error) {
	args := append(cli[1:len(cli):len(cli)], "run", "--rm", image, "echo", "hello")
	cmd := exec.Command(cli[0], args...)
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
		_ = cmd.Wait()
		return 0, fmt.Errorf("%s run: %v", cli[0], err)
	}
	d := time.Since(t0)
	_, _ = io.Copy(io.Discard, r)
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%s run: %v", cli[0], err)
	}
	return d, nil
}
