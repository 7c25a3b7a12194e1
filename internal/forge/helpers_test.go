package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"testing"
)

// testSecret is the webhook secret every delivery in these tests is signed
// with, the one GitHub's documentation uses for its own example.
const testSecret = "It's a Secret to Everybody"

// hmacHex is the hex HMAC-SHA256 of body keyed with secret, as GitHub and
// Gitea compute it.
func hmacHex(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// githubHeader is the header GitHub sends with body, signed with testSecret.
func githubHeader(event string, body []byte) http.Header {
	h := http.Header{}
	h.Set("X-GitHub-Event", event)
	h.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	h.Set("X-GitHub-Hook-ID", "292430182")
	h.Set("X-Hub-Signature-256", "sha256="+hmacHex(testSecret, body))
	h.Set("User-Agent", "GitHub-Hookshot/044aadd")
	h.Set("Content-Type", "application/json")
	return h
}

// giteaHeader is the header Gitea sends with body, signed with testSecret:
// its own signature and GitHub's, and the event under both names.
func giteaHeader(event string, body []byte) http.Header {
	h := http.Header{}
	sig := hmacHex(testSecret, body)
	h.Set("X-Gitea-Event", event)
	h.Set("X-Gitea-Delivery", "9f4e5a3d-60c8-4b2e-8d7f-1a2b3c4d5e6f")
	h.Set("X-Gitea-Signature", sig)
	h.Set("X-GitHub-Event", event)
	h.Set("X-Hub-Signature-256", "sha256="+sig)
	h.Set("Content-Type", "application/json")
	return h
}

// gitlabHeader is the header GitLab 17.4+ sends, with testSecret as token.
func gitlabHeader(event string) http.Header {
	h := http.Header{}
	h.Set("X-Gitlab-Event", event)
	h.Set("X-Gitlab-Token", testSecret)
	h.Set("X-Gitlab-Instance", "https://gitlab.example.com")
	h.Set("X-Gitlab-Webhook-UUID", "0d2a7e1c-5b3f-4a8e-9c6d-2f1e0b9a8c7d")
	h.Set("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e")
	h.Set("Idempotency-Key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f")
	h.Set("Content-Type", "application/json")
	return h
}

// without returns a copy of h without the named headers.
func without(h http.Header, names ...string) http.Header {
	h = h.Clone()
	for _, n := range names {
		h.Del(n)
	}
	return h
}

// with returns a copy of h with name set to value.
func with(h http.Header, name, value string) http.Header {
	h = h.Clone()
	h.Set(name, value)
	return h
}

func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
