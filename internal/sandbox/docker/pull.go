package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"

	"github.com/kilnci/kiln/internal/sandbox"
)

// pullTimeout bounds one transfer. It runs on a context of its own (see
// Pull), so it needs a bound of its own.
const pullTimeout = 30 * time.Minute

var _ sandbox.Puller = (*Runtime)(nil)

// pullKey is what makes two pulls one: the same reference with the same
// credentials. Two projects pulling one image with different credentials
// do not share a transfer: each is checked by the registry. The key lives
// only in this process's memory, with a hash of the password.
func pullKey(req sandbox.PullRequest) string {
	if req.Auth == nil {
		return req.Image
	}
	h := sha256.Sum256([]byte(req.Auth.Password))
	return req.Image + "\x00" + req.Auth.Username + "\x00" + hex.EncodeToString(h[:])
}

// Pull makes req.Image present on the engine's host by req.Policy (see
// sandbox.Puller). Failures wrap sandbox.ErrImageNotFound (PullNever, the
// host lacks it), ErrRegistryAuth, ErrImageUnknown or
// ErrRegistryUnavailable.
//
// Concurrent pulls of one image with the same credentials are one
// transfer. It runs on a context detached from the first caller's, so a
// job canceled while its pull runs does not fail the other jobs waiting
// for it; each caller stops waiting when its own ctx ends.
func (r *Runtime) Pull(ctx context.Context, req sandbox.PullRequest) (sandbox.PullResult, error) {
	t0 := time.Now()
	named, err := reference.ParseNormalizedNamed(req.Image)
	if err != nil {
		return sandbox.PullResult{}, fmt.Errorf("docker: pull %q: %w: %v", req.Image, sandbox.ErrImageUnknown, err)
	}
	switch req.Policy {
	case "", sandbox.PullIfNotPresent, sandbox.PullNever:
		inspect, err := r.cli.ImageInspect(ctx, req.Image)
		if err == nil {
			return sandbox.PullResult{Duration: time.Since(t0), Size: inspect.Size, Digest: repoDigest(named, inspect.RepoDigests)}, nil
		}
		if !cerrdefs.IsNotFound(err) {
			return sandbox.PullResult{}, r.wrap("pull: inspect image "+req.Image, err)
		}
		if req.Policy == sandbox.PullNever {
			return sandbox.PullResult{}, fmt.Errorf("docker: image %q: %w on this host, and the job's pull policy is never", req.Image, sandbox.ErrImageNotFound)
		}
	case sandbox.PullAlways:
	default:
		return sandbox.PullResult{}, fmt.Errorf("docker: pull %q: unknown pull policy %q", req.Image, req.Policy)
	}

	ch := r.pulls.DoChan(pullKey(req), func() (any, error) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pullTimeout)
		defer cancel()
		return r.pull(pctx, named, req)
	})
	select {
	case <-ctx.Done():
		return sandbox.PullResult{}, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return sandbox.PullResult{}, res.Err
		}
		out := res.Val.(sandbox.PullResult)
		out.Shared = res.Shared
		out.Duration = time.Since(t0)
		return out, nil
	}
}

// pull is one transfer: the engine's pull stream read to its end (an
// error can come in it after a 200), then the image inspected for its
// digest.
func (r *Runtime) pull(ctx context.Context, named reference.Named, req sandbox.PullRequest) (sandbox.PullResult, error) {
	var opts image.PullOptions
	if req.Auth != nil {
		enc, err := registry.EncodeAuthConfig(registry.AuthConfig{
			Username: req.Auth.Username, Password: req.Auth.Password, ServerAddress: reference.Domain(named),
		})
		if err != nil {
			return sandbox.PullResult{}, fmt.Errorf("docker: pull %q: encode credentials: %w", req.Image, err)
		}
		opts.RegistryAuth = enc
	}
	body, err := r.cli.ImagePull(ctx, req.Image, opts)
	if err != nil {
		return sandbox.PullResult{}, r.pullError(req, err.Error(), err)
	}
	defer body.Close()
	n, msg, err := readPullStream(body)
	if err != nil {
		return sandbox.PullResult{}, r.pullError(req, err.Error(), err)
	}
	if msg != "" {
		return sandbox.PullResult{}, r.pullError(req, msg, nil)
	}
	inspect, err := r.cli.ImageInspect(ctx, req.Image)
	if err != nil {
		return sandbox.PullResult{}, r.wrap("pull: inspect pulled image "+req.Image, err)
	}
	return sandbox.PullResult{Pulled: true, Bytes: n, Size: inspect.Size, Digest: repoDigest(named, inspect.RepoDigests)}, nil
}

