package forge

// githubPushPayload is the part of a GitHub push payload Kiln reads. Gitea
// and Forgejo send the same shape with a few names of their own, decoded
// alongside (compare_url, pusher.login).
type githubPushPayload struct {
	Ref        string         `json:"ref"`
	Before     string         `json:"before"`
	After      string         `json:"after"`
	Deleted    bool           `json:"deleted"` // GitHub only; Gitea sends a "delete" event instead
	Compare    string         `json:"compare"`
	CompareURL string         `json:"compare_url"` // Gitea
	HeadCommit *payloadCommit `json:"head_commit"` // null when the ref was deleted
	Repository struct {
		FullName string `json:"full_name"`
		CloneURL string `json:"clone_url"`
		HTMLURL  string `json:"html_url"`
	} `json:"repository"`
	Pusher struct {
		Name  string `json:"name"`
		Login string `json:"login"` // Gitea's pusher is a full user
	} `json:"pusher"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
}

// push reads a GitHub (or Gitea/Forgejo) push payload.
func (pl *githubPushPayload) push() (*Push, string) {
	p := &Push{
		Ref:      pl.Ref,
		Before:   pl.Before,
		Deleted:  pl.Deleted,
		Author:   firstNonEmpty(pl.Pusher.Name, pl.Pusher.Login, pl.Sender.Login),
		Repo:     pl.Repository.FullName,
		CloneURL: pl.Repository.CloneURL,
		HTMLURL:  firstNonEmpty(pl.Compare, pl.CompareURL),
		RepoURL:  pl.Repository.HTMLURL,
	}
	if hc := pl.HeadCommit; hc != nil {
		// For an annotated tag "after" is the tag object; head_commit is
		// the commit it points at, what is built and given a status.
		p.Commit = hc.ID
		p.Message = hc.Message
		p.HTMLURL = firstNonEmpty(p.HTMLURL, hc.URL)
	}
	return p, pl.After
}
