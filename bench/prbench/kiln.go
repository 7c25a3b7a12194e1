package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnci/kiln/bench/internal/ghhook"
	"github.com/kilnci/kiln/bench/internal/inproc"
	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

const (
	image         = "localhost/kiln/busybox:latest"
	project       = "bench"
	webhookSecret = "prbench-webhook-secret-0123"
	ghToken       = "ghp_prbench"
	ghRepo        = "acme/app"
)

// kiln is a control plane and one agent in this process, as `kiln up`
// runs them (the agent speaks HTTP to the server on loopback), and one
// project whose commit statuses go to the fake GitHub gh with a token.
type kiln struct {
	gh         *fakegithub.Server
	url, admin string
	repo       string // the project's clone URL: a local repository
	fixtures   string // internal/forge/testdata/github
	stop       func()
}

func startKiln(ctx context.Context, engine string, poll time.Duration, gh *fakegithub.Server, fixtures string) (*kiln, error) {
	dir, err := os.MkdirTemp("", "prbench")
	if err != nil {
		return nil, err
	}
	var logOut io.Writer = io.Discard
	if os.Getenv("PRBENCH_VERBOSE") != "" {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))
	cfg := server.DefaultConfig()
	cfg.ForgeStatuses.Poll = poll // 0: the sender's default
	k := &kiln{gh: gh, repo: filepath.Join(dir, "repo"), fixtures: fixtures}
	up, err := inproc.Up(ctx, cfg, engine, inproc.Agent{ID: "prbench-agent", Labels: []string{"linux"}, Memory: 256 << 20}, dir, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	k.url, k.admin = up.URL, up.Admin
	k.stop = func() { up.Stop(); os.RemoveAll(dir) }
	fail := func(err error) (*kiln, error) { k.stop(); return nil, err }

	if err := makeRepo(k.repo, "image: "+image+"\nsteps:\n  - run: echo hello\n"); err != nil {
		return fail(err)
	}
	if err := k.api("POST", "/api/v1/projects", map[string]any{"name": project, "clone_url": k.repo, "default_branch": "main", "webhook_secret": webhookSecret}, nil); err != nil {
		return fail(err)
	}
	// Connected as `kiln project set -forge github …` does: statuses with a
	// token, to the fake's API.
	forge := map[string]any{"forge": "github", "forge_repo": ghRepo, "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": ghToken}
	if err := k.api("PATCH", "/api/v1/projects/"+project, forge, nil); err != nil {
		return fail(err)
	}
	return k, nil
}

func (k *kiln) api(method, path string, in, out any) error {
	return apiclient.Client{URL: k.url, Token: k.admin}.Do(context.Background(), method, path, in, out)
}

func makeRepo(dir, pipeline string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ".kiln.yml"), []byte(pipeline), 0o644); err != nil {
		return err
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "bench"}} {
		if _, err := git(dir, args...); err != nil {
			return err
		}
	}
	return nil
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %v: %v: %s", args, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out)), nil
}

// newCommit makes a commit on main's tree (each request and push builds a
// commit of its own, so that its statuses are told apart by commit) and
// points ref at it: refs/pull/N/head for a request (on no branch, as the
// forge keeps a request's head), refs/heads/main for a push.
func (k *kiln) newCommit(ref, msg string) (string, error) {
	sha, err := git(k.repo, "commit-tree", "main^{tree}", "-p", "main", "-m", msg)
	if err != nil {
		return "", err
	}
	_, err = git(k.repo, "update-ref", ref, sha)
	return sha, err
}

// prOpened is the real `pull_request` `opened` example for request number
// at head, from a branch of the base repository (trusted: it builds at
// once), into main.
func (k *kiln) prOpened(number int, head string) ([]byte, error) {
	m, err := ghhook.Fixture(k.fixtures, "pull_request.opened.json")
	if err != nil {
		return nil, err
	}
	pr, ok := m["pull_request"].(map[string]any)
	if !ok {
		return nil, errors.New("pull_request.opened.json: no pull_request")
	}
	m["number"], pr["number"] = number, number
	pr["head"].(map[string]any)["sha"] = head
	pr["base"].(map[string]any)["ref"] = "main"
	return json.Marshal(m)
}

// push is the real `push` example, of main to after.
func (k *kiln) push(after string) ([]byte, error) {
	return ghhook.Push(k.fixtures, "refs/heads/main", after)
}

// deliver sends a signed webhook (as GitHub signs it) and returns the
// build's id.
func (k *kiln) deliver(event, delivery string, body []byte) (int64, error) {
	req, err := ghhook.Request(k.url+"/hooks/github/"+project, webhookSecret, event, delivery, body)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.BuildID == 0 {
		return 0, fmt.Errorf("%s webhook: HTTP %d: no build (%v)", event, resp.StatusCode, err)
	}
	return out.BuildID, nil
}

// stream follows the build's live log: it sends the time the first line
// of step 0 arrives on first, and returns the build when it ends.
func (k *kiln) stream(id int64, first chan<- time.Time) (*api.BuildView, error) {
	sent := false
	return apiclient.Client{URL: k.url, Token: k.admin}.FollowLogs(context.Background(), id, func(l api.StreamLine) {
		if l.Step == 0 && !sent {
			first <- time.Now()
			sent = true
		}
	})
}

// timeline is one build's, from its webhook's sending: the first line of
// step 0 at the server, the build's end (its record), and the fake
// GitHub's arrivals of the first status of context "kiln" (pending, unless
// the sender coalesced it away) and of the final success.
type timeline struct {
	sent, firstLine, finished, firstStatus, success time.Time
	firstState                                      string
}

// run delivers one webhook and follows its build to the final status at
// the forge.
func (k *kiln) run(event, delivery, sha string, body []byte) (timeline, error) {
	var tl timeline
	tl.sent = time.Now()
	id, err := k.deliver(event, delivery, body)
	if err != nil {
		return tl, err
	}
	first := make(chan time.Time, 1)
	b, err := k.stream(id, first)
	if err != nil {
		return tl, err
	}
	select {
	case tl.firstLine = <-first:
	default:
		return tl, fmt.Errorf("build %d ended (%s) without a step line", id, b.Status)
	}
	if b.Status != store.StatusSuccess || b.FinishedAt == nil {
		return tl, fmt.Errorf("build %d: %s", id, b.Status)
	}
	tl.finished = *b.FinishedAt
	deadline := time.Now().Add(time.Minute) // a safety net, not a measure
	for {
		if done, err := tl.statuses(k.gh.Statuses(), sha); done || err != nil {
			if err != nil {
				err = fmt.Errorf("build %d: %w", id, err)
			}
			return tl, err
		}
		if time.Now().After(deadline) {
			return tl, fmt.Errorf("build %d: no success status at the forge a minute after the build ended", id)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// statuses reads the build's "kiln" statuses at the fake, in arrival
// order, into tl; done once the success has come.
func (tl *timeline) statuses(all []fakegithub.CommitStatus, sha string) (done bool, err error) {
	tl.firstStatus, tl.firstState = time.Time{}, ""
	for _, s := range all {
		if s.SHA != sha || s.Context != store.ContextBuild {
			continue
		}
		if tl.firstStatus.IsZero() {
			tl.firstStatus, tl.firstState = s.At, s.State
		}
		switch s.State {
		case "success":
			tl.success = s.At
			return true, nil
		case "pending":
		default:
			return false, fmt.Errorf("status %q at the forge", s.State)
		}
	}
	return false, nil
}
