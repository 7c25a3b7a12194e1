// Package ghhook makes GitHub webhook deliveries for the benchmarks: the
// real example payloads of @octokit/webhooks-examples that Kiln's tests
// keep in internal/forge/testdata/github (see its README.md), adjusted,
// and signed as GitHub signs them (HMAC-SHA256 of the body).
package ghhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
)

// Fixtures finds internal/forge/testdata/github from the working
// directory up: the benchmarks run from the repository.
func Fixtures() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "internal", "forge", "testdata", "github")
		if _, err := os.Stat(filepath.Join(p, "push.0.json")); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("internal/forge/testdata/github not found above the working directory: run the benchmark from Kiln's repository")
		}
		dir = parent
	}
}

// Fixture is the example named name in the directory dir (Fixtures),
// decoded.
func Fixture(dir, name string) (map[string]any, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(data, &m)
}

// Push is the real `push` example (push.0.json in dir), of ref to the
// commit after.
func Push(dir, ref, after string) ([]byte, error) {
	m, err := Fixture(dir, "push.0.json")
	if err != nil {
		return nil, err
	}
	m["ref"], m["after"], m["deleted"] = ref, after, false
	if hc, ok := m["head_commit"].(map[string]any); ok {
		hc["id"] = after // as in every real push of a branch
	}
	return json.Marshal(m)
}

// Request is the POST of a delivery of event with id delivery to url,
// signed with secret in X-Hub-Signature-256, as GitHub sends it.
func Request(url, secret, event, delivery string, body []byte) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	return req, nil
}
