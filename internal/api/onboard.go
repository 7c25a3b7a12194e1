package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kilnci/kiln/internal/forgeapi"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/store"
)

// WebhookView is the webhook a request with forge_webhook made sure of on
// the forge (its secret is never shown: the forge has it, and Kiln).
type WebhookView struct {
	URL    string `json:"url"`
	ID     int64  `json:"id"`
	Action string `json:"action"` // created, updated or replaced
}

// requestError is a refusal with its HTTP status and code.
type requestError struct {
	status     int
	code, text string
}

func (e *requestError) Error() string { return e.text }

func invalid(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, code: "invalid", text: fmt.Sprintf(format, args...)}
}

// writeRequestError answers err: a *requestError as it says, anything
// else as a store error.
func (s *Server) writeRequestError(w http.ResponseWriter, err error) {
	var re *requestError
	if errors.As(err, &re) {
		writeError(w, re.status, re.code, re.text)
		return
	}
	s.storeError(w, err)
}

// hookURL is where the forge delivers a project's webhooks: the server's
// public URL, /hooks/FORGE/PROJECT.
func hookURL(publicURL, forge, project string) string {
	return strings.TrimRight(publicURL, "/") + "/hooks/" + forge + "/" + project
}

// onboard connects p to its repository on the forge before p is stored:
// it looks the repository up (its clone URL and default branch fill in
// what the request left out: fillURL, fillBranch), gives p a webhook
// secret if it has none, and creates or updates Kiln's webhook there. A
// refusal stores nothing: the caller stores p only when onboard succeeds.
func (s *Server) onboard(ctx context.Context, p *store.Project, fc *store.ForgeConnection, fillURL, fillBranch bool) (*WebhookView, error) {
	if fc == nil {
		return nil, invalid("forge_webhook: needs the project's forge connection: forge, forge_repo, forge_url and forge_token (or forge_installation_id)")
	}
	if s.cfg.HookBaseURL == "" {
		return nil, &requestError{status: http.StatusBadRequest, code: "no_public_url",
			text: "forge_webhook: this server has no public URL to give the forge: start it with -public-url https://kiln.example.com (the address the forge delivers webhooks to)"}
	}
	client, err := forgeapi.New(forgeapi.Config{Forge: fc.Forge, APIURL: fc.APIURL, Repo: fc.Repo, Token: fc.Token,
		AppID: s.cfg.GitHubAppID, AppKey: s.cfg.GitHubAppKey, InstallationID: fc.InstallationID})
	if err != nil {
		return nil, invalid("%v", err)
	}
	repo, err := client.Repository(ctx)
	if err != nil {
		return nil, forgeRefusal(err)
	}
	if fillURL {
		if repo.CloneURL == "" {
			return nil, &requestError{status: http.StatusBadGateway, code: "forge_error", text: fc.Forge + ": the repository has no clone URL: give clone_url"}
		}
		if err := gitmirror.CheckURL(repo.CloneURL, s.cfg.AllowFileRemotes); err != nil {
			return nil, invalid("the forge's clone URL: %v", err)
		}
		p.CloneURL = repo.CloneURL
	}
	if fillBranch && repo.DefaultBranch != "" {
		p.DefaultBranch = repo.DefaultBranch
	}
	if p.WebhookSecret == "" {
		p.WebhookSecret = rand.Text()
	}
	url := hookURL(s.cfg.HookBaseURL, fc.Forge, p.Name)
	hook, err := client.EnsureWebhook(ctx, url, p.WebhookSecret, forgeapi.KilnEvents)
	if err != nil {
		return nil, forgeRefusal(err)
	}
	s.log.Info("webhook ensured on the forge", "project", p.Name, "forge", fc.Forge, "repo", fc.Repo, "url", url, "action", hook.Action)
	return &WebhookView{URL: url, ID: hook.ID, Action: hook.Action}, nil
}

// forgeRefusal maps a forge's refusal to the API's answer: 422 with a
// code per kind when the forge refused what the request names (the
// token, the repository, a permission, the hook), 502 when the forge
// could not be asked.
func forgeRefusal(err error) error {
	code := "forge_error"
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, forgeapi.ErrUnauthorized):
		code, status = "forge_unauthorized", http.StatusUnprocessableEntity
	case errors.Is(err, forgeapi.ErrForbidden):
		code, status = "forge_forbidden", http.StatusUnprocessableEntity
	case errors.Is(err, forgeapi.ErrNotFound):
		code, status = "forge_not_found", http.StatusUnprocessableEntity
	case errors.Is(err, forgeapi.ErrInvalid):
		code, status = "forge_invalid", http.StatusUnprocessableEntity
	case errors.Is(err, forgeapi.ErrUnavailable):
		code = "forge_unavailable"
	}
	return &requestError{status: status, code: code, text: err.Error()}
}