// pullMessage is one line of the engine's pull stream (the fields Kiln
// reads of Docker's jsonmessage; Podman's compatible API sends the same
// shape, error in "error" alone).
type pullMessage struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Progress *struct {
		Total int64 `json:"total"`
	} `json:"progressDetail"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Error string `json:"error"`
}

// readPullStream reads the engine's progress messages to the end: the
// bytes downloaded (each layer's largest total: Docker reports them;
// Podman's compatible API says which layers it fetched but not their
// sizes, -1) and the error message the stream ended with ("" for none).
func readPullStream(r io.Reader) (int64, string, error) {
	dec := json.NewDecoder(r)
	totals := map[string]int64{}
	fetched := false
	for {
		var m pullMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return 0, "", fmt.Errorf("read the pull's progress: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return 0, m.ErrorDetail.Message, nil
		}
		if m.Error != "" {
			return 0, m.Error, nil
		}
		if m.Status == "Pulling fs layer" {
			fetched = true
		}
		if m.Progress != nil && m.ID != "" && m.Status == "Downloading" && m.Progress.Total > totals[m.ID] {
			totals[m.ID] = m.Progress.Total
		}
	}
	if fetched && len(totals) == 0 {
		return -1, "", nil
	}
	var n int64
	for _, t := range totals {
		n += t
	}
	return n, "", nil
}

// pullError classifies a failed pull by what the engine said (Docker and
// Podman pass the registry's own words on, in different sentences).
// Anything not recognized is ErrRegistryUnavailable: retried, never the
// job's failure by a guess.
func (r *Runtime) pullError(req sandbox.PullRequest, msg string, err error) error {
	if err != nil && isUnavailable(err) {
		return r.wrap("pull "+req.Image, err)
	}
	if req.Auth != nil && req.Auth.Password != "" {
		// The engines do not echo the password; make sure of it.
		msg = strings.ReplaceAll(msg, req.Auth.Password, "***")
	}
	m := strings.ToLower(msg)
	var kind error
	hint := ""
	switch {
	case strings.Contains(m, "x509:") || strings.Contains(m, "certificate") || strings.Contains(m, "tls:"):
		kind = sandbox.ErrRegistryUnavailable
		hint = " (the engine does not trust the registry's certificate: add its CA on this host, see docs/images.md)"
	case strings.Contains(m, "unauthorized") || strings.Contains(m, "authentication required") ||
		strings.Contains(m, "no basic auth credentials") || strings.Contains(m, "denied") || strings.Contains(m, " 401"):
		kind = sandbox.ErrRegistryAuth
		if req.Auth == nil {
			hint = " (no credentials were given for this registry)"
		} else {
			hint = fmt.Sprintf(" (as user %q)", req.Auth.Username)
		}
	case strings.Contains(m, "manifest unknown") || strings.Contains(m, "name unknown") ||
		strings.Contains(m, "not found") || strings.Contains(m, "does not exist"):
		kind = sandbox.ErrImageUnknown
	default: // 5xx, refused, timeouts, DNS, and what we do not know
		kind = sandbox.ErrRegistryUnavailable
	}
	return fmt.Errorf("docker: pull %q: %w%s: %s", req.Image, kind, hint, msg)
}

// isUnavailable reports an error talking to the engine itself, or the
// pull's own deadline or cancellation: not the registry's answer.
func isUnavailable(err error) bool {
	return client.IsErrConnectionFailed(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// repoDigest is the digest of named's repository among an image's
// RepoDigests ("host/repo@sha256:…"), "" when it has none.
func repoDigest(named reference.Named, repoDigests []string) string {
	for _, rd := range repoDigests {
		repo, digest, ok := strings.Cut(rd, "@")
		if !ok {
			continue
		}
		if n, err := reference.ParseNormalizedNamed(repo); err == nil && n.Name() == named.Name() {
			return digest
		}
	}
	return ""
}
