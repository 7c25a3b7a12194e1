package fakegithub

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "github_pat_test"

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := New()
	t.Cleanup(s.Close)
	s.AddToken(testToken)
	return s
}

// call makes one request, as a client of the REST API (path relative to
// URL) or of the broker (path starting with "/_fake").
func call(t *testing.T, s *Server, method, path string, body any) (int, http.Header, []byte) {
	t.Helper()
	u := s.URL() + path
	if strings.HasPrefix(path, "/_fake/") {
		u = strings.TrimSuffix(s.BrokerURL(), "/") + path
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	req.Header.Set("Authorization", "Bearer "+testToken)
	apiHeaders(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

type jitResponse struct {
	Runner struct {
		ID            int64  `json:"id"`
		Name          string `json:"name"`
		Status        string `json:"status"`
		Busy          bool   `json:"busy"`
		RunnerGroupID int64  `json:"runner_group_id"`
		Labels        []struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"labels"`
	} `json:"runner"`
	EncodedJITConfig string `json:"encoded_jit_config"`
}

func jit(t *testing.T, s *Server, scopePath, name string, labels ...string) jitResponse {
	t.Helper()
	code, _, body := call(t, s, "POST", scopePath+"/actions/runners/generate-jitconfig",
		map[string]any{"name": name, "runner_group_id": 1, "labels": labels})
	if code != http.StatusCreated {
		t.Fatalf("generate-jitconfig: %d %s", code, body)
	}
	return decode[jitResponse](t, body)
}

func registerRunner(t *testing.T, s *Server, config string) (int, Assignment) {
	t.Helper()
	code, _, body := call(t, s, "POST", "/_fake/runner/register", map[string]string{"jitconfig": config})
	var a Assignment
	if code == http.StatusOK {
		a = decode[Assignment](t, body)
	}
	return code, a
}

func TestGenerateJITConfigShape(t *testing.T) {
	s := newTestServer(t)
	r := jit(t, s, "repos/acme/widgets", "kiln-1", "self-hosted", "Kiln")
	if r.Runner.ID == 0 || r.Runner.Name != "kiln-1" || r.Runner.Status != "offline" || r.Runner.Busy || r.Runner.RunnerGroupID != 1 {
		t.Errorf("runner %+v", r.Runner)
	}
	var names []string
	for _, l := range r.Runner.Labels {
		if l.ID == 0 || l.Type != "custom" {
			t.Errorf("label %+v", l)
		}
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"self-hosted", "Kiln"}) {
		t.Errorf("labels %v: want exactly those asked for", names)
	}
	// GitHub's shape: base64 JSON of base64 ".runner" and ".credentials".
	outer := decode[map[string]string](t, must(base64.StdEncoding.DecodeString(r.EncodedJITConfig)))
	rf := decode[jitRunnerFile](t, must(base64.StdEncoding.DecodeString(outer[".runner"])))
	if rf.AgentID != r.Runner.ID || rf.AgentName != "kiln-1" || rf.ServerURL != s.BrokerURL() || !rf.Ephemeral || rf.GitHubURL != "https://github.com/acme/widgets" {
		t.Errorf(".runner %+v", rf)
	}
	if _, ok := outer[".credentials"]; !ok {
		t.Error("no .credentials")
	}

	for _, tc := range []struct {
		body map[string]any
		code int
	}{
		{map[string]any{"name": "kiln-1", "runner_group_id": 1, "labels": []string{"x"}}, http.StatusConflict},
		{map[string]any{"name": "KILN-1", "runner_group_id": 1, "labels": []string{"x"}}, http.StatusConflict},
		{map[string]any{"name": "", "runner_group_id": 1, "labels": []string{"x"}}, http.StatusUnprocessableEntity},
		{map[string]any{"name": "a", "runner_group_id": 1, "labels": []string{}}, http.StatusUnprocessableEntity},
		{map[string]any{"name": "a", "runner_group_id": 1}, http.StatusUnprocessableEntity},
		{map[string]any{"name": "a", "labels": []string{"x"}}, http.StatusUnprocessableEntity},
		{map[string]any{"name": "a", "runner_group_id": 0, "labels": []string{"x"}}, http.StatusUnprocessableEntity},
		{map[string]any{"name": "a", "runner_group_id": 1, "labels": []string{""}}, http.StatusUnprocessableEntity},
	} {
		code, _, body := call(t, s, "POST", "repos/acme/widgets/actions/runners/generate-jitconfig", tc.body)
		if code != tc.code || decode[map[string]any](t, body)["message"] == "" {
			t.Errorf("%v: %d %s, want %d", tc.body, code, body, tc.code)
		}
	}
	if n := len(s.Runners()); n != 1 {
		t.Errorf("%d runners after refused requests, want 1", n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A JIT configuration registers its runner once; a second use, a forged
// credential and a removed runner's configuration are refused.
func TestJITConfigSingleUse(t *testing.T) {
	s := newTestServer(t)
	r := jit(t, s, "orgs/acme", "once", "kiln")
	if code, a := registerRunner(t, s, r.EncodedJITConfig); code != http.StatusOK || a.RunnerID != r.Runner.ID || a.JobID != 0 {
		t.Fatalf("register: %d %+v", code, a)
	}
	if got, _ := s.Runner(r.Runner.ID); got.Status != "online" || !got.Registered {
		t.Errorf("runner after register: %+v", got)
	}
	if code, _ := registerRunner(t, s, r.EncodedJITConfig); code != http.StatusConflict {
		t.Errorf("second use: %d, want 409", code)
	}

	// A forged credential for a runner that has not registered yet.
	other := jit(t, s, "orgs/acme", "forged", "kiln")
	outer := decode[map[string]string](t, must(base64.StdEncoding.DecodeString(other.EncodedJITConfig)))
	outer[".credentials"] = base64.StdEncoding.EncodeToString([]byte(`{"scheme":"OAuth","data":{"clientSecret":"guess"}}`))
	forged := base64.StdEncoding.EncodeToString(must(json.Marshal(outer)))
	if code, _ := registerRunner(t, s, forged); code != http.StatusUnauthorized {
		t.Errorf("forged credential: %d, want 401", code)
	}
	if code, _ := registerRunner(t, s, "not base64!"); code != http.StatusBadRequest {
		t.Errorf("garbage: %d, want 400", code)
	}
	// Removed before it started: its configuration is dead.
	if code, _, _ := call(t, s, "DELETE", fmt.Sprintf("orgs/acme/actions/runners/%d", other.Runner.ID), nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := registerRunner(t, s, other.EncodedJITConfig); code != http.StatusNotFound {
		t.Errorf("removed runner's config: %d, want 404", code)
	}
	if n := s.Calls(EndpointRunnerRegister); n != 5 {
		t.Errorf("register calls %d, want 5", n)
	}
}

// A runner takes the oldest queued job whose labels are all among its own
// (case-insensitive), in its repository or, for an organization's runner,
// in any repository of the organization.
func TestRegisterAssignsMatchingJob(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scope     string
		runner    []string
		jobRepo   string
		jobLabels []string
		match     bool
	}{
		{"subset", "repos/acme/widgets", []string{"self-hosted", "kiln", "linux"}, "acme/widgets", []string{"self-hosted", "kiln"}, true},
		{"case", "repos/acme/widgets", []string{"Self-Hosted", "KILN"}, "acme/widgets", []string{"self-hosted", "kiln"}, true},
		{"missing label", "repos/acme/widgets", []string{"self-hosted", "kiln"}, "acme/widgets", []string{"kiln", "gpu"}, false},
		{"other repo", "repos/acme/widgets", []string{"kiln"}, "acme/gadgets", []string{"kiln"}, false},
		{"org runner", "orgs/acme", []string{"kiln"}, "acme/gadgets", []string{"kiln"}, true},
		{"other org", "orgs/acme", []string{"kiln"}, "evil/gadgets", []string{"kiln"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			owner, repo, _ := strings.Cut(tc.jobRepo, "/")
			job := s.QueueJob(owner, repo, tc.jobLabels)
			r := jit(t, s, tc.scope, "r", tc.runner...)
			_, a := registerRunner(t, s, r.EncodedJITConfig)
			got, _ := s.Job(job.ID)
			runner, _ := s.Runner(r.Runner.ID)
			if !tc.match {
				if a.JobID != 0 || got.Status != "queued" || runner.Busy {
					t.Errorf("assigned %+v; job %+v", a, got)
				}
				return
			}
			if a.JobID != job.ID || a.RunID != job.RunID || a.Repository != tc.jobRepo || !slices.Equal(a.Labels, tc.jobLabels) {
				t.Errorf("assignment %+v, want job %d", a, job.ID)
			}
			if got.Status != "in_progress" || got.RunnerID != r.Runner.ID || got.RunnerName != "r" || got.StartedAt.IsZero() {
				t.Errorf("job %+v", got)
			}
			if !runner.Busy || runner.JobID != job.ID || runner.Status != "online" {
				t.Errorf("runner %+v", runner)
			}
		})
	}
}

// A runner up before its job asks again (acquire); completing the job
// deletes the ephemeral runner.
func TestAcquireAndComplete(t *testing.T) {
	s := newTestServer(t)
	r := jit(t, s, "repos/acme/widgets", "warm", "kiln")
	if code, _, _ := call(t, s, "POST", "/_fake/runner/acquire", map[string]any{"runner_id": r.Runner.ID}); code != http.StatusConflict {
		t.Errorf("acquire before register: %d, want 409", code)
	}
	if _, a := registerRunner(t, s, r.EncodedJITConfig); a.JobID != 0 {
		t.Fatalf("no job queued, got %+v", a)
	}
	if code, _, _ := call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": r.Runner.ID}); code != http.StatusConflict {
		t.Errorf("complete without a job: %d, want 409", code)
	}
	older := s.QueueJob("acme", "widgets", []string{"kiln"})
	s.QueueJob("acme", "widgets", []string{"kiln"})
	code, _, body := call(t, s, "POST", "/_fake/runner/acquire", map[string]any{"runner_id": r.Runner.ID})
	if a := decode[Assignment](t, body); code != http.StatusOK || a.JobID != older.ID {
		t.Fatalf("acquire: %d %+v, want the older job %d", code, a, older.ID)
	}
	// Asking again while busy returns the same job.
	_, _, body = call(t, s, "POST", "/_fake/runner/acquire", map[string]any{"runner_id": r.Runner.ID})
	if a := decode[Assignment](t, body); a.JobID != older.ID {
		t.Errorf("acquire while busy: %+v", a)
	}

	code, _, body = call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": r.Runner.ID, "conclusion": "failure"})
	if a := decode[Assignment](t, body); code != http.StatusOK || a.JobID != older.ID || a.Conclusion != "failure" {
		t.Fatalf("complete: %d %s", code, body)
	}
	if j, _ := s.Job(older.ID); j.Status != "completed" || j.Conclusion != "failure" || j.CompletedAt.IsZero() {
		t.Errorf("job %+v", j)
	}
	if _, ok := s.Runner(r.Runner.ID); ok {
		t.Error("ephemeral runner still there after its job")
	}
	if code, _, _ := call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": r.Runner.ID}); code != http.StatusNotFound {
		t.Errorf("complete again: %d, want 404", code)
	}
	if code, _, _ := call(t, s, "GET", fmt.Sprintf("repos/acme/widgets/actions/runners/%d", r.Runner.ID), nil); code != http.StatusNotFound {
		t.Errorf("GET completed runner: %d, want 404", code)
	}
	code, _, body = call(t, s, "GET", "repos/acme/widgets/actions/runs?status=failure", nil)
	if runs := decode[map[string]any](t, body); code != http.StatusOK || runs["total_count"].(float64) != 1 {
		t.Errorf("failed runs: %s", body)
	}
	if code, _, _ := call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": 1, "conclusion": "meh"}); code != http.StatusBadRequest {
		t.Errorf("bad conclusion: %d, want 400", code)
	}
}

// Cancelling a run cancels its jobs; the runner of a started one is gone,
// an idle runner stays.
func TestCancelRun(t *testing.T) {
	s := newTestServer(t)
	jobs := s.QueueRun("acme", "widgets", []string{"kiln"}, []string{"kiln", "gpu"})
	busy := jit(t, s, "repos/acme/widgets", "busy", "kiln")
	idle := jit(t, s, "repos/acme/widgets", "idle", "gpu")
	registerRunner(t, s, busy.EncodedJITConfig)
	registerRunner(t, s, idle.EncodedJITConfig)
	code, _, body := call(t, s, "GET", "repos/acme/widgets/actions/runs?status=in_progress", nil)
	if code != http.StatusOK || decode[map[string]any](t, body)["total_count"].(float64) != 1 {
		t.Fatalf("in_progress runs: %s", body)
	}
	s.CancelRun("acme", "widgets", jobs[0].RunID)
	for _, j := range s.Jobs() {
		if j.Status != "completed" || j.Conclusion != "cancelled" {
			t.Errorf("job %+v", j)
		}
	}
	if _, ok := s.Runner(busy.Runner.ID); ok {
		t.Error("the cancelled job's runner is still there")
	}
	if r, ok := s.Runner(idle.Runner.ID); !ok || r.Busy {
		t.Errorf("idle runner %+v, %v", r, ok)
	}
	if code, _, _ := call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": busy.Runner.ID}); code != http.StatusNotFound {
		t.Errorf("complete after cancel: %d, want 404", code)
	}
	_, _, body = call(t, s, "GET", "repos/acme/widgets/actions/runs?status=cancelled", nil)
	if decode[map[string]any](t, body)["total_count"].(float64) != 1 {
		t.Errorf("cancelled runs: %s", body)
	}
}

func TestDeleteRunner(t *testing.T) {
	s := newTestServer(t)
	s.QueueJob("acme", "widgets", []string{"kiln"})
	r := jit(t, s, "repos/acme/widgets", "r", "kiln")
	path := fmt.Sprintf("repos/acme/widgets/actions/runners/%d", r.Runner.ID)
	if code, _, _ := call(t, s, "DELETE", "orgs/acme/actions/runners/"+strconv.FormatInt(r.Runner.ID, 10), nil); code != http.StatusNotFound {
		t.Errorf("delete through the wrong scope: %d, want 404", code)
	}
	registerRunner(t, s, r.EncodedJITConfig)
	code, _, body := call(t, s, "DELETE", path, nil)
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "still running a job") {
		t.Errorf("delete busy: %d %s, want 422", code, body)
	}
	call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": r.Runner.ID})
	if code, _, _ := call(t, s, "DELETE", path, nil); code != http.StatusNotFound {
		t.Errorf("delete completed: %d, want 404", code)
	}
	idle := jit(t, s, "repos/acme/widgets", "idle", "kiln")
	if code, _, _ := call(t, s, "DELETE", fmt.Sprintf("repos/acme/widgets/actions/runners/%d", idle.Runner.ID), nil); code != http.StatusNoContent {
		t.Errorf("delete idle: %d, want 204", code)
	}
}

func TestPagination(t *testing.T) {
	s := newTestServer(t)
	for i := range 5 {
		jit(t, s, "orgs/acme", fmt.Sprintf("r%d", i), "kiln")
	}
	code, h, body := call(t, s, "GET", "orgs/acme/actions/runners?per_page=2&page=2", nil)
	page := decode[struct {
		TotalCount int `json:"total_count"`
		Runners    []struct {
			Name string `json:"name"`
		} `json:"runners"`
	}](t, body)
	if code != http.StatusOK || page.TotalCount != 5 || len(page.Runners) != 2 || page.Runners[0].Name != "r2" {
		t.Errorf("page 2: %d %s", code, body)
	}
	link := h.Get("Link")
	for _, want := range []string{`page=3&per_page=2>; rel="next"`, `page=3&per_page=2>; rel="last"`, `page=1&per_page=2>; rel="prev"`, `page=1&per_page=2>; rel="first"`} {
		if !strings.Contains(link, want) {
			t.Errorf("Link %q lacks %q", link, want)
		}
	}
	if !strings.HasPrefix(link, "<"+s.URL()+"orgs/acme/actions/runners?") {
		t.Errorf("Link %q is not absolute", link)
	}
	_, h, body = call(t, s, "GET", "orgs/acme/actions/runners?per_page=2&page=9", nil)
	if !strings.Contains(string(body), `"runners":[]`) || strings.Contains(h.Get("Link"), "next") {
		t.Errorf("past the end: %s, Link %q", body, h.Get("Link"))
	}
	if _, h, _ = call(t, s, "GET", "orgs/acme/actions/runners", nil); h.Get("Link") != "" {
		t.Errorf("one page has a Link header: %q", h.Get("Link"))
	}
}

func TestAuthentication(t *testing.T) {
	s := newTestServer(t)
	for _, auth := range []string{"", "Bearer nope", "token nope", "Basic " + testToken} {
		req, _ := http.NewRequest("GET", s.URL()+"orgs/acme/actions/runners", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		apiHeaders(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	if n := s.Calls(EndpointListRunners); n != 4 {
		t.Errorf("calls %d, want 4 (refused ones count)", n)
	}
	code, _, body := call(t, s, "GET", "nowhere", nil)
	if code != http.StatusNotFound || decode[map[string]any](t, body)["message"] != "Not Found" {
		t.Errorf("unknown path: %d %s", code, body)
	}
}

// The token exchange: an App JWT for a registered installation gets a
// token with expires_at, good until the fake's clock passes it.
func TestAccessTokens(t *testing.T) {
	s := newTestServer(t)
	key := testKey()
	s.RegisterApp(7, &key.PublicKey, 70, 71)
	s.SetTokenTTL(10 * time.Minute)
	now := time.Now()
	exchange := func(inst int64, jwt string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%sapp/installations/%d/access_tokens", s.URL(), inst), nil)
		req.Header.Set("Authorization", "Bearer "+jwt)
		apiHeaders(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, decode[map[string]any](t, must(io.ReadAll(resp.Body)))
	}
	good := signJWT(key, "RS256", map[string]any{"iss": "7", "iat": now.Unix() - 30, "exp": now.Unix() + 90})
	code, tok := exchange(71, good)
	if code != http.StatusCreated {
		t.Fatalf("exchange: %d %v", code, tok)
	}
	exp, err := time.Parse(time.RFC3339, tok["expires_at"].(string))
	if err != nil || exp.Sub(now) < 9*time.Minute || exp.Sub(now) > 11*time.Minute {
		t.Errorf("expires_at %v, want about 10 minutes ahead", tok["expires_at"])
	}
	if code, _ := exchange(72, good); code != http.StatusNotFound {
		t.Errorf("another app's installation: %d, want 404", code)
	}
	if n := s.TokensIssued(); n != 1 {
		t.Errorf("issued %d, want 1", n)
	}
	use := func() int {
		req, _ := http.NewRequest("GET", s.URL()+"orgs/acme/actions/runners", nil)
		req.Header.Set("Authorization", "token "+tok["token"].(string))
		apiHeaders(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := use(); code != http.StatusOK {
		t.Errorf("using the token: %d", code)
	}
	s.SetClock(func() time.Time { return exp })
	if code := use(); code != http.StatusUnauthorized {
		t.Errorf("using it at expires_at: %d, want 401", code)
	}
}

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func signJWT(key *rsa.PrivateKey, alg string, claims map[string]any) string {
	enc := base64.RawURLEncoding.EncodeToString
	head := enc(must(json.Marshal(map[string]string{"alg": alg, "typ": "JWT"}))) + "." + enc(must(json.Marshal(claims)))
	digest := sha256.Sum256([]byte(head))
	sig := must(rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:]))
	return head + "." + enc(sig)
}

func TestVerifyJWT(t *testing.T) {
	key, other := testKey(), must(rsa.GenerateKey(rand.Reader, 1024))
	apps := map[int64]*app{7: {id: 7, pub: &key.PublicKey}}
	now := time.Now()
	at := now.Unix()
	for _, tc := range []struct {
		name string
		jwt  string
		ok   bool
	}{
		{"ghinstallation's shape", signJWT(key, "RS256", map[string]any{"iss": "7", "iat": at - 30, "exp": at + 90}), true},
		{"numeric iss", signJWT(key, "RS256", map[string]any{"iss": 7, "iat": at, "exp": at + 600}), true},
		{"other key", signJWT(other, "RS256", map[string]any{"iss": "7", "iat": at, "exp": at + 60}), false},
		{"unknown app", signJWT(key, "RS256", map[string]any{"iss": "8", "iat": at, "exp": at + 60}), false},
		{"not RS256", signJWT(key, "HS256", map[string]any{"iss": "7", "iat": at, "exp": at + 60}), false},
		{"expired", signJWT(key, "RS256", map[string]any{"iss": "7", "iat": at - 700, "exp": at - 100}), false},
		{"lives over 10 minutes", signJWT(key, "RS256", map[string]any{"iss": "7", "iat": at, "exp": at + 601}), false},
		{"issued in the future", signJWT(key, "RS256", map[string]any{"iss": "7", "iat": at + 120, "exp": at + 300}), false},
		{"fractional exp", signJWT(key, "RS256", map[string]any{"iss": "7", "iat": at, "exp": float64(at) + 60.5}), false},
		{"no exp", signJWT(key, "RS256", map[string]any{"iss": "7", "iat": at}), false},
		{"garbage", "a.b.c", false},
		{"two parts", "a.b", false},
	} {
		id, err := verifyJWT(tc.jwt, apps, now)
		if tc.ok != (err == nil) || (tc.ok && id != 7) {
			t.Errorf("%s: app %d, err %v; want ok=%v", tc.name, id, err, tc.ok)
		}
	}
}

func TestFaultInjection(t *testing.T) {
	s := newTestServer(t)
	r := jit(t, s, "orgs/acme", "r", "kiln")
	get := fmt.Sprintf("orgs/acme/actions/runners/%d", r.Runner.ID)
	s.FailNext("*-runner", http.StatusBadGateway, 2)
	for i, want := range []int{502, 502, 200} {
		if code, _, _ := call(t, s, "GET", get, nil); code != want {
			t.Errorf("get %d: %d, want %d", i, code, want)
		}
	}
	if code, _, _ := call(t, s, "GET", "orgs/acme/actions/runners", nil); code != http.StatusOK {
		t.Errorf("list-runners does not match *-runner: %d", code)
	}
	// Broker endpoints are never faulted.
	s.FailNext("*", http.StatusInternalServerError, 1)
	if code, _ := registerRunner(t, s, r.EncodedJITConfig); code != http.StatusOK {
		t.Errorf("register under FailNext(*): %d", code)
	}
	code, _, body := call(t, s, "GET", "orgs/acme/actions/runners", nil)
	if code != http.StatusInternalServerError || decode[map[string]any](t, body)["message"] != "Server Error" {
		t.Errorf("FailNext(*): %d %s", code, body)
	}
	if n := s.Calls(EndpointGetRunner); n != 3 {
		t.Errorf("get-runner calls %d, want 3", n)
	}
}

func TestRateLimitHeaders(t *testing.T) {
	s := newTestServer(t)
	_, h1, _ := call(t, s, "GET", "orgs/acme/actions/runners", nil)
	_, h2, _ := call(t, s, "GET", "orgs/acme/actions/runners", nil)
	r1, _ := strconv.Atoi(h1.Get("X-RateLimit-Remaining"))
	r2, _ := strconv.Atoi(h2.Get("X-RateLimit-Remaining"))
	if h1.Get("X-RateLimit-Limit") != "5000" || r1 != 4999 || r2 != 4998 || h1.Get("X-RateLimit-Reset") == "" {
		t.Errorf("headers %v then %v", h1, h2)
	}

	reset := time.Now().Add(time.Minute).Truncate(time.Second)
	s.RateLimit(2, reset)
	for range 2 {
		code, h, body := call(t, s, "GET", "orgs/acme/actions/runners", nil)
		if code != http.StatusForbidden || h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Reset") != strconv.FormatInt(reset.Unix(), 10) ||
			!strings.Contains(string(body), "rate limit") {
			t.Errorf("rate limited: %d %v %s", code, h, body)
		}
	}
	if code, _, _ := call(t, s, "GET", "orgs/acme/actions/runners", nil); code != http.StatusOK {
		t.Errorf("after the limit: %d", code)
	}

	s.SecondaryRateLimit(1, http.StatusTooManyRequests, 42*time.Second)
	code, h, body := call(t, s, "GET", "orgs/acme/actions/runners", nil)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") != "42" || !strings.Contains(string(body), "secondary-rate-limits") {
		t.Errorf("secondary: %d %v %s", code, h, body)
	}
}

// apiHeaders sets the headers GitHub's documentation asks every request
// to send (the fake refuses a request without them).
func apiHeaders(req *http.Request) {
	if !strings.Contains(req.URL.Path, "/_fake/") {
		req.Header.Set("Accept", MediaType)
		req.Header.Set("X-GitHub-Api-Version", APIVersion)
	}
}

// The call log names each API request's endpoint and sender, in order, and
// a commit status records who sent it: a test with several clients (the
// replicas of a control plane) tells which of them called.
func TestCallLogNamesTheSender(t *testing.T) {
	s := newTestServer(t)
	call(t, s, "GET", "repos/o/r/actions/runners", nil)
	sha := strings.Repeat("a", 40)
	if code, _, body := call(t, s, "POST", "repos/o/r/statuses/"+sha, map[string]string{"state": "success", "context": "kiln"}); code != http.StatusCreated {
		t.Fatalf("create status: %d %s", code, body)
	}
	log := s.CallLog()
	if len(log) != 2 || log[0].Endpoint != EndpointListRunners || log[1].Endpoint != EndpointCreateStatus {
		t.Fatalf("call log %+v", log)
	}
	for _, c := range log {
		if c.Remote != "127.0.0.1" || c.At.IsZero() {
			t.Errorf("call %+v: want the sender 127.0.0.1 and a time", c)
		}
	}
	if st := s.Statuses(); len(st) != 1 || st[0].Remote != "127.0.0.1" {
		t.Errorf("statuses %+v: want one, from 127.0.0.1", st)
	}
}
