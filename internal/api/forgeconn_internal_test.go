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
		c, err := forgeConnection(nil, req)
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
