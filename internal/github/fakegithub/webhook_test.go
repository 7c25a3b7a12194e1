package fakegithub

import (
	"encoding/json"
	"io"
	"slices"
	"testing"

	gh "github.com/google/go-github/v92/github"
)

// The payloads decode as go-github's WorkflowJobEvent with the job's own
// values, and keep the rest of GitHub's real example.
func TestWorkflowJobPayload(t *testing.T) {
	s := newTestServer(t)
	s.RegisterApp(1, &testKey().PublicKey, 555)
	queued := s.QueueJob("acme", "widgets", []string{"self-hosted", "kiln"})
	r := jit(t, s, "repos/acme/widgets", "kiln-9", "self-hosted", "kiln")
	registerRunner(t, s, r.EncodedJITConfig)
	running, _ := s.Job(queued.ID)
	call(t, s, "POST", "/_fake/runner/complete", map[string]any{"runner_id": r.Runner.ID, "conclusion": "success"})
	done, _ := s.Job(queued.ID)

	for _, tc := range []struct {
		action     string
		job        Job
		runner     string
		conclusion string
	}{
		{"queued", queued, "", ""},
		{"in_progress", running, "kiln-9", ""},
		{"completed", done, "kiln-9", "success"},
	} {
		t.Run(tc.action, func(t *testing.T) {
			body := s.WorkflowJobPayload(tc.job, tc.action)
			var ev gh.WorkflowJobEvent
			if err := json.Unmarshal(body, &ev); err != nil {
				t.Fatal(err)
			}
			wj := ev.GetWorkflowJob()
			if ev.GetAction() != tc.action || wj.GetID() != tc.job.ID || wj.GetRunID() != tc.job.RunID || wj.GetStatus() != tc.action {
				t.Errorf("action %q job %d run %d status %q", ev.GetAction(), wj.GetID(), wj.GetRunID(), wj.GetStatus())
			}
			if !slices.Equal(wj.Labels, tc.job.Labels) || wj.GetRunnerName() != tc.runner || wj.GetConclusion() != tc.conclusion || wj.GetHTMLURL() != tc.job.HTMLURL {
				t.Errorf("labels %v runner %q conclusion %q url %q", wj.Labels, wj.GetRunnerName(), wj.GetConclusion(), wj.GetHTMLURL())
			}
			if tc.action != "queued" && wj.GetRunnerID() != r.Runner.ID {
				t.Errorf("runner id %d, want %d", wj.GetRunnerID(), r.Runner.ID)
			}
			repo := ev.GetRepo()
			if repo.GetFullName() != "acme/widgets" || repo.GetName() != "widgets" || repo.GetOwner().GetLogin() != "acme" || repo.GetHTMLURL() != "https://github.com/acme/widgets" {
				t.Errorf("repository %s %s %s %s", repo.GetFullName(), repo.GetName(), repo.GetOwner().GetLogin(), repo.GetHTMLURL())
			}
			if ev.GetInstallation().GetID() != 555 {
				t.Errorf("installation %d, want 555", ev.GetInstallation().GetID())
			}
			if ev.Org != nil && ev.Org.GetLogin() != "acme" {
				t.Errorf("organization %q", ev.Org.GetLogin())
			}
			if ev.GetSender().GetLogin() == "" {
				t.Error("the example's sender is gone")
			}
			// Every top-level key of the real example is still there.
			var got, example map[string]json.RawMessage
			_ = json.Unmarshal(body, &got)
			_ = json.Unmarshal(must(examples.ReadFile("testdata/workflow_job."+tc.action+".json")), &example)
			for k := range example {
				if _, ok := got[k]; !ok {
					t.Errorf("key %q of the example is missing", k)
				}
			}
		})
	}

	// Without an App installation, no installation key.
	noApp := queued
	noApp.InstallationID = 0
	var m map[string]any
	_ = json.Unmarshal(s.WorkflowJobPayload(noApp, "queued"), &m)
	if _, ok := m["installation"]; ok {
		t.Error("installation present for a job without one")
	}
}

func TestDelivery(t *testing.T) {
	body := []byte(`{"action":"queued"}`)
	// The example from GitHub's documentation on validating deliveries.
	if got := SignPayload("It's a Secret to Everybody", []byte("Hello, World!")); got != "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17" {
		t.Errorf("SignPayload = %s", got)
	}
	req, err := Delivery("http://127.0.0.1:1/hooks/github", "workflow_job", "s3cret", body)
	if err != nil {
		t.Fatal(err)
	}
	h := req.Header
	if h.Get("X-GitHub-Event") != "workflow_job" || len(h.Get("X-GitHub-Delivery")) != 36 || h.Get("X-Hub-Signature-256") != SignPayload("s3cret", body) {
		t.Errorf("headers %v", h)
	}
	got, _ := io.ReadAll(req.Body)
	again, _ := req.GetBody()
	replay, _ := io.ReadAll(again)
	if string(got) != string(body) || string(replay) != string(body) {
		t.Errorf("body %q, replay %q", got, replay)
	}
}
