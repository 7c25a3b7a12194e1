package forge

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// workflowJobFixtures are the real workflow_job payloads of
// @octokit/webhooks-examples that internal/github/fakegithub delivers.
const workflowJobFixtures = "../github/fakegithub/testdata/workflow_job.*.json"

func workflowJobFixture(t *testing.T, action string) []byte {
	t.Helper()
	return readFixture(t, filepath.Join("..", "github", "fakegithub", "testdata", "workflow_job."+action+".json"))
}

// editJSON decodes a payload, lets f change it and encodes it again.
func editJSON(t *testing.T, body []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseWorkflowJobExamples(t *testing.T) {
	for _, tc := range []struct {
		action string
		want   WorkflowJob
	}{
		{"queued", WorkflowJob{Action: "queued", ID: 289782451, RunID: 2202229078, RunAttempt: 1, Status: "queued", Name: "update", WorkflowName: "CodeQL",
			Labels: []string{"ubuntu-latest"}, Owner: "Codertocat", Repo: "Hello-World", DefaultBranch: "master", InstallationID: 3456996,
			HTMLURL: "https://github.com/octo-org/octo-repo/runs/1291536064", HeadBranch: "main", HeadSHA: "3484a3fb816e0859fd6e1cea078d76385ff50625"}},
		{"in_progress", WorkflowJob{Action: "in_progress", Status: "in_progress"}},
		{"completed", WorkflowJob{Action: "completed", Status: "completed", Conclusion: "failure"}},
	} {
		t.Run(tc.action, func(t *testing.T) {
			body := workflowJobFixture(t, tc.action)
			ev, err := Parse("github", githubHeader("workflow_job", body), body, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			w := ev.WorkflowJob
			if ev.Kind != KindWorkflowJob || w == nil || ev.Push != nil {
				t.Fatalf("event %+v", ev)
			}
			if w.Action != tc.want.Action || w.Status != tc.want.Status || w.Conclusion != tc.want.Conclusion || w.ID <= 0 || w.RunID <= 0 || w.Owner == "" || w.Repo == "" {
				t.Fatalf("workflow job %+v, want %+v", w, tc.want)
			}
			if tc.action == "queued" {
				if w.ID != tc.want.ID || w.RunID != tc.want.RunID || !slices.Equal(w.Labels, tc.want.Labels) || w.Owner != tc.want.Owner || w.Repo != tc.want.Repo ||
					w.InstallationID != tc.want.InstallationID || w.HTMLURL != tc.want.HTMLURL || w.HeadBranch != tc.want.HeadBranch ||
					w.HeadSHA != tc.want.HeadSHA || w.DefaultBranch != tc.want.DefaultBranch || w.WorkflowName != tc.want.WorkflowName || w.RunAttempt != 1 {
					t.Fatalf("queued job %+v\nwant %+v", w, tc.want)
				}
				// The example names a runner; a queued job has none yet.
				if w.RunnerName != "" || w.RunnerID != 0 {
					t.Fatalf("queued job with runner %d %q", w.RunnerID, w.RunnerName)
				}
			} else if w.RunnerName == "" || w.RunnerID == 0 {
				t.Fatalf("%s job without its runner: %+v", tc.action, w)
			}
		})
	}
}

func TestParseWorkflowJobWithoutInstallation(t *testing.T) {
	// The completed example is an organization's own webhook: no App.
	body := editJSON(t, workflowJobFixture(t, "queued"), func(m map[string]any) { delete(m, "installation") })
	ev, err := Parse("github", githubHeader("workflow_job", body), body, testSecret)
	if err != nil || ev.WorkflowJob.InstallationID != 0 {
		t.Fatalf("Parse = %+v, %v", ev, err)
	}
}

func TestParseWorkflowJobRefusesMalformed(t *testing.T) {
	base := workflowJobFixture(t, "queued")
	job := func(f func(j map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { f(m["workflow_job"].(map[string]any)) }
	}
	many := make([]any, MaxWorkflowJobLabels+1)
	for i := range many {
		many[i] = "l"
	}
	for _, tc := range []struct {
		name, msg string
		edit      func(m map[string]any)
	}{
		{"no action", `missing "action"`, func(m map[string]any) { delete(m, "action") }},
		{"no job", `missing "workflow_job"`, func(m map[string]any) { delete(m, "workflow_job") }},
		{"zero id", `"workflow_job.id"`, job(func(j map[string]any) { j["id"] = 0 })},
		{"string id", `"workflow_job.id" is a JSON string`, job(func(j map[string]any) { j["id"] = "7" })},
		{"no run id", `"workflow_job.run_id"`, job(func(j map[string]any) { delete(j, "run_id") })},
		{"labels not strings", `"workflow_job.labels" is a JSON number`, job(func(j map[string]any) { j["labels"] = []any{1} })},
		{"too many labels", "more than 100", job(func(j map[string]any) { j["labels"] = many })},
		{"no repository", `"repository.full_name"`, func(m map[string]any) { delete(m, "repository") }},
		{"bad repository", `"repository.full_name"`, func(m map[string]any) {
			m["repository"].(map[string]any)["full_name"] = "a/b/c"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := editJSON(t, base, tc.edit)
			ev, err := Parse("github", githubHeader("workflow_job", body), body, testSecret)
			if !errors.Is(err, ErrMalformed) || ev != nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Parse = %+v, %v; want ErrMalformed saying %q", ev, err, tc.msg)
			}
		})
	}
	// A bad signature is refused before the payload is read.
	body := workflowJobFixture(t, "queued")
	if _, err := Parse("github", githubHeader("workflow_job", body), append(body, ' '), testSecret); !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered body: %v", err)
	}
}
