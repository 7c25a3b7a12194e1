package forge

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
)

// MaxBodyDefault is the default request body limit (25 MiB, what GitHub caps
// a delivery at); the caller enforces the limit before calling Parse.
const MaxBodyDefault = 25 << 20

// maxHeaderValue bounds the event name and the delivery id, which Kiln
// stores and de-duplicates by. Real ones are words and UUIDs.
const maxHeaderValue = 256

// Parse verifies a delivery's authenticity with the project's webhook secret
// and parses it.
//
// forgeName is "github", "gitlab" or "gitea" ("forgejo" is an alias of gitea).
// header is the request's header, body the full raw body.
//
// The signature (GitHub, Gitea: HMAC-SHA256 of the body) or token (GitLab) is
// checked first, in constant time, before any byte of the body is parsed; an
// empty secret accepts nothing. Errors wrap ErrSignature (bad or missing
// signature or token), ErrMalformed (with the reason: a missing header, a
// missing field, a JSON error with its byte offset) or ErrUnknownForge.
//
// Every verified event is returned, also those Kiln does not handle
// (KindOther), so the caller can store and acknowledge it. A KindPush event
// always has a Push with a full Ref and either Deleted set or a 40- or
// 64-hex Commit. For an annotated tag, Commit is the commit the tag points at
// (GitHub's head_commit, GitLab's checkout_sha), not the tag object. A
// KindWorkflowJob event (GitHub's workflow_job) always has a WorkflowJob
// with positive ids, an owner and a repository, and a status. A
// KindPullRequest event always has a PullRequest with a positive number,
// a head commit SHA, head and base branches and a base repository.
func Parse(forgeName string, header http.Header, body []byte, secret string) (*Event, error) {
	if err := Verify(forgeName, header, bytes.NewReader(body), secret); err != nil {
		return nil, err
	}
	return ParseVerified(forgeName, header, body)
}

// ParseVerified parses a delivery whose body a Verifier has found
// authentic (see Parse, which verifies and then calls it). Errors wrap
// ErrMalformed or ErrUnknownForge.
func ParseVerified(forgeName string, header http.Header, body []byte) (*Event, error) {
	f, ok := lookupForge(forgeName)
	if !ok {
		return nil, fmt.Errorf("%w %q: want github, gitlab, gitea or forgejo", ErrUnknownForge, forgeName)
	}
	name, err := firstHeader(header, f.eventHeaders)
	if err != nil {
		return nil, err
	}
	delivery, err := firstHeader(header, f.deliveryHeaders)
	if err != nil {
		return nil, err
	}
	ev := &Event{Forge: f.name, Kind: KindOther, Name: name, DeliveryID: delivery}
	if kind, ok := f.kinds[name]; ok {
		ev.Kind = kind
	}

	if ev.Kind == KindWorkflowJob {
		var pl workflowJobPayload
		if err := decode(name, body, &pl); err != nil {
			return nil, err
		}
		wj, err := pl.workflowJob(name)
		if err != nil {
			return nil, err
		}
		ev.WorkflowJob = wj
		return ev, nil
	}
	if ev.Kind == KindPullRequest {
		payload := f.prPayload()
		if err := decode(name, body, payload); err != nil {
			return nil, err
		}
		pr := payload.pullRequest()
		if err := normalizePR(name, pr); err != nil {
			return nil, err
		}
		ev.PullRequest = pr
		return ev, nil
	}
	if ev.Kind != KindPush {
		// Nothing is read from these, but a body that is not a JSON object
		// is still a malformed delivery, not one to store and acknowledge.
		if err := decode(name, body, &struct{}{}); err != nil {
			return nil, err
		}
		return ev, nil
	}
	payload := f.pushPayload()
	if err := decode(name, body, payload); err != nil {
		return nil, err
	}
	p, after := payload.push()
	if err := normalizePush(name, p, after); err != nil {
		return nil, err
	}
	ev.Push = p
	return ev, nil
}

// forge is what tells one forge's deliveries apart from another's.
type forge struct {
	name            string   // Event.Forge
	eventHeaders    []string // the event name: the first one present counts
	deliveryHeaders []string // the delivery id: the first one present counts

	// sigs are the headers that may carry the body's HMAC-SHA256, the
	// first one present counts; nil for GitLab, which sends a token.
	sigs []sigHeader
	// kinds maps the forge's event names Kiln handles to what it does with
	// them; any other event is KindOther.
	kinds map[string]Kind
	// pushPayload returns a new value to decode a push payload into.
	pushPayload func() pushPayload
	// prPayload returns a new value to decode a request payload into.
	prPayload func() prPayload
}

