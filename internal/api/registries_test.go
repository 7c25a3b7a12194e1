package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/api"
)

// A project's registry credentials are set by host, listed with their
// user and never their password, replaced, removed; bad input is refused
// with the reason and changes nothing.
func TestRegistries(t *testing.T) {
	e := newEnv(t)
	e.project("web", "https://git.example.org/web.git", nil)
	const password = "registry-password-that-must-not-leak"

	var regs []api.RegistryView
	e.api("GET", "/api/v1/projects/web/registries", nil).want(t, http.StatusOK, &regs)
	if regs == nil || len(regs) != 0 {
		t.Errorf("registries of a new project: %#v, want an empty list", regs)
	}
	base := "/api/v1/projects/web/registries/"
	e.api("PUT", base+"registry.example.com", map[string]string{"username": "ci", "password": password}).want(t, http.StatusNoContent, nil)
	e.api("PUT", base+"mirror.example.com:5000", map[string]string{"username": "bot", "password": password + "2"}).want(t, http.StatusNoContent, nil)
	e.api("PUT", base+"registry.example.com", map[string]string{"username": "ci2", "password": password + "3"}).want(t, http.StatusNoContent, nil) // replaced

	for _, path := range []string{"/api/v1/projects/web/registries", "/api/v1/projects/web", "/api/v1/projects"} {
		r := e.api("GET", path, nil)
		r.want(t, http.StatusOK, nil)
		if strings.Contains(string(r.body), password) {
			t.Errorf("GET %s shows a registry password: %s", path, r.body)
		}
	}
	list := func(t *testing.T) string {
		e.api("GET", "/api/v1/projects/web/registries", nil).want(t, http.StatusOK, &regs)
		var parts []string
		for _, r := range regs {
			if r.UpdatedAt.IsZero() {
				t.Errorf("%s: no updated_at", r.Host)
			}
			parts = append(parts, r.Host+"="+r.Username)
		}
		return strings.Join(parts, ",")
	}
	if got := list(t); got != "mirror.example.com:5000=bot,registry.example.com=ci2" {
		t.Errorf("registries %s", got)
	}

	e.refuse(e.admin, []refusal{
		{"a scheme", "PUT", base + "https:%2F%2Fregistry.example.com", map[string]string{"username": "u", "password": "p"}, 400, "invalid", "without a scheme"},
		{"uppercase", "PUT", base + "Registry.example.com", map[string]string{"username": "u", "password": "p"}, 400, "invalid", `registry host "Registry.example.com"`},
		{"a bad port", "PUT", base + "registry.example.com:http", map[string]string{"username": "u", "password": "p"}, 400, "invalid", "registry host"},
		{"no user", "PUT", base + "other.example.com", map[string]string{"password": "p"}, 400, "invalid", "username: required"},
		{"no password", "PUT", base + "other.example.com", map[string]string{"username": "u"}, 400, "invalid", "password: required"},
		{"password too long", "PUT", base + "other.example.com", map[string]string{"username": "u", "password": strings.Repeat("p", 4097)}, 400, "invalid", "at most 4096 bytes"},
		{"unknown field", "PUT", base + "other.example.com", map[string]string{"username": "u", "password": "p", "host": "x"}, 400, "bad_request", `unknown field "host"`},
		{"unknown project", "PUT", "/api/v1/projects/nope/registries/other.example.com", map[string]string{"username": "u", "password": "p"}, 404, "not_found", `project "nope"`},
		{"list: unknown project", "GET", "/api/v1/projects/nope/registries", nil, 404, "not_found", `project "nope"`},
		{"delete: unknown host", "DELETE", base + "other.example.com", nil, 404, "not_found", `registry "other.example.com"`},
	}, func(e *env) {
		if got := list(e.t); got != "mirror.example.com:5000=bot,registry.example.com=ci2" {
			e.t.Errorf("registries %s", got)
		}
	})

	e.api("DELETE", base+"mirror.example.com:5000", nil).want(t, http.StatusNoContent, nil)
	if got := list(t); got != "registry.example.com=ci2" {
		t.Errorf("registries after delete %s", got)
	}
}
