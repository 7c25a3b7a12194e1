package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/sandbox"
)

// pullImage makes the job's image present on the host by its pull policy,
// before the sandbox is created, and says so in the job's log: the pull's
// bytes and time, and the image's digest (kept for the finish report).
// ok is false when the job ends here, with its status and message: the
// job's failure for credentials the registry refused or an image it does
// not have (a retry would fail the same way), an error (retried) for a
// registry that cannot be reached and for `never` on a host without the
// image (another host may have it).
//
// A runtime that cannot pull (not a sandbox.Puller) leaves it to Create,
// as before pulls.
func (a *Agent) pullImage(ctx context.Context, j *job, asg *protocol.Assignment) (status, msg string, ok bool) {
	p, can := a.rt.(sandbox.Puller)
	if !can {
		return "", "", true
	}
	img := asg.Spec.Image
	req := sandbox.PullRequest{Image: img, Policy: asg.Spec.Pull}
	auth, host := registryAuth(asg, img)
	req.Auth = auth
	res, err := p.Pull(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return "error", ctx.Err().Error(), false
		}
		switch {
		case errors.Is(err, sandbox.ErrRegistryAuth):
			switch {
			case auth == nil && asg.Untrusted:
				j.sys("pull %s: the registry %s wants credentials, and a fork's request gets none of the project's: %v; not retried", img, host, err)
			case auth == nil:
				j.sys("pull %s: the registry %s wants credentials and the project has none for it (kiln project registry add %s %s -user NAME): %v; not retried", img, host, asg.Project, host, err)
			default:
				j.sys("pull %s: the registry %s refused the project's credentials for it: %v; not retried", img, host, err)
			}
			return "failure", "pull " + img + ": " + err.Error(), false
		case errors.Is(err, sandbox.ErrImageUnknown):
			j.sys("pull %s: no such image or tag in its registry: %v; not retried", img, err)
			return "failure", "pull " + img + ": " + err.Error(), false
		case errors.Is(err, sandbox.ErrImageNotFound):
			j.sys("image %s is not on this host and the job's pull policy is never: %v", img, err)
			return "error", err.Error(), false
		default:
			j.sys("pull %s: %v (an infrastructure error: the job is retried)", img, err)
			return "error", "pull " + img + ": " + err.Error(), false
		}
	}
	j.digest = res.Digest
	digest := res.Digest
	if digest == "" {
		digest = "none (built or imported on this host)"
	}
	switch {
	case res.Pulled:
		how := ""
		if res.Shared {
			how = ", one pull shared with other jobs on this host"
		}
		as := ""
		if auth != nil {
			as = fmt.Sprintf(" as %q", auth.Username)
		}
		var got string
		switch {
		case res.Bytes < 0:
			got = "layers downloaded (the engine does not say how much)"
		case res.Bytes == 0:
			got = "every layer already on this host"
		default:
			got = humanBytes(res.Bytes) + " downloaded"
		}
		j.sys("pulled %s%s in %s: %s, image %s%s; digest %s", img, as, res.Duration.Round(time.Millisecond), got, humanBytes(res.Size), how, digest)
	case res.Digest != "":
		j.sys("image %s already on this host (pull: %s); digest %s", img, policyName(asg.Spec.Pull), digest)
	default:
		// Built or imported on this host: the sandbox's line names it,
		// and there is no digest to tell.
	}
	return "", "", true
}

func policyName(p string) string {
	if p == "" {
		return sandbox.PullIfNotPresent
	}
	return p
}

// registryAuth is the credentials of the assignment for img's registry,
// and that registry's host. The server sends only the matching ones; the
// agent checks again, so no credentials go to another registry.
func registryAuth(asg *protocol.Assignment, img string) (*sandbox.RegistryAuth, string) {
	host := pipeline.ImageHost(img)
	for _, r := range asg.Registries {
		if r.Host == host && host != "" {
			return &sandbox.RegistryAuth{Username: r.Username, Password: r.Password}, host
		}
	}
	return nil, host
}
