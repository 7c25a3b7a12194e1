package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// routes are every endpoint behind a token, with the kind of token it takes.
var routes = []struct {
	method, path string
	kind         store.TokenKind
}{
	{"GET", "/api/v1/projects", store.TokenAdmin},
	{"POST", "/api/v1/projects", store.TokenAdmin},
	{"GET", "/api/v1/projects/p", store.TokenAdmin},
	{"PATCH", "/api/v1/projects/p", store.TokenAdmin},
	{"DELETE", "/api/v1/projects/p", store.TokenAdmin},
	{"GET", "/api/v1/projects/p/secrets", store.TokenAdmin},
	{"PUT", "/api/v1/projects/p/secrets/S", store.TokenAdmin},
	{"DELETE", "/api/v1/projects/p/secrets/S", store.TokenAdmin},
	{"GET", "/api/v1/projects/p/registries", store.TokenAdmin},
	{"PUT", "/api/v1/projects/p/registries/registry.example.com", store.TokenAdmin},
	{"DELETE", "/api/v1/projects/p/registries/registry.example.com", store.TokenAdmin},
	{"POST", "/api/v1/projects/p/builds", store.TokenAdmin},
	{"GET", "/api/v1/builds", store.TokenAdmin},
	{"GET", "/api/v1/builds/1", store.TokenAdmin},
	{"POST", "/api/v1/builds/1/cancel", store.TokenAdmin},
	{"POST", "/api/v1/builds/1/retry", store.TokenAdmin},
	{"GET", "/api/v1/builds/1/logs", store.TokenAdmin},
	{"GET", "/api/v1/builds/1/logs/stream", store.TokenAdmin},
	{"GET", "/api/v1/tokens", store.TokenAdmin},
	{"POST", "/api/v1/tokens", store.TokenAdmin},
	{"DELETE", "/api/v1/tokens/1", store.TokenAdmin},
	{"GET", "/api/v1/agents", store.TokenAdmin},
	{"GET", "/api/v1/roles", store.TokenAdmin},
	{"PUT", "/api/v1/roles", store.TokenAdmin},
	{"DELETE", "/api/v1/roles?project=p&user=u", store.TokenAdmin},
	{"POST", protocol.Prefix + "/register", store.TokenAgent},
	{"POST", protocol.Prefix + "/claim", store.TokenAgent},
	{"POST", protocol.Prefix + "/jobs/1/heartbeat", store.TokenAgent},
	{"POST", protocol.Prefix + "/jobs/1/steps", store.TokenAgent},
	{"POST", protocol.Prefix + "/jobs/1/logs", store.TokenAgent},
	{"POST", protocol.Prefix + "/jobs/1/finish", store.TokenAgent},
}

