package fakegithub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// installationToken gets an installation token of a registered App.
func installationToken(t *testing.T, s *Server) string {
	t.Helper()
	key := testKey()
	s.RegisterApp(9, &key.PublicKey, 90)
	now := time.Now()
	req, _ := http.NewRequest("POST", s.URL()+"app/installations/90/access_tokens", nil)
	req.Header.Set("Authorization", "Bearer "+signJWT(key, "RS256", map[string]any{"iss": "9", "iat": now.Unix() - 30, "exp": now.Unix() + 90}))
	apiHeaders(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return decode[map[string]any](t, must(io.ReadAll(resp.Body)))["token"].(string)
}

func callAs(t *testing.T, s *Server, token, method, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, s.URL()+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	apiHeaders(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, decode[map[string]any](t, must(io.ReadAll(resp.Body)))
}

const checkSHA = "0123456789abcdef0123456789abcdef01234567"

// Check runs: only an installation may write them; GitHub's rules hold
// (422 with its error shapes); each accepted change is recorded.
func TestCheckRuns(t *testing.T) {
	s := newTestServer(t)
	tok := installationToken(t, s)

	code, body := callAs(t, s, testToken, "POST", "repos/acme/app/check-runs", map[string]any{"name": "kiln", "head_sha": checkSHA})
	if code != http.StatusForbidden || body["message"] != "You must authenticate via a GitHub App." {
		t.Errorf("with a personal token: %d %v", code, body)
	}

	for _, tc := range []struct {
		name string
		body map[string]any
		msg  string
	}{
		{"no name", map[string]any{"head_sha": checkSHA}, `"name" wasn't supplied`},
		{"no head_sha", map[string]any{"name": "kiln"}, `"head_sha" wasn't supplied`},
		{"short sha", map[string]any{"name": "kiln", "head_sha": "0123456"}, "Validation Failed"},
		{"bad status", map[string]any{"name": "kiln", "head_sha": checkSHA, "status": "running"}, "properties/status"},
		{"bad conclusion", map[string]any{"name": "kiln", "head_sha": checkSHA, "conclusion": "canceled"}, "properties/conclusion"},
		{"completed without conclusion", map[string]any{"name": "kiln", "head_sha": checkSHA, "status": "completed"}, "Validation Failed"},
		{"output without summary", map[string]any{"name": "kiln", "head_sha": checkSHA, "output": map[string]any{"title": "t"}}, `"summary" wasn't supplied`},
		{"summary too long", map[string]any{"name": "kiln", "head_sha": checkSHA, "output": map[string]any{"title": "t", "summary": strings.Repeat("é", checkOutputMax+1)}}, "Validation Failed"},
	} {
		code, body := callAs(t, s, tok, "POST", "repos/acme/app/check-runs", tc.body)
		if code != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(body["message"]), tc.msg) {
			t.Errorf("%s: %d %v, want 422 %q", tc.name, code, body, tc.msg)
		}
	}
	if n := len(s.CheckRunEvents()); n != 0 {
		t.Fatalf("%d events recorded from refused requests", n)
	}

	code, body = callAs(t, s, tok, "POST", "repos/acme/app/check-runs", map[string]any{"name": "kiln", "head_sha": checkSHA, "details_url": "https://kiln.example/builds/1"})
	if code != http.StatusCreated || body["status"] != "queued" {
		t.Fatalf("create: %d %v", code, body)
	}
	id := int64(body["id"].(float64))
	path := fmt.Sprintf("repos/acme/app/check-runs/%d", id)
	if code, body := callAs(t, s, tok, "PATCH", path, map[string]any{"status": "in_progress"}); code != http.StatusOK || body["status"] != "in_progress" {
		t.Fatalf("in progress: %d %v", code, body)
	}
	if code, _ := callAs(t, s, tok, "PATCH", fmt.Sprintf("repos/acme/other/check-runs/%d", id), map[string]any{"status": "queued"}); code != http.StatusNotFound {
		t.Errorf("another repository's check run: %d, want 404", code)
	}
	if code, _ := callAs(t, s, tok, "PATCH", path, map[string]any{"status": "completed"}); code != http.StatusUnprocessableEntity {
		t.Errorf("completed without a conclusion: %d, want 422", code)
	}
	code, body = callAs(t, s, tok, "PATCH", path, map[string]any{"conclusion": "failure", "output": map[string]any{"title": "failed", "summary": "step 'test'"}})
	if code != http.StatusOK || body["status"] != "completed" || body["conclusion"] != "failure" || body["completed_at"] == nil {
		t.Fatalf("a conclusion completes it: %d %v", code, body)
	}
	if code, body := callAs(t, s, testToken, "GET", path, nil); code != http.StatusOK || body["output"].(map[string]any)["summary"] != "step 'test'" {
		t.Errorf("get: %d %v", code, body)
	}
	var seq []string
	for _, e := range s.CheckRunEvents() {
		seq = append(seq, e.Method+" "+e.Run.Status+" "+e.Run.Conclusion)
	}
	if got, want := strings.Join(seq, ", "), "POST queued , PATCH in_progress , PATCH completed failure"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if runs := s.CheckRuns(); len(runs) != 1 || runs[0].DetailsURL != "https://kiln.example/builds/1" || runs[0].Title != "failed" {
		t.Errorf("runs: %+v", runs)
	}
}
