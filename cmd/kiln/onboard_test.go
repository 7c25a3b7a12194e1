package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
)

// -github, -gitlab and -gitea fill in the forge connection and ask for
// the webhook; the token comes from the environment unless it is piped
// or an installation; bad combinations are refused before any request.
func TestOnboardFlags(t *testing.T) {
	env := func(tok string) func(string) string {
		return func(k string) string {
			if k == forgeTokenEnv {
				return tok
			}
			return ""
		}
	}
	parse := func(args ...string) (*onboardFlags, *api.ProjectRequest) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var req api.ProjectRequest
		fs.Func("forge", "", strFlag(&req.Forge))
		f := addOnboardFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f, &req
	}
	f, req := parse("-github", "acme/web")
	if err := f.apply(req, "add", false, env("ghp_x")); err != nil || *req.Forge != "github" || *req.ForgeRepo != "acme/web" ||
		req.ForgeURL != nil || *req.ForgeToken != "ghp_x" || !req.ForgeWebhook {
		t.Fatalf("-github: %+v, %v", req, err)
	}
	f, req = parse("-gitlab", "group/sub/web", "-gitlab-url", "https://gitlab.example.com")
	if err := f.apply(req, "add", true, env("")); err != nil || *req.Forge != "gitlab" || *req.ForgeURL != "https://gitlab.example.com" || req.ForgeToken != nil {
		t.Fatalf("-gitlab with the token piped: %+v, %v", req, err)
	}
	f, req = parse("-github", "acme/web")
	if err := f.apply(req, "set", false, env("")); err != nil || req.ForgeToken != nil || !req.ForgeWebhook {
		t.Fatalf("set -github keeps the token: %+v, %v", req, err)
	}
	f, req = parse("-forge-webhook")
	if err := f.apply(req, "set", false, env("ghp_x")); err != nil || !req.ForgeWebhook || req.Forge != nil || req.ForgeToken != nil {
		t.Fatalf("-forge-webhook: %+v, %v", req, err)
	}
	for _, c := range []struct {
		args []string
		tok  string
		err  string
	}{
		{[]string{"-github", "acme/web"}, "", forgeTokenEnv},
		{[]string{"-gitea", "o/web"}, "t", "-gitea-url: required"},
		{[]string{"-gitlab-url", "https://g.example.com"}, "t", "-gitlab-url goes with -gitlab"},
		{[]string{"-github", "a/b", "-gitea", "c/d", "-gitea-url", "https://x"}, "t", "give one"},
		{[]string{"-github", "a/b", "-forge", "gitlab"}, "t", "drop -forge"},
	} {
		f, req := parse(c.args...)
		if err := f.apply(req, "add", false, env(c.tok)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%v: %v, want %q", c.args, err, c.err)
		}
	}
}
