package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// kiln project registry add sends the password it read from stdin in
// the request's body (never an argument); bad usage is refused before
// any request.
func TestProjectRegistry(t *testing.T) {
	t.Setenv("KILN_HOME", t.TempDir())
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		got = append(got, r.Method+" "+r.URL.EscapedPath()+" "+body["username"]+":"+body["password"])
		if r.Method == "GET" {
			_, _ = w.Write([]byte(`[{"host":"registry.example.com","username":"ci","updated_at":"2026-01-02T03:04:05Z"}]`))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	stdin := os.Stdin
	defer func() { os.Stdin = stdin }()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.WriteString("pull-password\n")
	w.Close()
	os.Stdin = r
	flags := []string{"-server", srv.URL, "-token", "t"}
	ctx := context.Background()
	if err := runProject(ctx, append([]string{"registry", "add", "web", "registry.example.com:5000", "-user", "ci"}, flags...)); err != nil {
		t.Fatal(err)
	}
	if err := runProject(ctx, append([]string{"registry", "list", "web"}, flags...)); err != nil {
		t.Fatal(err)
	}
	if err := runProject(ctx, append([]string{"registry", "remove", "web", "registry.example.com"}, flags...)); err != nil {
		t.Fatal(err)
	}
	want := "PUT /api/v1/projects/web/registries/registry.example.com:5000 ci:pull-password|GET /api/v1/projects/web/registries :|DELETE /api/v1/projects/web/registries/registry.example.com :"
	if strings.Join(got, "|") != want {
		t.Errorf("requests:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
	for _, args := range [][]string{{"registry"}, {"registry", "add", "web"}, {"registry", "add", "web", "h"}, {"registry", "list"}, {"registry", "remove", "web"}} {
		err := runProject(ctx, append(args, flags...))
		if err == nil || !strings.Contains(err.Error(), "usage: kiln project registry") {
			t.Errorf("kiln project %q: %v", args, err)
		}
	}
}
