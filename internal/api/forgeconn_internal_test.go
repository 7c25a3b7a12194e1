package api

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/forgestatus"
	"github.com/kilnci/kiln/internal/store"
)

// FuzzForgeConnection: whatever a project's forge fields hold, an accepted
// connection's statuses go to its own API host, under its own repository's
// path, and nowhere else.
func FuzzForgeConnection(f *testing.F) {
	for _, seed := range [][3]string{
		{"github", "acme/web", ""},
		{"gitlab", "group/sub/web", "https://gitlab.example.com"},
		{"gitea", "acme/web", "https://gitea.example.com/"},
		{"github", "acme/../../admin", "https://ghe.example.com/api/v3"},
		{"gitlab", "a/b%2F..", "http://h"},
		{"gitea", "a/b?x=1", "https://h/#frag"},
		{"github", "a/b", "https://user:pw@h"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	s := forgestatus.New(forgestatus.Config{PublicURL: "http://k"}, nil, nil, nil)
	const sha = "0123456789abcdef0123456789abcdef01234567"
	f.Fuzz(func(t *testing.T, forge, repo, apiURL string) {
		tok := "t"
		req := ProjectRequest{Forge: &forge, ForgeRepo: &repo, ForgeToken: &tok}
		if apiURL != "" {
			req.ForgeURL = &apiURL
		}
		c, err := forgeConnection(nil, req, false)
		if err != nil || c == nil {
			return
		}
		r, err := s.Request(context.Background(), c, &store.ForgeStatus{BuildID: 1, Commit: sha, Context: "kiln", State: store.StatusRunning})
		if err != nil {
			t.Fatalf("accepted %+v but no request: %v", c, err)
		}
		base, err := url.Parse(c.APIURL)
		if err != nil {
			t.Fatal(err)
		}
		// "h:" and "h" are the same host (an empty port is the scheme's).
		if r.URL.Hostname() != base.Hostname() || r.URL.Port() != base.Port() || r.URL.Scheme != base.Scheme || r.URL.User != nil || r.URL.RawQuery != "" || r.URL.Fragment != "" {
			t.Fatalf("repo %q, url %q: request goes to %s", repo, apiURL, r.URL)
		}
		var want string
		switch c.Forge {
		case store.ForgeGitLab:
			want = base.Path + "/api/v4/projects/" + url.PathEscape(c.Repo) + "/statuses/" + sha
		case store.ForgeGitHub:
			want = base.Path + "/repos/" + c.Repo + "/statuses/" + sha
		default:
			want = base.Path + "/api/v1/repos/" + c.Repo + "/statuses/" + sha
		}
		if got := r.URL.EscapedPath(); got != strings.TrimRight(base.Path, "/")+strings.TrimPrefix(want, base.Path) {
			t.Fatalf("repo %q: path %q, want %q", repo, got, want)
		}
		for _, seg := range strings.Split(c.Repo, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("repo %q accepted with a dot segment", repo)
			}
		}
	})
}

// A GitHub connection has a token or an installation of the server's App,
// never both; an installation needs an App and a github connection; a
// PATCH with one replaces the other.
func TestForgeConnectionInstallation(t *testing.T) {
	s := func(v string) *string { return &v }
	n := func(v int64) *int64 { return &v }
	gh := ProjectRequest{Forge: s("github"), ForgeRepo: s("acme/web")}
	for _, tc := range []struct {
		name    string
		req     ProjectRequest
		app     bool
		wantErr string
	}{
		{"installation without an App", ProjectRequest{Forge: gh.Forge, ForgeRepo: gh.ForgeRepo, ForgeInstallationID: n(7)}, false, "no GitHub App"},
		{"installation and token", ProjectRequest{Forge: gh.Forge, ForgeRepo: gh.ForgeRepo, ForgeInstallationID: n(7), ForgeToken: s("t")}, true, "set one"},
		{"installation on gitea", ProjectRequest{Forge: s("gitea"), ForgeRepo: gh.ForgeRepo, ForgeURL: s("https://g"), ForgeInstallationID: n(7)}, true, "only a github"},
		{"negative installation", ProjectRequest{Forge: gh.Forge, ForgeRepo: gh.ForgeRepo, ForgeInstallationID: n(-1)}, true, "want the GitHub App"},
		{"neither", gh, true, "forge_token: required"},
		{"installation", ProjectRequest{Forge: gh.Forge, ForgeRepo: gh.ForgeRepo, ForgeInstallationID: n(7)}, true, ""},
	} {
		c, err := forgeConnection(nil, tc.req, tc.app)
		if tc.wantErr == "" {
			if err != nil || !c.App() || c.InstallationID != 7 {
				t.Errorf("%s: %+v, %v", tc.name, c, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
		}
	}
	cur := &store.ForgeConnection{Forge: "github", Repo: "acme/web", APIURL: "https://api.github.com", Token: "old"}
	c, err := forgeConnection(cur, ProjectRequest{ForgeInstallationID: n(9)}, true)
	if err != nil || c.Token != "" || c.InstallationID != 9 {
		t.Fatalf("installation over a token: %+v, %v", c, err)
	}
	c, err = forgeConnection(c, ProjectRequest{ForgeToken: s("new")}, true)
	if err != nil || c.Token != "new" || c.InstallationID != 0 {
		t.Fatalf("token over an installation: %+v, %v", c, err)
	}
}
