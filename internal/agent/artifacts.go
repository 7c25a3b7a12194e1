package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/artifact"
)

// errArtifactsTooLarge: the job's artifacts are past the server's limit
// (the job's doing: it fails, it is not retried).
var errArtifactsTooLarge = errors.New("artifacts over the limit")

// saveArtifacts uploads the job's artifacts, if its spec has them and
// wants them after steps that succeeded (or not): the files its paths
// select in the checkout src, packed into one archive in the job's
// workspace directory ws (outside the checkout, on the job's disk) and
// streamed from there. It runs after the steps, before the sandbox goes,
// within the job's context: its timeout bounds the upload too, and a
// cancel stops it.
// A nil error: uploaded, or nothing to upload; errArtifactsTooLarge: the
// job's fault; any other error: the infrastructure's.
func (j *job) saveArtifacts(ctx context.Context, src string, succeeded bool) error {
	spec := j.asg.Spec.Artifacts
	if !spec.Wanted(succeeded) {
		return nil
	}
	set, err := artifact.Collect(src, spec.Paths)
	if err != nil {
		j.sys("artifacts: %v", err)
		return err
	}
	if n := len(set.Skipped); n > 0 {
		shown := set.Skipped[:min(n, 5)]
		more := ""
		if n > len(shown) {
			more = fmt.Sprintf(" and %d more", n-len(shown))
		}
		j.sys("artifacts: left out %s (out of the workspace, to a directory or to nothing): %s%s", plural(n, "symbolic link"), strings.Join(shown, ", "), more)
	}
	if len(set.Files) == 0 {
		j.sys("artifacts: no file matches %s: nothing uploaded", strings.Join(spec.Paths, ", "))
		return nil
	}
	if max := j.asg.ArtifactMaxBytes; max > 0 && set.Bytes > max {
		j.sys("artifacts: %s of %s: over the server's limit of %s for one job's artifacts (-artifacts-max-bytes): nothing uploaded", countFiles(len(set.Files)), humanBytes(set.Bytes), humanBytes(max))
		return fmt.Errorf("%w: %s of %s, the limit is %s", errArtifactsTooLarge, countFiles(len(set.Files)), humanBytes(set.Bytes), humanBytes(max))
	}
	t0 := time.Now()
	dir := filepath.Join(j.a.cfg.WorkDir, "artifacts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		j.sys("artifacts: cannot pack them: %v", err)
		return fmt.Errorf("artifacts: %w", err)
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%d-%d-*.tar.zst", j.asg.JobID, j.asg.Attempt))
	if err != nil {
		j.sys("artifacts: cannot pack them: %v", err)
		return fmt.Errorf("artifacts: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	files, bytes, err := artifact.Write(ctx, f, src, set)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		j.sys("artifacts: cannot pack them: %v", err)
		return fmt.Errorf("artifacts: pack: %w", err)
	}
	up, err := j.a.api.uploadArtifacts(ctx, j.asg.JobID, j.asg.Attempt, files, name)
	if err != nil {
		j.sys("artifacts: upload of %s (%s) failed: %v", countFiles(files), humanBytes(bytes), err)
		return fmt.Errorf("artifacts: upload: %w", err)
	}
	j.sys("artifacts: uploaded %s (%s, %s compressed, sha256 %s) in %s; kept until %s", countFiles(files), humanBytes(bytes), humanBytes(up.Size),
		up.SHA256, time.Since(t0).Round(time.Millisecond), up.ExpiresAt.UTC().Format(time.RFC3339))
	return nil
}

func countFiles(n int) string { return plural(n, "file") }

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// humanBytes is n in B, KiB, MiB or GiB, as a person reads a log.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
