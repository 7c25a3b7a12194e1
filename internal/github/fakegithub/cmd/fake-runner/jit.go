package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// jitRunner is what the runner needs from a JIT configuration: the
// ".runner" file GitHub (and fakegithub) encodes into it. The credential
// (".credentials") stays inside the encoded configuration, which the
// broker checks as a whole.
type jitRunner struct {
	AgentID   int64  `json:"agentId"`
	AgentName string `json:"agentName"`
	ServerURL string `json:"serverUrl"`
	GitHubURL string `json:"gitHubUrl"`
	Ephemeral bool   `json:"ephemeral"`
}

// decodeJIT reads an encoded JIT configuration as fakegithub writes it
// (and as GitHub does): base64 of a JSON object whose ".runner" and
// ".credentials" entries are base64 of JSON files. Errors never quote
// the configuration: it is a credential.
func decodeJIT(encoded string) (jitRunner, error) {
	var r jitRunner
	all, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return r, errors.New("not base64")
	}
	var files map[string]string
	if err := json.Unmarshal(all, &files); err != nil {
		return r, errors.New("not a JSON object of files")
	}
	if files[".credentials"] == "" {
		return r, errors.New("no .credentials entry")
	}
	rf, err := base64.StdEncoding.DecodeString(files[".runner"])
	if err != nil || len(rf) == 0 {
		return r, errors.New(".runner entry missing or not base64")
	}
	if err := json.Unmarshal(rf, &r); err != nil {
		return r, fmt.Errorf(".runner entry: %w", err)
	}
	if r.AgentID == 0 || r.ServerURL == "" {
		return r, errors.New(".runner entry has no agentId or serverUrl")
	}
	u, err := url.Parse(r.ServerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return r, fmt.Errorf(".runner entry: serverUrl %q is not an http(s) URL", r.ServerURL)
	}
	return r, nil
}
