package github_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

// headerTap records the headers of every request a client sends.
type headerTap struct {
	mu   sync.Mutex
	seen []string // "METHOD path: Accept=…; X-GitHub-Api-Version=…"
}

func (h *headerTap) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Method+" "+r.URL.Path+": Accept="+strings.Join(r.Header.Values("Accept"), ",")+"; X-GitHub-Api-Version="+r.Header.Get("X-GitHub-Api-Version"))
	h.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// TestDocumentedHeaders: every request the client sends, with an App (the
// installation token's exchange too) or a token, carries the Accept and
// X-GitHub-Api-Version GitHub's documentation asks for, not the older
// application/vnd.github.v3+json; and the fake refuses a request that
// does not.
func TestDocumentedHeaders(t *testing.T) {
	s := newFake(t)
	for _, auth := range []string{"app", "token"} {
		t.Run(auth, func(t *testing.T) {
			tap := &headerTap{}
			cfg := github.Config{BaseURL: s.URL(), Token: pat, HTTPClient: &http.Client{Transport: tap}}
			if auth == "app" {
				cfg = appConfig(s)
				cfg.HTTPClient = &http.Client{Transport: tap}
			}
			c := newClient(t, cfg)
			if _, err := c.ListRunners(context.Background(), github.Scope{Owner: "acme"}); err != nil {
				t.Fatal(err)
			}
			want := "Accept=" + github.MediaType + "; X-GitHub-Api-Version=" + github.APIVersion
			if len(tap.seen) < 1 || auth == "app" && len(tap.seen) < 2 {
				t.Fatalf("requests seen: %q", tap.seen)
			}
			for _, got := range tap.seen {
				if !strings.HasSuffix(got, ": "+want) {
					t.Errorf("request %q; want %s", got, want)
				}
			}
		})
	}

	for _, tc := range []struct {
		name, accept, version, msg string
	}{
		{"the v3 media type", "application/vnd.github.v3+json", github.APIVersion, `Accept "application/vnd.github.v3+json": send Accept: application/vnd.github+json`},
		{"no version", fakegithub.MediaType, "", "X-GitHub-Api-Version is missing"},
		{"an unsupported version", fakegithub.MediaType, "2021-01-01", `API version "2021-01-01" is not supported`},
	} {
		t.Run("fake refuses "+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.URL()+"orgs/acme/actions/runners", nil)
			req.Header.Set("Authorization", "Bearer "+pat)
			req.Header.Set("Accept", tc.accept)
			if tc.version != "" {
				req.Header.Set("X-GitHub-Api-Version", tc.version)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Message string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.Message, tc.msg) {
				t.Errorf("HTTP %d %q; want 400 saying %q", resp.StatusCode, body.Message, tc.msg)
			}
		})
	}
}
