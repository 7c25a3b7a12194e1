package fakegithub

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The real example payloads of @octokit/webhooks-examples; see
// testdata/README.md.
//
//go:embed testdata/workflow_job.*.json
var examples embed.FS

// WorkflowJobPayload builds the body of a workflow_job webhook for job, for
// action "queued", "in_progress" or "completed", as GitHub would deliver it
// now (sign it as GitHub does: HMAC-SHA256 in X-Hub-Signature-256). It
// starts from a real example payload and replaces the job's ids, status,
// conclusion, labels, runner and URLs, the repository's and organization's
// names, and installation.id (removed when the job has no installation);
// the rest is GitHub's own. The job is taken as given, so a test can build
// a delivery that is stale or out of order.
func (s *Server) WorkflowJobPayload(job Job, action string) []byte {
	raw, err := examples.ReadFile("testdata/workflow_job." + action + ".json")
	if err != nil {
		panic(fmt.Sprintf("fakegithub: WorkflowJobPayload: no example for action %q", action))
	}
	var p map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // keep the example's other ids exact
	if err := d.Decode(&p); err != nil {
		panic("fakegithub: WorkflowJobPayload: " + err.Error())
	}
	p["action"] = action

	full := job.Owner + "/" + job.Repo
	repo := p["repository"].(map[string]any)
	oldFull := repo["full_name"].(string)
	oldOwner := repo["owner"].(map[string]any)["login"].(string)
	p["repository"] = renameAll(repo, oldFull, full)
	repo = p["repository"].(map[string]any)
	repo["name"] = job.Repo
	s.mu.Lock()
	repo["id"] = s.repoJSON(job.Owner, job.Repo)["id"]
	s.mu.Unlock()
	repo["owner"] = renameAll(repo["owner"], "/"+oldOwner, "/"+job.Owner)
	repo["owner"].(map[string]any)["login"] = job.Owner
	if org, ok := p["organization"]; ok {
		org := renameAll(org, "/"+org.(map[string]any)["login"].(string), "/"+job.Owner).(map[string]any)
		org["login"] = job.Owner
		p["organization"] = org
	}
	if job.InstallationID == 0 {
		delete(p, "installation")
	} else {
		p["installation"] = map[string]any{
			"id":      job.InstallationID,
			"node_id": base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "023:IntegrationInstallation%d", job.InstallationID)),
		}
	}

	wj := p["workflow_job"].(map[string]any)
	api := s.URL() + "repos/" + full + "/actions"
	wj["id"] = job.ID
	wj["run_id"] = job.RunID
	wj["run_url"] = fmt.Sprintf("%s/runs/%d", api, job.RunID)
	wj["url"] = fmt.Sprintf("%s/jobs/%d", api, job.ID)
	wj["check_run_url"] = fmt.Sprintf("%s/check-runs/%d", strings.TrimSuffix(api, "/actions"), job.ID)
	wj["html_url"] = job.HTMLURL
	wj["run_attempt"] = 1
	wj["status"] = action
	wj["conclusion"] = nil
	if action == "completed" {
		wj["conclusion"] = stringOrNil(job.Conclusion)
	}
	wj["name"] = job.Name
	wj["workflow_name"] = job.WorkflowName
	wj["head_sha"] = job.HeadSHA
	wj["head_branch"] = job.HeadBranch
	wj["labels"] = append([]string{}, job.Labels...)
	wj["created_at"] = timeOrNil(job.CreatedAt)
	wj["started_at"] = timeOrNil(job.StartedAt)
	wj["completed_at"] = timeOrNil(job.CompletedAt)
	if action == "queued" {
		// A queued job has no runner yet, whatever the example says.
		wj["started_at"] = timeOrNil(job.CreatedAt)
		wj["completed_at"] = nil
		wj["steps"] = []any{}
		for _, k := range []string{"runner_id", "runner_name", "runner_group_id", "runner_group_name"} {
			wj[k] = nil
		}
	} else {
		wj["runner_id"] = int64OrNil(job.RunnerID)
		wj["runner_name"] = stringOrNil(job.RunnerName)
		wj["runner_group_id"] = int64OrNil(job.RunnerGroupID)
		wj["runner_group_name"] = nil
		if job.RunnerGroupID != 0 {
			wj["runner_group_name"] = "Default"
		}
	}
	out, err := json.Marshal(p)
	if err != nil {
		panic("fakegithub: WorkflowJobPayload: " + err.Error())
	}
	return out
}

// renameAll replaces old with new in every string of a decoded JSON value:
// the many *_url fields of a repository or organization.
func renameAll(v any, old, new string) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = renameAll(e, old, new)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = renameAll(e, old, new)
		}
		return v
	case string:
		return strings.ReplaceAll(v, old, new)
	}
	return v
}

// SignPayload is the X-Hub-Signature-256 GitHub sends with body for a
// webhook with this secret: "sha256=" and the hex HMAC-SHA256.
func SignPayload(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Delivery builds the POST GitHub makes to deliver a webhook: its headers
// (X-GitHub-Event, a fresh X-GitHub-Delivery id, X-Hub-Signature-256 when
// secret is not empty, GitHub's User-Agent) and body. Send it twice to
// test a duplicate delivery: the delivery id stays the same.
func Delivery(url, event, secret string, body []byte) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/kiln-fake")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:]))
	req.Header.Set("X-GitHub-Hook-ID", "1")
	if secret != "" {
		req.Header.Set("X-Hub-Signature-256", SignPayload(secret, body))
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return req, nil
}
