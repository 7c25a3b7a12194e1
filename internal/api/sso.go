package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kilnci/kiln/internal/auth"
	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/store"
)

// Single sign-on's endpoints (docs/auth.md):
//
//	GET  /auth/login      to the provider (?cli_redirect=&cli_state= for kiln login)
//	GET  /auth/callback   back from it: a session (the kiln_session cookie), or the CLI's one-time code
//	POST /auth/logout     the session ended server-side, the cookie cleared
//	GET  /auth/session    who you are, your roles, the CSRF token
//	POST /auth/cli/exchange  the CLI's one-time code for a session token

const (
	// attemptCookie carries a sign-in's secrets (auth.Attempt) from
	// /auth/login to /auth/callback: HttpOnly, for /auth/ only, ten
	// minutes.
	attemptCookie = "kiln_oidc"
	attemptMaxAge = 10 * time.Minute
	// loginCodeTTL is how long the CLI has to trade its one-time code.
	loginCodeTTL = 2 * time.Minute
)

// attempt is what attemptCookie holds.
type attempt struct {
	auth.Attempt
	// CLIRedirect is the kiln login's loopback URL, CLIState its own
	// state, given back with the code.
	CLIRedirect string `json:",omitempty"`
	CLIState    string `json:",omitempty"`
	// Next is the dashboard's page to go back to (a path of this server).
	Next string `json:",omitempty"`
}

func (s *Server) ssoRoutes() {
	s.mux.HandleFunc("GET /auth/login", s.ssoLogin)
	s.mux.HandleFunc("GET /auth/callback", s.ssoCallback)
	s.mux.HandleFunc("POST /auth/logout", s.ssoLogout)
	s.mux.HandleFunc("GET /auth/session", s.ssoSession)
	s.mux.HandleFunc("POST /auth/cli/exchange", s.ssoCLIExchange)
}

func (s *Server) ssoConfigured(w http.ResponseWriter) bool {
	if s.cfg.OIDC == nil {
		writeError(w, http.StatusNotFound, "sso_disabled", "single sign-on is not configured on this server (-oidc-issuer)")
		return false
	}
	return true
}

// LoopbackRedirect checks kiln login's redirect: http, to 127.0.0.1, ::1
// or localhost, with a port; anything else could send the code away.
func LoopbackRedirect(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || u.Port() == "" {
		return nil, errors.New("cli_redirect: want http://127.0.0.1:PORT/... (a loopback URL with a port)")
	}
	if h := u.Hostname(); h != "localhost" {
		ip := net.ParseIP(h)
		if ip == nil || !ip.IsLoopback() {
			return nil, errors.New("cli_redirect: only a loopback host (127.0.0.1, ::1, localhost) may receive a sign-in code")
		}
	}
	return u, nil
}

