package forgeapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
)

// gitea is a repository on Gitea or Forgejo (API v1), authenticated by
// "Authorization: token".
type gitea struct{ rest }

func (c *gitea) path() string { return "/repos/" + pathRepo(c.repo) }

func (c *gitea) Repository(ctx context.Context) (Repository, error) {
	var r struct {
		CloneURL      string `json:"clone_url"`
		DefaultBranch string `json:"default_branch"`
	}
	if _, err := c.do(ctx, http.MethodGet, c.path(), nil, &r, "look up repository "+c.repo, false); err != nil {
		return Repository{}, err
	}
	return Repository{CloneURL: r.CloneURL, DefaultBranch: r.DefaultBranch}, nil
}

// giteaEvents are Gitea's events for Kiln's: a tag's push is a push;
// "pull_request" subscribes every event of a request (opened,
// synchronized, closed, ...).
func giteaEvents(events []Event) []string {
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

type giteaHook struct {
	ID     int64             `json:"id"`
	Config map[string]string `json:"config"`
}

// EnsureWebhook creates the hook, and replaces one Kiln had with that URL:
// Gitea's edit of a hook changes its URL and content type, never its
// secret, so an edit could leave the old secret in place. The new hook is
// made before the old one goes, so deliveries never stop.
func (c *gitea) EnsureWebhook(ctx context.Context, hookURL, secret string, events []Event) (Webhook, error) {
	var old []int64
	const limit = 50
	for page := 1; page <= 10; page++ {
		var hooks []giteaHook
		path := c.path() + "/hooks?limit=" + strconv.Itoa(limit) + "&page=" + strconv.Itoa(page)
		if _, err := c.do(ctx, http.MethodGet, path, nil, &hooks, "list the webhooks of "+c.repo, true); err != nil {
			return Webhook{}, err
		}
		for _, h := range hooks {
			if h.Config["url"] == hookURL {
				old = append(old, h.ID)
			}
		}
		if len(hooks) < limit {
			break
		}
	}
	body := map[string]any{
		"type":   "gitea",
		"config": map[string]string{"url": hookURL, "content_type": "json", "secret": secret},
		"events": giteaEvents(events),
		"active": true,
	}
	var out giteaHook
	if _, err := c.do(ctx, http.MethodPost, c.path()+"/hooks", body, &out, "create a webhook on "+c.repo, true); err != nil {
		return Webhook{}, err
	}
	for _, id := range old {
		if _, err := c.do(ctx, http.MethodDelete, c.path()+"/hooks/"+strconv.FormatInt(id, 10), nil, nil, "remove Kiln's previous webhook from "+c.repo, true); err != nil {
			return Webhook{}, err
		}
	}
	if len(old) > 0 {
		return Webhook{ID: out.ID, Action: "replaced"}, nil
	}
	return Webhook{ID: out.ID, Action: "created"}, nil
}