// pushPayload is the part of a forge's push payload Kiln reads, decoded
// from JSON.
type pushPayload interface {
	// push returns the payload as a Push for normalizePush, and the
	// payload's "after" apart (all zeros when the ref was deleted). Commit
	// is set only when the payload names the head commit apart from after
	// (an annotated tag); normalizePush defaults it to after.
	push() (p *Push, after string)
}

// lookupForge returns the forge named name. It builds the value on each call
// so that no package-level state can be changed by a caller.
func lookupForge(name string) (forge, bool) {
	switch name {
	case "github":
		return githubShaped("github",
			[]string{"X-GitHub-Event"},
			[]string{"X-GitHub-Delivery"},
			sigHeader{"X-Hub-Signature-256", "sha256="},
		), true
	case "gitea", "forgejo":
		// Forgejo sends its own X-Forgejo-* headers and Gitea's as well;
		// Gitea also sends X-Hub-Signature-256, for GitHub-shaped receivers.
		return githubShaped("gitea",
			[]string{"X-Forgejo-Event", "X-Gitea-Event"},
			[]string{"X-Forgejo-Delivery", "X-Gitea-Delivery"},
			sigHeader{"X-Forgejo-Signature", ""},
			sigHeader{"X-Gitea-Signature", ""},
			sigHeader{"X-Hub-Signature-256", "sha256="},
		), true
	case "gitlab":
		// GitLab has no ping: its "Test" button sends a sample "Push Hook".
		// A "System Hook" (instance-wide, set by an administrator) is not
		// a project's webhook and is ignored, whatever it carries.
		//
		// The delivery id: Idempotency-Key (GitLab 17.4+) is documented as
		// unique per event and the same on every retry of it, which is what
		// de-duplication wants. Older GitLab sends X-Gitlab-Webhook-UUID
		// (16.2+), fresh for every request, so a retry builds twice. Last
		// comes X-Gitlab-Event-UUID (14.8+), which is not unique: it is a
		// recursion-detection id that every hook fired by one request shares
		// (a bot answering a webhook by pushing two branches through the API
		// yields two pushes with one id), so de-duplicating by it first
		// would silently drop builds.
		return forge{
			name:            "gitlab",
			eventHeaders:    []string{"X-Gitlab-Event"},
			deliveryHeaders: []string{"Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID"},
			kinds:           map[string]Kind{"Push Hook": KindPush, "Tag Push Hook": KindPush, "Merge Request Hook": KindPullRequest},
			pushPayload:     func() pushPayload { return new(gitlabPushPayload) },
			prPayload:       func() prPayload { return new(gitlabMRPayload) },
		}, true
	}
	return forge{}, false
}

// githubShaped is a forge that signs its deliveries with an HMAC in one of
// sigs and sends GitHub's event names and payloads: GitHub, Gitea, Forgejo.
func githubShaped(name string, eventHeaders, deliveryHeaders []string, sigs ...sigHeader) forge {
	return forge{
		name:            name,
		eventHeaders:    eventHeaders,
		deliveryHeaders: deliveryHeaders,
		sigs:            sigs,
		// Gitea sends every kind of request event (sync, label, assign,
		// review request) as "pull_request", told apart by the action.
		kinds:       map[string]Kind{"ping": KindPing, "push": KindPush, "workflow_job": KindWorkflowJob, "pull_request": KindPullRequest},
		pushPayload: func() pushPayload { return new(githubPushPayload) },
		prPayload:   func() prPayload { return new(githubPRPayload) },
	}
}

// firstHeader returns the value of the first of names that is present, or
// ErrMalformed naming them all.
func firstHeader(h http.Header, names []string) (string, error) {
	for _, n := range names {
		if v := strings.TrimSpace(h.Get(n)); v != "" {
			if len(v) > maxHeaderValue {
				return "", fmt.Errorf("%w: %s is longer than %d bytes", ErrMalformed, n, maxHeaderValue)
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("%w: missing %s header", ErrMalformed, strings.Join(names, " or "))
}

// DeliveryID returns a delivery's id as its header names it, unverified and
// cut to a sane length, for logging a delivery that is refused ("" when
// there is none or the forge is unknown).
func DeliveryID(forgeName string, header http.Header) string {
	f, ok := lookupForge(forgeName)
	if !ok {
		return ""
	}
	for _, n := range f.deliveryHeaders {
		if v := strings.TrimSpace(header.Get(n)); v != "" {
			if len(v) > maxHeaderValue {
				v = v[:maxHeaderValue]
			}
			return v
		}
	}
	return ""
}