// TestAuthEveryRoute: every endpoint refuses a request without a token, with
// a token that is not Kiln's, and with a token of the other kind, before it
// looks at the request.
func TestAuthEveryRoute(t *testing.T) {
	e := newEnv(t)
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			e := e.sub(t)
			r := e.do("", rt.method, rt.path, []byte(`{}`), nil)
			r.wantError(t, http.StatusUnauthorized, "unauthorized", "missing bearer token")
			if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="kiln"` {
				t.Errorf("WWW-Authenticate %q", got)
			}

			r = e.do("", rt.method, rt.path, []byte(`{}`), http.Header{"Authorization": {"Basic YWRtaW46YWRtaW4="}})
			r.wantError(t, http.StatusUnauthorized, "unauthorized", "missing bearer token")

			for _, garbage := range []string{"garbage", "kiln_admin_0123456789abcdef0123456789abcdef0123456789abcdef", e.admin + "x"} {
				r = e.do(garbage, rt.method, rt.path, []byte(`{}`), nil)
				r.wantError(t, http.StatusUnauthorized, "unauthorized", "invalid or revoked token")
				if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="kiln", error="invalid_token"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
			}

			other, otherKind := e.agent, store.TokenAgent
			if rt.kind == store.TokenAgent {
				other, otherKind = e.admin, store.TokenAdmin
			}
			r = e.do(other, rt.method, rt.path, []byte(`{}`), nil)
			r.wantError(t, http.StatusForbidden, "forbidden", fmt.Sprintf("a %s token cannot use this endpoint (needs a %s token)", otherKind, rt.kind))
		})
	}
	if len(e.builds()) != 0 || e.deliveries() != 0 {
		t.Error("a refused request stored something")
	}
	var ps []any
	e.api("GET", "/api/v1/projects", nil).want(t, http.StatusOK, &ps)
	if len(ps) != 0 {
		t.Errorf("projects %v", ps)
	}
}

// TestTokens: a token's secret is shown once, when it is created, and never
// listed; a revoked token no longer works; a token cannot revoke itself.
func TestTokens(t *testing.T) {
	e := newEnv(t)

	var created struct {
		Token  store.Token `json:"token"`
		Secret string      `json:"secret"`
	}
	e.api("POST", "/api/v1/tokens", map[string]string{"name": "ci-bot"}).want(t, http.StatusCreated, &created)
	if created.Token.ID == 0 || created.Token.Name != "ci-bot" || created.Token.Kind != store.TokenAdmin || !strings.HasPrefix(created.Secret, "kiln_admin_") {
		t.Fatalf("created %+v", created)
	}
	var agentTok struct {
		Token  store.Token `json:"token"`
		Secret string      `json:"secret"`
	}
	e.api("POST", "/api/v1/tokens", map[string]string{"name": "host-7", "kind": "agent"}).want(t, http.StatusCreated, &agentTok)
	if agentTok.Token.Kind != store.TokenAgent || !strings.HasPrefix(agentTok.Secret, "kiln_agent_") {
		t.Fatalf("created %+v", agentTok)
	}

	// The new tokens work, each on its own side only.
	e.do(created.Secret, "GET", "/api/v1/projects", nil, nil).want(t, http.StatusOK, nil)
	e.do(agentTok.Secret, "POST", protocol.Prefix+"/register", protocol.RegisterRequest{ID: "host-7", Capacity: 1}, nil).want(t, http.StatusOK, nil)
	e.do(agentTok.Secret, "GET", "/api/v1/tokens", nil, nil).wantError(t, http.StatusForbidden, "forbidden")

	// The list shows every live token, never a secret or a hash.
	r := e.api("GET", "/api/v1/tokens", nil)
	var list []map[string]any
	r.want(t, http.StatusOK, &list)
	names := map[string]float64{}
	for _, tok := range list {
		names[tok["name"].(string)] = tok["id"].(float64)
		for k := range tok {
			switch k {
			case "id", "name", "kind", "created_at", "last_used":
			default:
				t.Errorf("token listed with field %q: %v", k, tok)
			}
		}
	}
	if len(list) != 4 || names["admin"] == 0 || names["local-agent"] == 0 || names["ci-bot"] == 0 || names["host-7"] == 0 {
		t.Errorf("tokens %s", r.body)
	}
	for _, secret := range []string{e.admin, e.agent, created.Secret, agentTok.Secret} {
		if strings.Contains(string(r.body), secret) || strings.Contains(string(r.body), secret[len(secret)-16:]) {
			t.Errorf("the token list shows a secret: %s", r.body)
		}
	}

	e.do(created.Secret, "DELETE", fmt.Sprintf("/api/v1/tokens/%d", created.Token.ID), nil, nil).wantError(t, http.StatusBadRequest, "invalid", "a token cannot revoke itself")
	e.refuse(e.admin, []refusal{
		{"revoke unknown", "DELETE", "/api/v1/tokens/999", nil, 404, "not_found", "not found"},
		{"revoke non-numeric id", "DELETE", "/api/v1/tokens/abc", nil, 400, "bad_request", `invalid id "abc"`},
		{"revoke id 0", "DELETE", "/api/v1/tokens/0", nil, 400, "bad_request", `invalid id "0"`},
		{"create without a name", "POST", "/api/v1/tokens", map[string]string{"kind": "agent"}, 400, "invalid", "name: required"},
		{"create of another kind", "POST", "/api/v1/tokens", map[string]string{"name": "x", "kind": "root"}, 400, "invalid", `kind: want "admin" or "agent"`},
		{"create with an unknown field", "POST", "/api/v1/tokens", map[string]string{"name": "x", "secret": "mine"}, 400, "bad_request", `unknown field "secret"`},
	}, nil)
	// The refused requests changed nothing.
	var after []map[string]any
	e.api("GET", "/api/v1/tokens", nil).want(t, http.StatusOK, &after)
	if len(after) != 4 {
		t.Errorf("%d tokens after refused requests, want 4", len(after))
	}

	// Revoked: 401 at once, for both kinds.
	e.api("DELETE", fmt.Sprintf("/api/v1/tokens/%d", created.Token.ID), nil).want(t, http.StatusNoContent, nil)
	e.api("DELETE", fmt.Sprintf("/api/v1/tokens/%d", agentTok.Token.ID), nil).want(t, http.StatusNoContent, nil)
	e.do(created.Secret, "GET", "/api/v1/projects", nil, nil).wantError(t, http.StatusUnauthorized, "unauthorized", "invalid or revoked token")
	e.do(agentTok.Secret, "POST", protocol.Prefix+"/register", protocol.RegisterRequest{ID: "host-7", Capacity: 1}, nil).
		wantError(t, http.StatusUnauthorized, "unauthorized", "invalid or revoked token")
	e.api("DELETE", fmt.Sprintf("/api/v1/tokens/%d", created.Token.ID), nil).wantError(t, http.StatusNotFound, "not_found")

	var left []store.Token
	e.api("GET", "/api/v1/tokens", nil).want(t, http.StatusOK, &left)
	if len(left) != 2 {
		t.Errorf("tokens after revoking: %+v", left)
	}
}

// TestUnknownEndpoint: a path under /api/ that names nothing is a JSON 404,
// not the mux's plain-text one; a known path with another method is refused.
func TestUnknownEndpoint(t *testing.T) {
	e := newEnv(t)
	e.api("GET", "/api/v1/nothing", nil).wantError(t, http.StatusNotFound, "not_found", "no API endpoint GET /api/v1/nothing")
	e.api("GET", "/api/v2/projects", nil).wantError(t, http.StatusNotFound, "not_found")
	e.api("PUT", "/api/v1/builds", nil).wantError(t, http.StatusNotFound, "not_found", "no API endpoint PUT /api/v1/builds")
}

// TestHealthz: the health check needs no token.
func TestHealthz(t *testing.T) {
	e := newEnv(t)
	var out map[string]string
	e.do("", "GET", "/healthz", nil, nil).want(t, http.StatusOK, &out)
	if out["status"] != "ok" {
		t.Errorf("healthz %v", out)
	}
}
