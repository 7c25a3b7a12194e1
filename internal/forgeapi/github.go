package forgeapi

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v92/github"
)

// github is a repository on GitHub (or GitHub Enterprise Server).
type github struct {
	gh          *gh.Client
	owner, name string
}

func newGitHub(cfg Config) (*github, error) {
	base := cfg.APIURL + "/"
	tr := cfg.HTTPClient.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	tr = githubHeaders{next: tr}
	hc := *cfg.HTTPClient
	hc.Transport = tr
	opts := []gh.ClientOptionsFunc{gh.WithURLs(&base, &base), gh.WithUserAgent("kiln")}
	if cfg.InstallationID != 0 {
		itr, err := ghinstallation.New(tr, cfg.AppID, cfg.InstallationID, cfg.AppKey)
		if err != nil {
			return nil, errors.New("forgeapi: the GitHub App's private key: not an RSA key in PEM")
		}
		// ghinstallation appends /app/installations/{id}/access_tokens.
		itr.BaseURL = cfg.APIURL
		itr.Client = &http.Client{Transport: tr, Timeout: hc.Timeout, CheckRedirect: hc.CheckRedirect}
		hc.Transport = itr
		opts = append(opts, gh.WithHTTPClient(&hc))
	} else {
		opts = append(opts, gh.WithHTTPClient(&hc), gh.WithAuthToken(cfg.Token))
	}
	c, err := gh.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	owner, name, _ := strings.Cut(cfg.Repo, "/")
	return &github{gh: c, owner: owner, name: name}, nil
}

// githubHeaders sends what GitHub's REST documentation asks for (go-github
// and ghinstallation still send the older v3 media type).
type githubHeaders struct{ next http.RoundTripper }

func (g githubHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Accept", "application/vnd.github+json")
	r.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	return g.next.RoundTrip(r)
}

func (c *github) full() string { return c.owner + "/" + c.name }

func (c *github) Repository(ctx context.Context) (Repository, error) {
	r, _, err := c.gh.Repositories.Get(ctx, c.owner, c.name)
	if err != nil {
		return Repository{}, githubError(err, "look up repository "+c.full(), false)
	}
	return Repository{CloneURL: r.GetCloneURL(), DefaultBranch: r.GetDefaultBranch()}, nil
}

// githubEvents are GitHub's events for Kiln's: a tag's push is a push.
func githubEvents(events []Event) []string {
	var out []string
	for _, e := range events {
		name := "push"
		if e == PullRequest {
			name = "pull_request"
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func (c *github) EnsureWebhook(ctx context.Context, url, secret string, events []Event) (Webhook, error) {
	var found *gh.Hook
	opts := &gh.ListOptions{PerPage: 100}
	for page := 0; page < 10 && found == nil; page++ {
		hooks, resp, err := c.gh.Repositories.ListHooks(ctx, c.owner, c.name, opts)
		if err != nil {
			return Webhook{}, githubError(err, "list the webhooks of "+c.full(), true)
		}
		for _, h := range hooks {
			if h.GetConfig().GetURL() == url {
				found = h
				break
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	hook := &gh.Hook{
		Config: &gh.HookConfig{URL: gh.Ptr(url), ContentType: gh.Ptr("json"), Secret: gh.Ptr(secret), InsecureSSL: gh.Ptr("0")},
		Events: githubEvents(events),
		Active: gh.Ptr(true),
	}
	if found != nil {
		h, _, err := c.gh.Repositories.EditHook(ctx, c.owner, c.name, found.GetID(), hook)
		if err != nil {
			return Webhook{}, githubError(err, "update Kiln's webhook on "+c.full(), true)
		}
		return Webhook{ID: h.GetID(), Action: "updated"}, nil
	}
	hook.Name = gh.Ptr("web")
	h, _, err := c.gh.Repositories.CreateHook(ctx, c.owner, c.name, hook)
	if err != nil {
		return Webhook{}, githubError(err, "create a webhook on "+c.full(), true)
	}
	return Webhook{ID: h.GetID(), Action: "created"}, nil
}

// githubError turns go-github's (and ghinstallation's) errors into an *Error.
func githubError(err error, op string, hooks bool) error {
	e := &Error{Forge: GitHub, Op: op, Err: err}
	var rl *gh.RateLimitError
	var abuse *gh.AbuseRateLimitError
	var er *gh.ErrorResponse
	var tokErr *ghinstallation.HTTPError
	switch {
	case errors.As(err, &rl):
		e.Status, e.Message, e.Kind = rl.Response.StatusCode, clip(rl.Message), ErrUnavailable
	case errors.As(err, &abuse):
		e.Status, e.Message, e.Kind = abuse.Response.StatusCode, clip(abuse.Message), ErrUnavailable
	case errors.As(err, &er):
		msg := er.Message
		for _, d := range er.Errors {
			if d.Message != "" {
				msg += ": " + d.Message
			} else if d.Code != "" {
				msg += ": " + d.Field + " " + d.Code
			}
		}
		if er.Response != nil {
			e.Status = er.Response.StatusCode
		}
		e.Message, e.Kind = clip(msg), kindOf(e.Status)
	case errors.As(err, &tokErr):
		// The App could not get an installation token (a wrong key or
		// app id, an installation gone): the credentials were refused.
		e.Kind, e.Message = ErrUnauthorized, "the GitHub App could not get an installation token"
		if tokErr.Response != nil {
			e.Status = tokErr.Response.StatusCode
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e.Kind = ErrUnavailable
	default:
		e.Kind, e.Err = ErrUnavailable, redactURLError(err)
	}
	e.Hint = hint(GitHub, e.Kind, hooks)
	if e.Message != "" {
		e.Err = nil // the message says it; go-github's error repeats the URL
	}
	return e
}
