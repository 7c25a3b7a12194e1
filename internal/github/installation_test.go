package github_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/gitmirror"
)

// privateRepo makes a repository with one commit and serves it as
// acme/private; it returns the commit.
func privateRepo(t *testing.T, s interface {
	ServeRepository(owner, repo, dir string)
}) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "private")
	env := append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@kiln.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@kiln.invalid")
	var head string
	for _, args := range [][]string{{"init", "--quiet", "--initial-branch=main", dir}, {"-C", dir, "commit", "--quiet", "--allow-empty", "-m", "one"}, {"-C", dir, "rev-parse", "HEAD"}} {
		cmd := exec.Command("git", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		head = string(out[:max(0, len(out)-1)])
	}
	s.ServeRepository("acme", "private", dir)
	return head
}

// An installation's token, minted through the per-installation cache,
// clones the fake's private repository as x-access-token; it is minted
// once and reused while good; a token the fake never issued, or one
// expired by the fake's clock, is refused.
func TestInstallationTokenClonesPrivateRepository(t *testing.T) {
	s := newFake(t)
	head := privateRepo(t, s)
	inst := github.NewInstallations(github.Config{AppID: appID, PrivateKeyPEM: pemOf(keys()[0])})
	ctx := context.Background()
	tok, exp, err := inst.Token(ctx, s.URL(), installationID)
	if err != nil || tok == "" || time.Until(exp) < 50*time.Minute {
		t.Fatalf("Token = %q, %v, %v", tok, exp, err)
	}
	fetch := func(tok string) (string, error) {
		m, err := gitmirror.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return m.Resolve(ctx, s.GitRemote("acme", "private"), "main", gitmirror.WithCredentials(&gitmirror.Credentials{Username: "x-access-token", Password: tok}))
	}
	if got, err := fetch(tok); err != nil || got != head {
		t.Fatalf("fetch with the installation token = %q, %v; want %s", got, err, head)
	}
	if _, err := fetch("ghs_notissuedbythefake"); !errors.Is(err, gitmirror.ErrAuth) {
		t.Errorf("fetch with a token the fake never issued: %v; want ErrAuth", err)
	}
	again, _, err := inst.Token(ctx, s.URL(), installationID)
	if err != nil || again != tok || s.TokensIssued() != 1 {
		t.Errorf("second Token = %q, %v; issued %d; want the cached token", again, err, s.TokensIssued())
	}
	// Two hours on, the token is dead on the fake's clock.
	s.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	if _, err := fetch(tok); !errors.Is(err, gitmirror.ErrAuth) {
		t.Errorf("fetch with an expired token: %v; want ErrAuth", err)
	}
	if s.GitRequests() == 0 {
		t.Error("the fake served no git request")
	}
}

// A client with a token has no installation token; an Installations
// without an App makes no client.
func TestInstallationTokenNeedsAnApp(t *testing.T) {
	s := newFake(t)
	if _, _, err := tokenClient(t, s).InstallationToken(context.Background()); !errors.Is(err, github.ErrValidation) {
		t.Errorf("InstallationToken of a token client: %v; want ErrValidation", err)
	}
	if _, _, err := github.NewInstallations(github.Config{}).Token(context.Background(), s.URL(), installationID); !errors.Is(err, github.ErrValidation) {
		t.Errorf("Token without an App: %v; want ErrValidation", err)
	}
	// An installation of another App is GitHub's 404 on the token exchange.
	inst := github.NewInstallations(github.Config{AppID: appID, PrivateKeyPEM: pemOf(keys()[0])})
	if _, _, err := inst.Token(context.Background(), s.URL(), 999); !errors.Is(err, github.ErrUnauthorized) {
		t.Errorf("Token of an unknown installation: %v; want ErrUnauthorized", err)
	}
}
