package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/auth"
	"github.com/kilnci/kiln/internal/auth/oidctest"
	"github.com/kilnci/kiln/internal/browsertest"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// The dashboard in Debian's Chromium against a real Kiln, its builds
// running on a real engine: sign in with a token and out, a running
// build's log appearing live and followed, cancel, retry, approve a
// fork's build, the builds list's rows changing without a reload, a
// <script> log line shown as text, a phone's width, and a viewer who
// sees no buttons and whom the API behind them refuses. One engine: the
// pages do not depend on it (the engines' own suites cover both).
func TestDashboardInBrowser(t *testing.T) {
	b := browsertest.Require(t)
	engines := testenv.Engines(t)
	h := startServer(t, engines[0])
	h.startAgent("a1", nil)
	h.startAgent("a2", nil)

	cache := "cache:\n  - /sticky\n  - key: deps-${{ branch }}\n    paths: [/deps]\n"
	done := pipelineFile(cache,
		// The step's command is in the log too: written so that only its
		// output holds the <script> line and the search's word.
		`echo first; echo '<scr''ipt>alert(1)</script>'; printf '\033[31mred\033[0m\n'; for i in 1 2 3; do echo "mark""er-$i"; done`,
		`mkdir -p /deps && echo deps > /deps/x && echo warm > /sticky/x; sleep 5`)
	repo, _ := newRepo(t, map[string]string{".kiln.yml": done})
	git(t, repo, "checkout", "-q", "-b", "live")
	commit(t, repo, map[string]string{".kiln.yml": pipelineFile("", `for i in $(seq 1 80); do echo "line $i"; sleep 0.25; done`)})
	git(t, repo, "checkout", "-q", "-b", "slow", "main")
	commit(t, repo, map[string]string{".kiln.yml": pipelineFile("", `echo waiting; sleep 300`)})
	git(t, repo, "checkout", "-q", "-b", "forked", "main")
	forkHead := commit(t, repo, map[string]string{".kiln.yml": pipelineFile("", `echo from a fork`)})
	git(t, repo, "update-ref", "refs/pull/3/head", forkHead)
	git(t, repo, "checkout", "-q", "main")
	h.addProject("web", repo, projectOpts{})

	doneID := h.trigger("web", "main")
	if got := h.waitDone(doneID); got.Status != store.StatusSuccess {
		t.Fatalf("the finished build: %s\n%s", got.Status, h.logText(doneID))
	}
	liveID, slowID := h.trigger("web", "live"), h.trigger("web", "slow")
	pr := []byte(strings.ReplaceAll(string(githubPR(t, "opened", forkHead, "mallory/Hello-World")), `"number":2`, `"number":3`))
	code, resp := h.postGitHub("web", "pull_request", "pr-fork", "webhook-secret-web", pr)
	if code != http.StatusCreated || resp["approval"] != store.ApprovalWaiting {
		t.Fatalf("the fork's request: HTTP %d %v", code, resp)
	}
	waitingID := int64(resp["build_id"].(float64))

	// A viewer of the project, signed in (their session made in the
	// store, as the single sign-on callback makes it: sso_test covers
	// that flow).
	ctx := context.Background()
	vic := &store.User{Subject: "sub-vic", Email: "vic@example.com", Name: "Vic"}
	if err := h.srv.Store.UpsertUser(ctx, vic); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Store.SetRoleBinding(ctx, &store.RoleBinding{Project: "web", Kind: store.BindUser, Subject: vic.Email, Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	_, vicSession, err := h.srv.Store.CreateSession(ctx, vic.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	var got struct {
		LiveGrewFrom     int     `json:"liveGrewFrom"`
		FollowedToBottom bool    `json:"followedToBottom"`
		LiveEndedAs      string  `json:"liveEndedAs"`
		LiveLastLine     string  `json:"liveLastLine"`
		RedClass         string  `json:"redClass"`
		SearchCount      string  `json:"searchCount"`
		RawLog           string  `json:"rawLog"`
		Retried          int64   `json:"retried"`
		RetriedRowFirst  string  `json:"retriedRowFirst"`
		RetriedRowLast   string  `json:"retriedRowLast"`
		ListNotReloaded  bool    `json:"listNotReloaded"`
		Canceled         string  `json:"canceled"`
		Approved         string  `json:"approved"`
		ProjectsPage     string  `json:"projectsPage"`
		AgentsPage       string  `json:"agentsPage"`
		PhoneOverflow    float64 `json:"phoneOverflow"`
		PhoneLogLines    int     `json:"phoneLogLines"`
		SignedOut        bool    `json:"signedOut"`
		ViewerTitle      string  `json:"viewerTitle"`
		ViewerButtons    int     `json:"viewerButtons"`
		ViewerCancel     int     `json:"viewerCancel"`
		Badge            string  `json:"badge"`
		CacheBefore      int     `json:"cacheEntriesBefore"`
		SecretShown      bool    `json:"secretValueShown"`
		NewToken         string  `json:"newToken"`
		TokenRevoked     bool    `json:"tokenRevoked"`
		CacheAfter       int     `json:"cacheEntriesAfter"`
		Insights         struct {
			Builds     string `json:"builds"`
			APIBuilds  int    `json:"apiBuilds"`
			Failure    string `json:"failure"`
			APIFailure string `json:"apiFailure"`
			Charts     int    `json:"charts"`
			JobsRows   int    `json:"jobsRows"`
			APIJobs    int    `json:"apiJobs"`
		} `json:"insights"`
	}
	env := map[string]string{
		"KILN_URL": h.url, "KILN_TOKEN": h.admin, "KILN_PROJECT": "web", "KILN_VIEWER_SESSION": vicSession,
		"KILN_LIVE_BUILD": strconv.FormatInt(liveID, 10), "KILN_SLOW_BUILD": strconv.FormatInt(slowID, 10),
		"KILN_DONE_BUILD": strconv.FormatInt(doneID, 10), "KILN_WAITING_BUILD": strconv.FormatInt(waitingID, 10),
		// Set KILN_SCREENSHOTS=docs/screenshots (absolute) to save each page.
		"KILN_SCREENSHOTS": os.Getenv("KILN_SCREENSHOTS"),
	}
	b.Run(t, "dashboard.mjs", 5*time.Minute, env, &got)
	t.Logf("browser: %+v", got)

	if got.LiveEndedAs != "success" || got.LiveLastLine != "line 80" || !got.FollowedToBottom {
		t.Errorf("the live log: ended %q, last line %q, followed %v", got.LiveEndedAs, got.LiveLastLine, got.FollowedToBottom)
	}
	if got.RedClass != "f1" || got.SearchCount != "1 of 3" || !strings.Contains(got.RawLog, "<script>alert(1)</script>\n") {
		t.Errorf("the finished log: red %q, search %q, raw %q", got.RedClass, got.SearchCount, got.RawLog)
	}
	if got.Retried == 0 || got.RetriedRowLast != "success" || !got.ListNotReloaded {
		t.Errorf("retry and the live list: build %d, row %q then %q, not reloaded %v", got.Retried, got.RetriedRowFirst, got.RetriedRowLast, got.ListNotReloaded)
	}
	if r := h.build(got.Retried); r.Commit != h.build(doneID).Commit {
		t.Errorf("the retry built %s, not the commit retried", r.Commit)
	}
	if got.Canceled != "canceled" || h.waitDone(slowID).Status != store.StatusCanceled {
		t.Errorf("cancel: the page showed %q, the build is %s", got.Canceled, h.build(slowID).Status)
	}
	if got.Approved != store.ApprovalApproved || h.build(waitingID).Approval != store.ApprovalApproved {
		t.Errorf("approve: %q", got.Approved)
	}
	if !strings.Contains(got.ProjectsPage, "web") || !strings.Contains(got.AgentsPage, "a1") || !strings.Contains(got.AgentsPage, "a2") {
		t.Errorf("projects page %q, agents page %q", got.ProjectsPage, got.AgentsPage)
	}
	// The default branch's newest finished build passed: a green
	// "passing". (The badge is private, the default: the session shows it.)
	if !strings.Contains(got.Badge, ">passing<") || !strings.Contains(got.Badge, "#4c1") {
		t.Errorf("badge:\n%s", got.Badge)
	}
	if got.CacheBefore < 1 || got.CacheAfter != got.CacheBefore-1 {
		t.Errorf("cache entries: %d, after a delete %d", got.CacheBefore, got.CacheAfter)
	}
	// Settings through the pages' forms: the secret stored (and not shown),
	// the badge public (served without a token), the token made in the
	// browser shown once and revoked there.
	var names struct{ Names []string }
	h.do("GET", "/api/v1/projects/web/secrets", nil, &names)
	if got.SecretShown || !slices.Contains(names.Names, "DEPLOY_KEY") {
		t.Errorf("the secret set in the browser: names %v, value shown %v", names.Names, got.SecretShown)
	}
	if resp, err := http.Get(h.url + "/badge/web.svg"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("the badge made public in the browser: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if !strings.HasPrefix(got.NewToken, "kiln_") || !got.TokenRevoked || h.doAs(got.NewToken, "GET", "/api/v1/builds", nil, nil) != http.StatusUnauthorized {
		t.Errorf("the token made in the browser: %q, revoked %v", got.NewToken, got.TokenRevoked)
	}
	in := got.Insights
	if in.APIBuilds < 3 || in.Builds != strconv.Itoa(in.APIBuilds) || in.Failure != in.APIFailure || in.Charts != 2 || in.JobsRows != in.APIJobs || in.APIJobs != 1 {
		t.Errorf("insights page %+v", in)
	}
	if got.PhoneOverflow > 0 || got.PhoneLogLines == 0 {
		t.Errorf("at a phone's width: %v px wider than the screen, %d log lines shown", got.PhoneOverflow, got.PhoneLogLines)
	}
	if !got.SignedOut || got.ViewerButtons != 0 || got.ViewerCancel != http.StatusForbidden || !strings.HasPrefix(got.ViewerTitle, fmt.Sprintf("web #%d", h.build(doneID).Number)) {
		t.Errorf("signed out %v; the viewer: page %q, %d buttons, the API's answer %d", got.SignedOut, got.ViewerTitle, got.ViewerButtons, got.ViewerCancel)
	}
}

// Single sign-on from the dashboard in Chromium, against a real OpenID
// provider (oidctest: zitadel's op, its own login form): back on the page
// asked for, signed in with the role the user's group gives, then out.
func TestDashboardSingleSignOnInBrowser(t *testing.T) {
	b := browsertest.Require(t)
	op := oidctest.Start(t)
	op.AddClient("kiln", "kiln-client-secret")
	op.AddUser(oidctest.User{Subject: "sub-ann", Username: "ann", Password: "pw", Email: "ann@example.com", Name: "Ann", Groups: []string{"ops"}})
	h := startServerWith(t, testenv.Engines(t)[0], func(c *server.Config) {
		c.OIDC = auth.Config{Issuer: op.URL, ClientID: "kiln", ClientSecret: "kiln-client-secret", Scopes: []string{"email", "profile", "groups"}}
	})
	op.AllowRedirect(h.url + "/auth/callback")
	repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", "true")})
	h.addProject("web", repo, projectOpts{})
	if code := h.do("PUT", "/api/v1/roles", api.RoleRequest{Project: "web", Group: "ops", Role: "maintainer"}, nil); code != http.StatusOK {
		t.Fatalf("role: HTTP %d", code)
	}
	var got struct {
		LandedOn     string            `json:"landedOn"`
		Who          string            `json:"who"`
		Session      map[string]string `json:"session"`
		AfterSignOut int               `json:"afterSignOut"`
	}
	b.Run(t, "sso.mjs", 2*time.Minute, map[string]string{"KILN_URL": h.url, "KILN_SSO_USER": "ann", "KILN_SSO_PASSWORD": "pw"}, &got)
	if got.LandedOn != "/builds?project=web" || got.Who != "ann@example.com" || got.Session["web"] != "maintainer" || got.AfterSignOut != http.StatusUnauthorized {
		t.Errorf("single sign-on in the browser: %+v", got)
	}
}
