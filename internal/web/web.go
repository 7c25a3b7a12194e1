// Package web is the dashboard's presentation: its HTML templates and
// static files, embedded in the binary, and the headers every page is
// served with. It renders what it is given and fetches nothing: the
// API's dashboard handlers (internal/api/dashboard.go) decide who may
// see what and hand it the API's own view types.
//
// Pages are server-rendered; the live parts (rows of the builds list,
// a build's status and log) are small scripts in static/ that use the
// REST API and its server-sent events, with the session cookie. No
// script is inline, so the Content-Security-Policy allows scripts from
// this server only.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed templates/*.html
var templates embed.FS

//go:embed static
var static embed.FS

// Page is what every page shows around its content.
type Page struct {
	// Name is the page's template: templates/NAME.html.
	Name  string
	Title string
	// Nav names the navigation's current item: projects, builds,
	// agents, insights.
	Nav string
	// Who names the person signed in ("" on the sign-in page); Admin:
	// they hold the global settings (the navigation shows Tokens).
	Who   string
	Admin bool
	// CSRF is the session's CSRF token: the scripts send it in the
	// X-Kiln-CSRF header, forms in their csrf field.
	CSRF string
	// Data is the page's own.
	Data any
}

// Pages are the parsed templates, one per page, each with the layout.
type Pages struct {
	byName map[string]*template.Template
}

// assetVersion changes whenever a static file does: asset URLs carry it,
// so a browser may keep them for long and still never runs an old script.
var assetVersion = func() string {
	h := sha256.New()
	_ = fs.WalkDir(static, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(path)
		fmt.Fprintf(h, "%s %d\n", path, len(b))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}()

// New parses the embedded templates.
func New() *Pages {
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templates, "templates/layout.html"))
	names, err := fs.Glob(templates, "templates/*.html")
	if err != nil {
		panic(err)
	}
	p := &Pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		p.byName[name] = template.Must(template.Must(layout.Clone()).ParseFS(templates, n))
	}
	return p
}

// Render writes page (its template: page.Name) with status. The page
// is rendered whole before anything is sent, so a template error is a
// clean 500.
func (p *Pages) Render(w http.ResponseWriter, status int, page Page) {
	p.render(w, status, page.Name, "layout", page)
}

// Partial writes one part of a page, the template block of page.Name:
// the live parts' scripts fetch it to show a change.
func (p *Pages) Partial(w http.ResponseWriter, block string, page Page) {
	p.render(w, http.StatusOK, page.Name, block, page.Data)
}

func (p *Pages) render(w http.ResponseWriter, status int, name, block string, data any) {
	t, ok := p.byName[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, block, data); err != nil {
		http.Error(w, "rendering "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	SecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// SecurityHeaders are every page's: scripts, styles, images and
// connections from this server only (no inline script), no framing, no
// forms to elsewhere, no referrer to other sites.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

// Static serves the embedded static files under /static/. A request
// with the current version (?v=, as Asset gives) may be cached for a
// year; any other, only revalidated.
func Static() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("v") == assetVersion {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// Asset is the URL of a static file.
func Asset(name string) string { return "/static/" + name + "?v=" + assetVersion }

var funcs = template.FuncMap{
	"asset": Asset,
	"ago":   Ago,
	"dur":   Duration,
	"short": func(sha string) string {
		if len(sha) > 10 {
			return sha[:10]
		}
		return sha
	},
	"bytes": Bytes,
	"ms":    func(ms int64) string { return FormatDuration(time.Duration(ms) * time.Millisecond) },
	"pct": func(f *float64) string {
		if f == nil {
			return "–"
		}
		return fmt.Sprintf("%.1f%%", *f*100)
	},
	"iso":       func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"sparkline": Sparkline,
	"join":      strings.Join,
}

// Ago says how long before now t was, roughly: "3m ago".
func Ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// Duration is from start to end (to now while end is nil), "" before
// start: "1m 05s".
func Duration(start, end *time.Time) string {
	if start == nil {
		return ""
	}
	e := time.Now()
	if end != nil {
		e = *end
	}
	return FormatDuration(e.Sub(*start))
}

// FormatDuration prints d to the second: "45s", "3m 07s", "2h 01m".
func FormatDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
}

// Bytes prints n in binary units: "1.5 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Sparkline draws values (oldest first) as a small SVG line, scaled to
// the largest; nothing for fewer than two. Only numbers go into the
// markup.
func Sparkline(values []float64) template.HTML {
	if len(values) < 2 {
		return ""
	}
	const w, h = 100.0, 24.0
	top := 0.0
	for _, v := range values {
		top = max(top, v)
	}
	if top == 0 {
		top = 1
	}
	var pts strings.Builder
	for i, v := range values {
		x := w * float64(i) / float64(len(values)-1)
		y := h - 2 - (h-4)*v/top
		fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
	}
	return template.HTML(fmt.Sprintf(`<svg class="spark" viewBox="0 0 %.0f %.0f" width="100" height="24" role="img" aria-label="recent durations"><polyline points="%s"/></svg>`,
		w, h, strings.TrimSpace(pts.String())))
}
