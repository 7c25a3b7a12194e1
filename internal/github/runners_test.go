package github_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

func TestGenerateJITConfig(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		scope     github.Scope
		group     int64
		wantGroup int64
	}{
		{"org", github.Scope{Owner: "acme"}, 3, 3},
		{"org default group", github.Scope{Owner: "acme"}, 0, 1},
		{"repo always in group 1", github.Scope{Owner: "acme", Repo: "widgets"}, 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFake(t)
			c := appClient(t, s)
			labels := []string{"self-hosted", "kiln", "linux-x64"}
			jit, err := c.GenerateJITConfig(ctx, tc.scope, "kiln-1", labels, tc.group)
			if err != nil {
				t.Fatal(err)
			}
			if jit.RunnerID == 0 || jit.RunnerName != "kiln-1" || jit.EncodedJITConfig == "" {
				t.Fatalf("JITConfig %v", jit)
			}
			fr, ok := s.Runner(jit.RunnerID)
			if !ok {
				t.Fatalf("fake has no runner %d", jit.RunnerID)
			}
			// Exactly the labels asked for: no self-hosted/OS defaults added.
			if !slices.Equal(fr.Labels, labels) || fr.GroupID != tc.wantGroup || fr.Owner != tc.scope.Owner || fr.Repo != tc.scope.Repo {
				t.Errorf("fake runner %+v", fr)
			}
			got, err := c.GetRunner(ctx, tc.scope, jit.RunnerID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Online() || got.Busy || !slices.Equal(got.Labels, labels) || got.GroupID != tc.wantGroup {
				t.Errorf("GetRunner before the runner starts: %+v", got)
			}
			// The config works, once, and the runner shows online.
			if a := register(t, s, jit); a.RunnerID != jit.RunnerID {
				t.Errorf("registered runner %d, want %d", a.RunnerID, jit.RunnerID)
			}
			if got, _ := c.GetRunner(ctx, tc.scope, jit.RunnerID); !got.Online() {
				t.Errorf("after register: %+v", got)
			}
		})
	}
}

// The JIT config is a credential: printing or logging a JITConfig never
// shows it.
func TestJITConfigRedacted(t *testing.T) {
	jit := github.JITConfig{RunnerID: 7, RunnerName: "kiln-7", EncodedJITConfig: "c2VjcmV0LWNvbmZpZw=="}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("started", "jit", jit)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("started", "jit", jit)
	for _, out := range []string{fmt.Sprint(jit), fmt.Sprintf("%v %+v %#v %s", jit, jit, jit, jit), logged.String()} {
		if strings.Contains(out, jit.EncodedJITConfig) {
			t.Errorf("JIT config leaked: %s", out)
		}
		if !strings.Contains(out, "kiln-7") {
			t.Errorf("runner name missing: %s", out)
		}
	}
}

func TestGenerateJITConfigRefused(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	repo := github.Scope{Owner: "acme", Repo: "widgets"}
	if _, err := c.GenerateJITConfig(ctx, repo, "dup", []string{"kiln"}, 1); err != nil {
		t.Fatal(err)
	}
	_, err := c.GenerateJITConfig(ctx, repo, "dup", []string{"kiln"}, 1)
	if !errors.Is(err, github.ErrConflict) || github.Retryable(err) {
		t.Fatalf("same name twice: %v, want ErrConflict", err)
	}
	// The same name in another scope is another runner.
	if _, err := c.GenerateJITConfig(ctx, org, "dup", []string{"kiln"}, 1); err != nil {
		t.Fatalf("same name at org scope: %v", err)
	}
	calls := s.Calls(fakegithub.EndpointGenerateJITConfig)
	for _, bad := range []struct {
		scope  github.Scope
		name   string
		labels []string
	}{
		{repo, "no-labels", nil},
		{repo, "", []string{"kiln"}},
		{repo, "blank-label", []string{"kiln", " "}},
		{github.Scope{}, "no-owner", []string{"kiln"}},
		{github.Scope{Owner: "a/b"}, "slash", []string{"kiln"}},
	} {
		if _, err := c.GenerateJITConfig(ctx, bad.scope, bad.name, bad.labels, 1); !errors.Is(err, github.ErrValidation) {
			t.Errorf("%q %q %q: %v, want ErrValidation", bad.scope, bad.name, bad.labels, err)
		}
	}
	if n := s.Calls(fakegithub.EndpointGenerateJITConfig); n != calls {
		t.Errorf("invalid arguments reached GitHub %d times", n-calls)
	}
}

