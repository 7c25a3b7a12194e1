package forge

// gitlabPushPayload is the part of a GitLab "Push Hook" or "Tag Push Hook"
// payload Kiln reads.
type gitlabPushPayload struct {
	Ref    string `json:"ref"`
	Before string `json:"before"`
	After  string `json:"after"`
	// CheckoutSHA is the commit the ref now points at: after itself for
	// a branch, the tagged commit for an annotated tag (whose after is
	// the tag object), null when the ref was deleted.
	CheckoutSHA  *string `json:"checkout_sha"`
	UserUsername string  `json:"user_username"`
	Project      struct {
		PathWithNamespace string `json:"path_with_namespace"`
		GitHTTPURL        string `json:"git_http_url"`
		WebURL            string `json:"web_url"`
	} `json:"project"`
	// Commits holds the newest commits of the push, at most 20, oldest
	// first; the head commit is found by its id.
	Commits []payloadCommit `json:"commits"`
}

// push reads a GitLab push or tag push payload.
func (pl *gitlabPushPayload) push() (*Push, string) {
	p := &Push{
		Ref:      pl.Ref,
		Before:   pl.Before,
		Author:   pl.UserUsername,
		Repo:     pl.Project.PathWithNamespace,
		CloneURL: pl.Project.GitHTTPURL,
		RepoURL:  pl.Project.WebURL,
	}
	if pl.CheckoutSHA != nil {
		p.Commit = *pl.CheckoutSHA
	}
	head := firstNonEmpty(p.Commit, pl.After)
	for _, c := range pl.Commits {
		if c.ID == head {
			p.Message, p.HTMLURL = c.Message, c.URL
		}
	}
	return p, pl.After
}