func (s *Server) ssoLogin(w http.ResponseWriter, r *http.Request) {
	if !s.ssoConfigured(w) {
		return
	}
	a := attempt{Attempt: auth.NewAttempt(), Next: safeNext(r.URL.Query().Get("next"))}
	if v := r.URL.Query().Get("cli_redirect"); v != "" {
		if _, err := LoopbackRedirect(v); err != nil {
			writeError(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		a.CLIRedirect, a.CLIState = v, r.URL.Query().Get("cli_state")
	}
	b, _ := json.Marshal(a)
	http.SetCookie(w, &http.Cookie{Name: attemptCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/auth/",
		MaxAge: int(attemptMaxAge.Seconds()), HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, s.cfg.OIDC.AuthURL(a.Attempt), http.StatusFound)
}

func (s *Server) ssoCallback(w http.ResponseWriter, r *http.Request) {
	if !s.ssoConfigured(w) {
		return
	}
	var a attempt
	c, err := r.Cookie(attemptCookie)
	if err == nil {
		var b []byte
		if b, err = base64.RawURLEncoding.DecodeString(c.Value); err == nil {
			err = json.Unmarshal(b, &a)
		}
	}
	// The attempt is used once, whatever happens next.
	http.SetCookie(w, &http.Cookie{Name: attemptCookie, Path: "/auth/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	q := r.URL.Query()
	switch {
	case err != nil || a.State == "":
		writeError(w, http.StatusBadRequest, "bad_state", "no sign-in in progress in this browser (or it took over 10 minutes): start again at /auth/login")
		return
	case q.Get("state") != a.State:
		writeError(w, http.StatusBadRequest, "bad_state", "the sign-in's state does not match this browser's: start again at /auth/login")
		return
	case q.Get("error") != "":
		writeError(w, http.StatusUnauthorized, "sign_in_refused", "the provider refused the sign-in: "+clipLog(q.Get("error")+": "+q.Get("error_description"), 256))
		return
	}
	id, err := s.cfg.OIDC.Exchange(r.Context(), q.Get("code"), a.Attempt)
	if err != nil {
		s.log.Warn("sign-in refused", "err", err, "remote_addr", s.clientAddr(r))
		writeError(w, http.StatusUnauthorized, "sign_in_refused", "sign-in refused: "+err.Error())
		return
	}
	u := &store.User{Subject: id.Subject, Email: id.Email, Name: id.Name, Groups: id.Groups}
	if err := s.store.UpsertUser(r.Context(), u); err != nil {
		s.storeError(w, err)
		return
	}
	s.log.Info("signed in", "user", userLabel(u), "subject", u.Subject, "cli", a.CLIRedirect != "", "remote_addr", s.clientAddr(r))
	if a.CLIRedirect != "" {
		to, err := LoopbackRedirect(a.CLIRedirect)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		code, err := s.store.CreateLoginCode(r.Context(), u.ID, loginCodeTTL)
		if err != nil {
			s.storeError(w, err)
			return
		}
		v := to.Query()
		v.Set("code", code)
		v.Set("state", a.CLIState)
		to.RawQuery = v.Encode()
		http.Redirect(w, r, to.String(), http.StatusFound)
		return
	}
	se, plain, err := s.store.CreateSession(r.Context(), u.ID, s.sessionTTL())
	if err != nil {
		s.storeError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: plain, Path: "/", Expires: se.ExpiresAt,
		HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, safeNext(a.Next), http.StatusFound)
}

func (s *Server) sessionTTL() time.Duration {
	if s.cfg.SessionTTL > 0 {
		return s.cfg.SessionTTL
	}
	return 12 * time.Hour
}

// ssoLogout ends r's session: the cookie's (with the CSRF header) or the
// bearer session token's.
func (s *Server) ssoLogout(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	var err error
	switch {
	case p.session != nil:
		err = s.store.DeleteSession(r.Context(), p.sessToken)
	case p.tokenSession != nil:
		err = s.store.DeleteTokenSession(r.Context(), p.sessToken)
	default:
		writeError(w, http.StatusBadRequest, "invalid", "an API token has no session to end: revoke it instead (kiln token revoke)")
		return
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.storeError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	w.WriteHeader(http.StatusNoContent)
}

// SessionView is GET /auth/session: who the caller is and what it may do.
type SessionView struct {
	// Kind is user (signed in) or admin_token.
	Kind string    `json:"kind"`
	User *UserView `json:"user,omitempty"`
	// Token names the admin token of an admin_token.
	Token string `json:"token,omitempty"`
	// GlobalAdmin: the global settings are open to the caller.
	GlobalAdmin bool `json:"global_admin"`
	// Roles by project name ("*": every project).
	Roles map[string]string `json:"roles"`
	// CSRFToken is the value of the X-Kiln-CSRF header a change
	// authenticated by the session cookie must carry.
	CSRFToken string     `json:"csrf_token,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// UserView is a signed-in user as the API shows them.
type UserView struct {
	Subject string   `json:"subject"`
	Email   string   `json:"email,omitempty"`
	Name    string   `json:"name,omitempty"`
	Groups  []string `json:"groups"`
}

func userView(u *store.User) *UserView {
	return &UserView{Subject: u.Subject, Email: u.Email, Name: u.Name, Groups: u.Groups}
}

func (s *Server) ssoSession(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	v := SessionView{GlobalAdmin: p.authz.GlobalAdmin, Roles: map[string]string{}}
	for project, role := range p.authz.Roles() {
		if role > authz.None {
			v.Roles[project] = role.String()
		}
	}
	if p.user != nil {
		v.Kind, v.User, v.CSRFToken, v.ExpiresAt = ActorUser, userView(p.user), p.session.CSRF, &p.session.ExpiresAt
	} else {
		v.Kind, v.Token, v.CSRFToken = ActorAdminToken, p.token.Name, p.csrf()
		if p.tokenSession != nil {
			v.ExpiresAt = &p.tokenSession.ExpiresAt
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, v)
}

// CLIExchangeRequest is POST /auth/cli/exchange's body.
type CLIExchangeRequest struct {
	Code string `json:"code"`
}

// CLIExchangeResponse is the session the CLI keeps: Token is its bearer
// token.
type CLIExchangeResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      *UserView `json:"user"`
}

func (s *Server) ssoCLIExchange(w http.ResponseWriter, r *http.Request) {
	var req CLIExchangeRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Code == "" {
		writeError(w, http.StatusBadRequest, "invalid", "code: required")
		return
	}
	userID, err := s.store.TakeLoginCode(r.Context(), req.Code)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusUnauthorized, "bad_code", "the sign-in code is unknown, used or expired: run kiln login again")
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	se, plain, err := s.store.CreateSession(r.Context(), userID, s.sessionTTL())
	if err != nil {
		s.storeError(w, err)
		return
	}
	s.log.Info("CLI signed in", "user", userLabel(u), "session", strconv.FormatInt(se.ID, 10))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, CLIExchangeResponse{Token: plain, ExpiresAt: se.ExpiresAt, User: userView(u)})
}