// ListRunners follows the Link header over every page, and keeps scopes
// apart.
func TestListRunnersPages(t *testing.T) {
	s := newFake(t)
	c := tokenClient(t, s)
	ctx := context.Background()
	repo := github.Scope{Owner: "acme", Repo: "widgets"}
	var want []int64
	for i := range 5 {
		jit, err := c.GenerateJITConfig(ctx, repo, fmt.Sprintf("r%d", i), []string{"kiln"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, jit.RunnerID)
	}
	if _, err := c.GenerateJITConfig(ctx, org, "org-runner", []string{"kiln"}, 1); err != nil {
		t.Fatal(err)
	}
	s.SetMaxPerPage(2)
	runners, err := c.ListRunners(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range runners {
		got = append(got, r.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("runners %v, want %v", got, want)
	}
	if n := s.Calls(fakegithub.EndpointListRunners); n != 3 {
		t.Errorf("%d list requests for 5 runners 2 a page, want 3", n)
	}
	orgRunners, err := c.ListRunners(ctx, org)
	if err != nil || len(orgRunners) != 1 || orgRunners[0].Name != "org-runner" {
		t.Errorf("org runners %+v, %v", orgRunners, err)
	}
}

// A failure on a later page fails the whole list: a partial list would
// look like runners had gone.
func TestListRunnersFailsOnAnyPage(t *testing.T) {
	s := newFake(t)
	c := tokenClient(t, s)
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.GenerateJITConfig(ctx, org, fmt.Sprintf("r%d", i), []string{"kiln"}, 1); err != nil {
			t.Fatal(err)
		}
	}
	s.SetMaxPerPage(1)
	s.FailAfter(fakegithub.EndpointListRunners, 2, 500, 1) // pages 1 and 2 pass, page 3 fails
	runners, err := c.ListRunners(ctx, org)
	if !errors.Is(err, github.ErrServer) || runners != nil {
		t.Fatalf("runners %v, err %v: want the whole call to fail with ErrServer", runners, err)
	}
	if n := s.Calls(fakegithub.EndpointListRunners); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if runners, err := c.ListRunners(ctx, org); err != nil || len(runners) != 3 {
		t.Errorf("after the fault: %d runners, %v", len(runners), err)
	}
}

func TestRemoveRunner(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	for _, scope := range []github.Scope{org, {Owner: "acme", Repo: "widgets"}} {
		jit, err := c.GenerateJITConfig(ctx, scope, "gone", []string{"kiln"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RemoveRunner(ctx, scope, jit.RunnerID); err != nil {
			t.Fatalf("%v: remove: %v", scope, err)
		}
		// Already gone is success, so a reaper can repeat itself.
		if err := c.RemoveRunner(ctx, scope, jit.RunnerID); err != nil {
			t.Fatalf("%v: remove again: %v", scope, err)
		}
		if _, err := c.GetRunner(ctx, scope, jit.RunnerID); !errors.Is(err, github.ErrNotFound) || github.Retryable(err) {
			t.Fatalf("%v: get removed runner: %v, want ErrNotFound", scope, err)
		}
	}
	if n := s.Calls(fakegithub.EndpointDeleteRunner); n != 4 {
		t.Errorf("delete calls %d, want 4", n)
	}
}

// GitHub refuses to remove a runner that runs a job (422).
func TestRemoveBusyRunner(t *testing.T) {
	s := newFake(t)
	c := appClient(t, s)
	ctx := context.Background()
	repo := github.Scope{Owner: "acme", Repo: "widgets"}
	job := s.QueueJob("acme", "widgets", []string{"kiln"})
	jit, err := c.GenerateJITConfig(ctx, repo, "busy", []string{"self-hosted", "kiln"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a := register(t, s, jit); a.JobID != job.ID {
		t.Fatalf("runner took job %d, want %d", a.JobID, job.ID)
	}
	r, err := c.GetRunner(ctx, repo, jit.RunnerID)
	if err != nil || !r.Busy || !r.Online() {
		t.Fatalf("runner %+v, %v: want online and busy", r, err)
	}
	err = c.RemoveRunner(ctx, repo, jit.RunnerID)
	if !errors.Is(err, github.ErrValidation) || github.Retryable(err) {
		t.Fatalf("remove busy runner: %v, want ErrValidation", err)
	}
	var e *github.Error
	if !errors.As(err, &e) || e.StatusCode != 422 || !strings.Contains(e.Message, "still running a job") {
		t.Errorf("error %#v", e)
	}
	if _, ok := s.Runner(jit.RunnerID); !ok {
		t.Error("busy runner was removed")
	}
}
