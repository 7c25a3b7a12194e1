// Package forgeapi is what Kiln asks of a forge's REST API when it
// onboards a repository: the repository's clone URL and default branch,
// and a webhook that delivers its pushes and pull or merge requests to
// Kiln. One small client per forge (GitHub through go-github, GitLab v4
// and Gitea v1 over net/http) behind one interface, so that the API's
// handler never dispatches on the forge itself.
//
// A client makes a bounded number of requests and never retries: a
// refusal comes back as an *Error of a kind (ErrUnauthorized,
// ErrForbidden, ErrNotFound, ErrInvalid, ErrUnavailable) with a message
// that says what to do about it. Tokens appear in no error.
package forgeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Forges.
const (
	GitHub = "github"
	GitLab = "gitlab"
	Gitea  = "gitea"
)

// Repository is what Kiln needs of a repository to build it.
type Repository struct {
	CloneURL      string // over https, as the forge gives it
	DefaultBranch string // "" for an empty repository on some forges
}

// Event is a kind of delivery Kiln builds, in Kiln's words; each client
// subscribes its forge's events for it.
type Event string

const (
	Push        Event = "push"
	Tag         Event = "tag"
	PullRequest Event = "pull_request"
)

// KilnEvents are the events a project's webhook delivers.
var KilnEvents = []Event{Push, Tag, PullRequest}

// Webhook is Kiln's webhook on a repository once ensured.
type Webhook struct {
	ID int64
	// Action is what was done: "created", "updated" (the hook with that
	// URL was changed in place) or "replaced" (created anew and the old
	// one removed: Gitea cannot change a hook's secret).
	Action string
}

// Client talks to one repository on one forge.
type Client interface {
	// Repository looks the repository up.
	Repository(ctx context.Context) (Repository, error)
	// EnsureWebhook makes the repository deliver events to url, as JSON
	// signed with secret: the hook Kiln already has there (the one with
	// that URL) is brought up to date, else one is created. Running it
	// twice leaves one hook.
	EnsureWebhook(ctx context.Context, url, secret string, events []Event) (Webhook, error)
}

// Config says which repository and how to authenticate.
type Config struct {
	Forge string // github, gitlab or gitea
	// APIURL: GitHub's API root (https://api.github.com, or
	// https://HOST/api/v3 for GitHub Enterprise Server); GitLab's and
	// Gitea's base URL (https://gitlab.example.com), below which the
	// client adds /api/v4 or /api/v1.
	APIURL string
	Repo   string // owner/name; GitLab: the project's path, group/name
	Token  string
	// A GitHub App installation instead of a token (GitHub only).
	AppID          int64
	AppKey         []byte // the App's private key, PEM
	InstallationID int64
	// HTTPClient carries the requests; nil: one with a 30s timeout that
	// follows no redirect (a token goes to the configured URL only).
	HTTPClient *http.Client
}

// New makes the client for cfg's forge. It makes no request.
func New(cfg Config) (Client, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	owner, name, ok := strings.Cut(cfg.Repo, "/")
	if !ok || owner == "" || name == "" {
		return nil, fmt.Errorf("forgeapi: repository %q: want owner/name", cfg.Repo)
	}
	if cfg.InstallationID != 0 && cfg.Forge != GitHub {
		return nil, fmt.Errorf("forgeapi: a GitHub App installation is for github, not %s", cfg.Forge)
	}
	if cfg.Token == "" && cfg.InstallationID == 0 {
		return nil, fmt.Errorf("forgeapi: %s: a token (or on GitHub an App installation) is required", cfg.Forge)
	}
	switch cfg.Forge {
	case GitHub:
		return newGitHub(cfg)
	case GitLab:
		return &gitlab{rest: rest{forge: GitLab, base: cfg.APIURL + "/api/v4", repo: cfg.Repo, hc: cfg.HTTPClient,
			auth: func(r *http.Request) { r.Header.Set("PRIVATE-TOKEN", cfg.Token) }}}, nil
	case Gitea:
		return &gitea{rest: rest{forge: Gitea, base: cfg.APIURL + "/api/v1", repo: cfg.Repo, hc: cfg.HTTPClient,
			auth: func(r *http.Request) { r.Header.Set("Authorization", "token "+cfg.Token) }}}, nil
	}
	return nil, fmt.Errorf("forgeapi: forge %q: want github, gitlab or gitea", cfg.Forge)
}

// Error kinds: every error a Client returns from the forge wraps one.
var (
	ErrUnauthorized = errors.New("credentials refused") // 401
	ErrForbidden    = errors.New("permission missing")  // 403 (not a rate limit)
	ErrNotFound     = errors.New("not found")           // 404
	ErrInvalid      = errors.New("refused as invalid")  // 400, 422
	ErrUnavailable  = errors.New("forge not reachable") // no answer, 5xx, rate limits: try again later
)

