package api

import (
	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/store"
	"html/template"
	"net/http"
	"strconv"
)

// BuildPagePath is the path of a build's page: where the statuses and
// checks Kiln sends to a forge link to (PublicURL + BuildPagePath(id)).
// The web dashboard will serve it in full; until then it is a small
// page behind the API's credentials (an admin token, or a signed-in
// user's session cookie with a role on the build's project), and a
// browser without them is told how to see the build from a terminal.
// Nothing of a build shows without them: build ids are sequential, so an
// open page would let anyone list every project's builds.
func BuildPagePath(id int64) string { return "/builds/" + strconv.FormatInt(id, 10) }

var buildPage = template.Must(template.New("build").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}} · Kiln</title></head>
<body>
<h1>{{.Title}}</h1>
{{if .Build}}<p>Project {{.Build.Project}}, build #{{.Build.Number}}: <strong>{{.Build.Status}}</strong>{{with .Build.Error}} ({{.}}){{end}}</p>
<p>Commit {{.Build.Commit}}{{with .Build.Branch}} on {{.}}{{end}}{{with .Build.PullRequest}}, request #{{.Number}} {{.Title}}{{end}}</p>
<table><tr><th>Job</th><th>Status</th></tr>
{{range .Build.Jobs}}<tr><td>{{.Name}}</td><td>{{.Status}}</td></tr>
{{end}}</table>
{{else}}<p>Kiln's web dashboard is not part of this server yet, and this page needs a token. From a terminal:</p>
<pre>kiln build {{.ID}}
kiln logs {{.ID}}</pre>
{{end}}</body></html>
`))

// buildPageHandler serves BuildPagePath: the build to an admin token or
// a viewer of its project, otherwise 401 (403 to a user of no role
// there) and how to see it.
func (s *Server) buildPageHandler(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "not a build id", http.StatusNotFound)
		return
	}
	data := struct {
		Title string
		ID    int64
		Build *store.Build
	}{Title: "Build " + strconv.FormatInt(id, 10), ID: id}
	status := http.StatusUnauthorized
	p, refused, err := s.identify(r)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if refused == nil {
		b, err := s.store.Build(r.Context(), id)
		if err != nil {
			s.storeError(w, err)
			return
		}
		// A user who may not view the project sees the page without the
		// build, as one not signed in does.
		if authz.Allowed(p.authz, authz.ViewProject, b.Project) {
			data.Build, status = b, http.StatusOK
		} else {
			status = http.StatusForbidden
		}
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = buildPage.Execute(w, data)
}
