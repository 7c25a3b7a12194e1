package forgeapi

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// gitlab is a project on GitLab (API v4), addressed by its url-escaped
// path and authenticated by PRIVATE-TOKEN.
type gitlab struct{ rest }

func (c *gitlab) project() string { return "/projects/" + url.PathEscape(c.repo) }

func (c *gitlab) Repository(ctx context.Context) (Repository, error) {
	var p struct {
		HTTPURL       string `json:"http_url_to_repo"`
		DefaultBranch string `json:"default_branch"`
	}
	if _, err := c.do(ctx, http.MethodGet, c.project(), nil, &p, "look up project "+c.repo, false); err != nil {
		return Repository{}, err
	}
	return Repository{CloneURL: p.HTTPURL, DefaultBranch: p.DefaultBranch}, nil
}

type gitlabHook struct {
	ID  int64  `json:"id"`
	URL string `json:"url"`
}

func (c *gitlab) EnsureWebhook(ctx context.Context, hookURL, secret string, events []Event) (Webhook, error) {
	var found *gitlabHook
	page := "1"
	for n := 0; n < 10 && page != "" && found == nil; n++ {
		var hooks []gitlabHook
		h, err := c.do(ctx, http.MethodGet, c.project()+"/hooks?per_page=100&page="+url.QueryEscape(page), nil, &hooks, "list the webhooks of "+c.repo, true)
		if err != nil {
			return Webhook{}, err
		}
		for i := range hooks {
			if hooks[i].URL == hookURL {
				found = &hooks[i]
				break
			}
		}
		page = h.Get("X-Next-Page")
	}
	body := map[string]any{
		"url": hookURL, "token": secret, "enable_ssl_verification": true,
		"push_events":           slices.Contains(events, Push),
		"tag_push_events":       slices.Contains(events, Tag),
		"merge_requests_events": slices.Contains(events, PullRequest),
	}
	var out gitlabHook
	if found != nil {
		if _, err := c.do(ctx, http.MethodPut, c.project()+"/hooks/"+strconv.FormatInt(found.ID, 10), body, &out, "update Kiln's webhook on "+c.repo, true); err != nil {
			return Webhook{}, err
		}
		return Webhook{ID: out.ID, Action: "updated"}, nil
	}
	if _, err := c.do(ctx, http.MethodPost, c.project()+"/hooks", body, &out, "create a webhook on "+c.repo, true); err != nil {
		return Webhook{}, err
	}
	return Webhook{ID: out.ID, Action: "created"}, nil
}