// Error is a forge's refusal of one call.
type Error struct {
	Forge   string
	Op      string // what was asked, e.g. "look up repository acme/web"
	Status  int    // 0 when no answer came
	Message string // the forge's own message, clipped
	Hint    string // what to do about it
	Kind    error  // one of the Err* kinds; nil when none fits
	Err     error
}

func (e *Error) Error() string {
	s := e.Forge + ": " + e.Op + ": "
	if e.Status != 0 {
		s += strconv.Itoa(e.Status) + " "
	}
	switch {
	case e.Message != "":
		s += e.Message
	case e.Err != nil:
		s += e.Err.Error()
	case e.Kind != nil:
		s += e.Kind.Error()
	}
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *Error) Unwrap() []error {
	var out []error
	for _, err := range []error{e.Kind, e.Err} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// kindOf is the kind of an answer's status.
func kindOf(status int) error {
	switch {
	case status == http.StatusUnauthorized:
		return ErrUnauthorized
	case status == http.StatusForbidden:
		return ErrForbidden
	case status == http.StatusNotFound, status == http.StatusGone:
		return ErrNotFound
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity:
		return ErrInvalid
	case status == http.StatusTooManyRequests, status >= 500:
		return ErrUnavailable
	}
	return nil
}

// hint says what to do about a refusal of op (hooks: an operation on
// webhooks), in the forge's terms.
func hint(forge string, kind error, hooks bool) string {
	switch kind {
	case ErrUnauthorized:
		if forge == GitHub {
			return "the token, or the GitHub App's installation token, was refused: check it"
		}
		return "the token was refused: check it and that it has not expired"
	case ErrNotFound:
		if hooks {
			// GitHub answers 404, not 403, to a classic token without the scope.
			return "the token may not manage the repository's webhooks: give it admin rights there"
		}
		return "no such repository, or the token may not see it"
	case ErrForbidden:
		if !hooks {
			return "the token may not read the repository"
		}
		switch forge {
		case GitHub:
			return "managing webhooks needs admin rights on the repository: a classic token with admin:repo_hook, a fine-grained token or App with Webhooks: write"
		case GitLab:
			return "managing webhooks needs the Maintainer role on the project and a token with the api scope"
		case Gitea:
			return "managing webhooks needs admin rights on the repository and a token with write:repository"
		}
	case ErrUnavailable:
		return "try again later"
	}
	return ""
}

// clip bounds a forge's message and keeps it printable UTF-8.
func clip(s string) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "?"))
	if utf8.RuneCountInString(s) > 300 {
		s = string([]rune(s)[:299]) + "…"
	}
	return s
}

// rest is the HTTP of GitLab's and Gitea's JSON APIs.
type rest struct {
	forge, base, repo string
	hc                *http.Client
	auth              func(*http.Request)
}

// do sends one request (body as JSON, if any) and decodes a 2xx answer
// into out (if any); other answers become an *Error for op.
func (c *rest) do(ctx context.Context, method, path string, body, out any, op string, hooks bool) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, &Error{Forge: c.forge, Op: op, Kind: ErrInvalid, Err: errors.New("bad API URL")}
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.auth(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL has no credentials; the error names only the host.
		return nil, &Error{Forge: c.forge, Op: op, Kind: ErrUnavailable, Err: redactURLError(err), Hint: hint(c.forge, ErrUnavailable, hooks)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, &Error{Forge: c.forge, Op: op, Status: resp.StatusCode, Kind: ErrUnavailable, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		kind := kindOf(resp.StatusCode)
		return nil, &Error{Forge: c.forge, Op: op, Status: resp.StatusCode, Message: restMessage(data, resp.Status), Kind: kind, Hint: hint(c.forge, kind, hooks)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, &Error{Forge: c.forge, Op: op, Status: resp.StatusCode, Kind: ErrUnavailable, Err: fmt.Errorf("unexpected answer: %v", err)}
		}
	}
	return resp.Header, nil
}

// restMessage reads GitLab's and Gitea's error bodies: {"message": "…"},
// {"message": {"field": ["…"]}} or {"error": "…"}.
func restMessage(data []byte, status string) string {
	var body struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
	}
	if json.Unmarshal(data, &body) != nil {
		return clip(status)
	}
	var msg string
	if json.Unmarshal(body.Message, &msg) != nil {
		var fields map[string][]string
		if json.Unmarshal(body.Message, &fields) == nil {
			var parts []string
			for k, v := range fields {
				parts = append(parts, k+" "+strings.Join(v, ", "))
			}
			msg = strings.Join(parts, "; ")
		}
	}
	if msg == "" {
		msg = body.Error
	}
	if msg == "" {
		msg = status
	}
	return clip(msg)
}

// redactURLError drops the URL's query from a transport error (a URL
// error quotes the whole request URL).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.User = "", nil
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// pathRepo escapes each segment of owner/name for a URL path.
func pathRepo(repo string) string {
	owner, name, _ := strings.Cut(repo, "/")
	return url.PathEscape(owner) + "/" + url.PathEscape(name)
}
