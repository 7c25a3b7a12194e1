package store

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestTokenSessions(t *testing.T) {
	s, _ := newStore(t)
	c := withClock(s)
	tok, _, err := s.CreateToken(ctx, "ann's laptop", TokenAdmin)
	if err != nil {
		t.Fatal(err)
	}
	se, plain, err := s.CreateTokenSession(ctx, tok.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	if err := s.db.QueryRowContext(ctx, `SELECT hash FROM token_sessions WHERE id = ?`, se.ID).Scan(&hash); err != nil || hash != hashToken(plain) {
		t.Fatalf("stored %q (%v): want the session token's hash only", hash, err)
	}
	got, gotTok, err := s.TokenSessionByToken(ctx, plain)
	if err != nil || got.ID != se.ID || got.CSRF != se.CSRF || gotTok.ID != tok.ID || gotTok.Kind != TokenAdmin || gotTok.Name != "ann's laptop" {
		t.Fatalf("TokenSessionByToken = %+v, %+v, %v", got, gotTok, err)
	}
	// The session's token is not an API token, nor a user's session.
	if _, err := s.Authenticate(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Authenticate(session token) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.SessionByToken(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SessionByToken(token session) = %v, want ErrNotFound", err)
	}

	// Signing out ends it; a second sign-out finds nothing.
	if err := s.DeleteTokenSession(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TokenSessionByToken(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after sign-out: %v, want ErrNotFound", err)
	}
	if err := s.DeleteTokenSession(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second sign-out: %v, want ErrNotFound", err)
	}

	// Expiry, and the token's revocation, end a session too.
	_, expiring, err := s.CreateTokenSession(ctx, tok.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, revoked, err := s.CreateTokenSession(ctx, tok.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.advance(2 * time.Minute)
	if _, _, err := s.TokenSessionByToken(ctx, expiring); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired: %v, want ErrNotFound", err)
	}
	if _, _, err := s.TokenSessionByToken(ctx, revoked); err != nil {
		t.Fatalf("live: %v", err)
	}
	if err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TokenSessionByToken(ctx, revoked); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token revoked: %v, want ErrNotFound", err)
	}
	if _, _, err := s.CreateTokenSession(ctx, tok.ID, 0); err == nil {
		t.Fatal("a session without a lifetime was made")
	}
}

func TestListBuildsByEventTriggerAndRequest(t *testing.T) {
	s, _ := newStore(t)
	web := mkProject(t, s, "web", false)
	push := &Build{ProjectID: web.ID, Trigger: "push", Event: EventPush, Ref: "refs/heads/main", Branch: "main"}
	api := &Build{ProjectID: web.ID, Trigger: "api", Event: EventAPI, Ref: "refs/heads/main", Branch: "main"}
	pr := &Build{ProjectID: web.ID, Trigger: "push", Event: EventPullRequest, Ref: "refs/pull/7/head", Branch: "feature",
		PullRequest: &PullRequest{Number: 7, HeadBranch: "feature", BaseBranch: "main"}}
	for _, b := range []*Build{push, api, pr} {
		if err := s.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		f    BuildFilter
		want []int64
	}{
		{BuildFilter{Event: EventPush}, []int64{push.ID}},
		{BuildFilter{Trigger: "api"}, []int64{api.ID}},
		{BuildFilter{Trigger: "push"}, []int64{pr.ID, push.ID}},
		{BuildFilter{PullRequest: 7}, []int64{pr.ID}},
		{BuildFilter{PullRequest: 8}, nil},
		{BuildFilter{Requests: true}, []int64{pr.ID}},
		{BuildFilter{Event: EventPullRequest, Branch: "feature"}, []int64{pr.ID}},
	} {
		got, err := s.ListBuilds(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, b := range got {
			ids = append(ids, b.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%+v: builds %v, want %v", tc.f, ids, tc.want)
		}
	}
}

func TestWarmProjects(t *testing.T) {
	s, _ := newStore(t)
	mkProject(t, s, "web", false)
	mkProject(t, s, "api", false)
	if err := s.SetWarm(ctx, "agent-1", []string{"web", "api"}); err != nil {
		t.Fatal(err)
	}
	warm, err := s.WarmProjects(ctx)
	if err != nil || !slices.Equal(warm["agent-1"], []string{"api", "web"}) || len(warm) != 1 {
		t.Fatalf("WarmProjects = %v, %v", warm, err)
	}
}
