package apiclient_test

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// The client against a real Kiln server (SQLite store, the REST API).
func TestClientAgainstServer(t *testing.T) {
	ctx := context.Background()
	c := startServer(t)

	var created struct{ Name, CloneURL string }
	in := map[string]string{"name": "app", "clone_url": "https://example.com/app.git"}
	if err := c.Do(ctx, "POST", "/api/v1/projects", in, &created); err != nil || created.Name != "app" {
		t.Fatalf("create: %+v, %v", created, err)
	}
	var list []struct{ Name string }
	if err := c.Do(ctx, "GET", "/api/v1/projects", nil, &list); err != nil || len(list) != 1 || list[0].Name != "app" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	// An error answer becomes an error with the API's message and status.
	err := c.Do(ctx, "POST", "/api/v1/projects", in, nil)
	if err == nil || !strings.Contains(err.Error(), "(HTTP 409)") {
		t.Fatalf("duplicate project: %v, want an HTTP 409 error", err)
	}
	bad := apiclient.Client{URL: c.URL, Token: "not-a-token"}
	if err := bad.Do(ctx, "GET", "/api/v1/projects", nil, &list); err == nil || !strings.Contains(err.Error(), "(HTTP 401)") {
		t.Fatalf("bad token: %v, want an HTTP 401 error", err)
	}
	// A server that is not there.
	gone := apiclient.Client{URL: "http://127.0.0.1:1", Token: c.Token}
	if err := gone.Do(ctx, "GET", "/api/v1/projects", nil, nil); err == nil || !strings.Contains(err.Error(), "cannot reach Kiln") {
		t.Fatalf("no server: %v", err)
	}
}

// FollowLogs reads a build's live log to its end: a build whose
// repository has no .kiln.yml ends at planning, with its [kiln] lines.
func TestFollowLogs(t *testing.T) {
	ctx := context.Background()
	c := startServer(t)

	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "empty"}} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := c.Do(ctx, "POST", "/api/v1/projects", map[string]string{"name": "app", "clone_url": repo}, nil); err != nil {
		t.Fatal(err)
	}
	var b struct {
		ID int64 `json:"id"`
	}
	if err := c.Do(ctx, "POST", "/api/v1/projects/app/builds", map[string]string{"branch": "main"}, &b); err != nil || b.ID == 0 {
		t.Fatalf("trigger: %+v, %v", b, err)
	}
	var lines []string
	got, err := c.FollowLogs(ctx, b.ID, func(l api.StreamLine) { lines = append(lines, l.Text) })
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != b.ID || got.Status != store.StatusFailure || !strings.Contains(strings.Join(lines, "\n"), ".kiln.yml") {
		t.Fatalf("build %+v, lines %q", got, lines)
	}
	bad := apiclient.Client{URL: c.URL, Token: "not-a-token"}
	if _, err := bad.FollowLogs(ctx, b.ID, nil); err == nil || !strings.Contains(err.Error(), "(HTTP 401)") {
		t.Fatalf("bad token: %v", err)
	}
}

// startServer runs a real Kiln server (SQLite store) until the test ends
// and returns a client of it with the admin token. Local repositories are
// allowed as clone URLs.
func startServer(t *testing.T) apiclient.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Listen = t.TempDir(), "127.0.0.1:0"
	cfg.Git.AllowFileRemotes = true
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, _ := srv.Listen()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	tok, _, err := srv.EnsureAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return apiclient.Client{URL: "http://" + ln.Addr().String(), Token: tok}
}
