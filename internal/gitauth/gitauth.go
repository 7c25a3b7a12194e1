// Package gitauth turns a project's forge connection into the HTTP
// credentials git fetches the project's repository with, so that a
// private repository builds with the token (or the GitHub App
// installation) the project is connected with, and nobody pastes a token
// into a clone URL.
//
// A forge's token goes to that forge only: credentials are given for an
// http(s) clone URL on the forge's own host (the API URL's; github.com
// for api.github.com), never over plain http when the API is https, and
// never to a clone URL with credentials of its own (those are kept).
// gitmirror then hands them to git in its environment, never on its
// command line, in a mirror's config or in an error.
package gitauth

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/store"
)

// User names each forge takes with a token as the password over HTTPS.
const (
	// GitHubUser: GitHub's documented user for installation tokens; any
	// user name goes with a personal access token.
	GitHubUser = "x-access-token"
	// OAuthUser: GitLab's for OAuth and personal access tokens alike;
	// Gitea reads the password as a token whatever the user name
	// (services/auth/basic.go), so it takes the same.
	OAuthUser = "oauth2"
)

// Source yields credentials for projects' forge connections. Safe for
// concurrent use.
type Source struct {
	apps *github.Installations // the server's GitHub App; nil: none
}

// New makes a Source; apps mints installation tokens (nil: the server has
// no GitHub App, and an installation connection gets an error).
func New(apps *github.Installations) *Source { return &Source{apps: apps} }

// For returns the credentials to fetch cloneURL with under conn, nil when
// none apply: no connection, a clone URL with its own credentials, not
// http(s), or on another host than the forge's. A GitHub App
// installation's token is asked for at each call (the App's client keeps
// it until it nears expiry); failing that is an error.
func (s *Source) For(ctx context.Context, cloneURL string, conn *store.ForgeConnection) (*gitmirror.Credentials, error) {
	if ok, _ := applies(cloneURL, conn); !ok {
		return nil, nil
	}
	switch {
	case conn.App():
		if s == nil || !s.apps.Configured() {
			return nil, fmt.Errorf("the project's forge connection is a GitHub App installation (%d), and this server has no GitHub App (-github-app-id, -github-app-key)", conn.InstallationID)
		}
		tok, _, err := s.apps.Token(ctx, conn.APIURL, conn.InstallationID)
		if err != nil {
			return nil, fmt.Errorf("a token of GitHub App installation %d: %w", conn.InstallationID, err)
		}
		return &gitmirror.Credentials{Username: GitHubUser, Password: tok}, nil
	case conn.Token == "":
		return nil, nil
	case conn.Forge == store.ForgeGitHub:
		return &gitmirror.Credentials{Username: GitHubUser, Password: conn.Token}, nil
	default: // gitlab, gitea
		return &gitmirror.Credentials{Username: OAuthUser, Password: conn.Token}, nil
	}
}

// Describe says, for a message about a fetch the repository refused, what
// credentials it carried under conn, or why none.
func Describe(cloneURL string, conn *store.ForgeConnection) string {
	ok, why := applies(cloneURL, conn)
	switch {
	case !ok:
		return why
	case conn.App():
		return fmt.Sprintf("fetched with a token of the project's GitHub App installation %d: is the App installed on the repository, with contents read access?", conn.InstallationID)
	default:
		return fmt.Sprintf("fetched with the token of the project's %s connection (forge_token): it may have expired, or not be allowed to read the repository", conn.Forge)
	}
}

// applies reports whether conn's credentials go with a fetch of cloneURL,
// and if not, why, in words for the user.
func applies(cloneURL string, conn *store.ForgeConnection) (bool, string) {
	if conn == nil {
		return false, "the project has no forge connection to fetch with: connect it (forge, forge_repo and forge_token or forge_installation_id) or use a public repository"
	}
	u, err := url.Parse(cloneURL)
	if err != nil || !strings.Contains(cloneURL, "://") || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return false, fmt.Sprintf("the %s connection's token is sent over https (or http) only, and the clone URL is not an http(s) URL", conn.Forge)
	}
	if u.User != nil {
		return false, "fetched with the clone URL's own credentials (they win over the forge connection's)"
	}
	fu, err := forgeGitURL(conn.APIURL)
	if err != nil {
		return false, err.Error()
	}
	other := fmt.Sprintf("the %s connection's token goes to its forge only (%s), and the clone URL is on %s", conn.Forge, hostPort(fu), hostPort(u))
	switch {
	case !strings.EqualFold(u.Hostname(), fu.Hostname()):
		return false, other
	case fu.Scheme == "https" && u.Scheme != "https":
		return false, fmt.Sprintf("the %s connection's token is never sent over plain http: use the https clone URL", conn.Forge)
	case hostPort(u) != hostPort(fu):
		return false, other
	}
	return true, ""
}

// forgeGitURL is where a forge serves git: its API's host, but github.com
// for GitHub's public API (api.github.com).
func forgeGitURL(apiURL string) (*url.URL, error) {
	if apiURL == "" {
		apiURL = strings.TrimSuffix(github.DefaultBaseURL, "/")
	}
	u, err := url.Parse(apiURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("the forge connection's API URL %q is not an http(s) URL", apiURL)
	}
	if strings.EqualFold(u.Hostname(), "api.github.com") {
		u = &url.URL{Scheme: u.Scheme, Host: "github.com"}
	}
	return u, nil
}

// hostPort is u's lower-case host with its port, the scheme's default
// made explicit, so that https://host and https://host:443 are one host.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	return strings.ToLower(u.Hostname()) + ":" + port
}
