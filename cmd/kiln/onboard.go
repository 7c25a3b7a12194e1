package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/kilnci/kiln/internal/api"
)

// forgeTokenEnv is where `kiln project add -github …` finds the forge's
// API token when it is not piped (-forge-token-stdin): a token is never
// an argument, which any user of the machine can read.
const forgeTokenEnv = "KILN_FORGE_TOKEN"

// onboardFlags are -github, -gitlab and -gitea: one command from a
// repository on its forge to a project whose pushes and requests build.
type onboardFlags struct {
	github, githubURL, gitlab, gitlabURL, gitea, giteaURL string
	webhook                                               bool
}

func addOnboardFlags(fs *flag.FlagSet) *onboardFlags {
	f := &onboardFlags{}
	fs.StringVar(&f.github, "github", "", "onboard a GitHub repository, OWNER/NAME: the server looks it up (clone URL, default branch) and creates its webhook; token from $"+forgeTokenEnv+", -forge-token-stdin, or -forge-installation")
	fs.StringVar(&f.githubURL, "github-url", "", "with -github: GitHub Enterprise Server's API, https://HOST/api/v3 (default: GitHub's)")
	fs.StringVar(&f.gitlab, "gitlab", "", "onboard a GitLab project, GROUP/NAME (with -gitlab-url), as -github does")
	fs.StringVar(&f.gitlabURL, "gitlab-url", "", "with -gitlab: the GitLab's base URL, https://gitlab.example.com")
	fs.StringVar(&f.gitea, "gitea", "", "onboard a Gitea or Forgejo repository, OWNER/NAME (with -gitea-url), as -github does")
	fs.StringVar(&f.giteaURL, "gitea-url", "", "with -gitea: the Gitea's base URL, https://gitea.example.com")
	fs.BoolVar(&f.webhook, "forge-webhook", false, "create or update Kiln's webhook on the forge of the project's connection (implied by -github, -gitlab, -gitea)")
	return f
}

// apply sets req's forge connection from the flags. tokenGiven says the
// credential came another way (stdin, an installation); getenv reads the
// environment.
func (f *onboardFlags) apply(req *api.ProjectRequest, sub string, tokenGiven bool, getenv func(string) string) error {
	type choice struct{ forge, repo, url, urlFlag string }
	var chosen []choice
	for _, c := range []choice{{"github", f.github, f.githubURL, "github-url"}, {"gitlab", f.gitlab, f.gitlabURL, "gitlab-url"}, {"gitea", f.gitea, f.giteaURL, "gitea-url"}} {
		switch {
		case c.repo != "":
			chosen = append(chosen, c)
		case c.url != "":
			return fmt.Errorf("-%s goes with -%s", c.urlFlag, c.forge)
		}
	}
	if f.webhook {
		req.ForgeWebhook = true
	}
	switch {
	case len(chosen) == 0:
		return nil
	case len(chosen) > 1:
		return errors.New("-github, -gitlab, -gitea: give one")
	case req.Forge != nil || req.ForgeRepo != nil || req.ForgeURL != nil:
		return fmt.Errorf("-%s sets the forge connection: drop -forge, -forge-repo and -forge-url", chosen[0].forge)
	}
	c := chosen[0]
	if c.forge != "github" && c.url == "" {
		return fmt.Errorf("-%s: required with -%s: the %s's base URL, e.g. https://%s.example.com", c.urlFlag, c.forge, c.forge, c.forge)
	}
	req.Forge, req.ForgeRepo, req.ForgeWebhook = &c.forge, &c.repo, true
	if c.url != "" {
		req.ForgeURL = &c.url
	}
	if !tokenGiven {
		if tok := getenv(forgeTokenEnv); tok != "" {
			req.ForgeToken = &tok
		} else if sub == "add" {
			hint := ""
			if c.forge == "github" {
				hint = ", or use the server's GitHub App: -forge-installation ID"
			}
			return fmt.Errorf("-%s: a token for the %s API that may manage the repository's webhooks and set commit statuses: set %s, or pipe it with -forge-token-stdin%s", c.forge, c.forge, forgeTokenEnv, hint)
		}
	}
	return nil
}

// printWebhook says what the server did on the forge.
func printWebhook(v api.ProjectView) {
	if v.Webhook == nil || v.Forge == nil {
		return
	}
	fmt.Printf("webhook %s on %s %s: %s (pushes, tags, pull/merge requests; the secret is shared by Kiln and the forge only)\n",
		v.Webhook.Action, v.Forge.Forge, qs(v.Forge.Repo), qs(v.Webhook.URL))
}
