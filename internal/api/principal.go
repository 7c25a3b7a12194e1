package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/kilnci/kiln/internal/authz"
	"github.com/kilnci/kiln/internal/store"
)

// SessionCookie holds a signed-in user's session token (sso.go).
const SessionCookie = "kiln_session"

// CSRFHeader must carry the session's CSRF token (GET /auth/session
// gives it) on every request that changes state and is authenticated
// by the session cookie: a cross-site page can make the browser send
// the cookie, not read the token.
const CSRFHeader = "X-Kiln-CSRF"

// principal is who made a request: an admin token, or a user signed in
// (by the session cookie, or the session's token as a bearer: the CLI).
type principal struct {
	token     *store.Token
	user      *store.User
	session   *store.Session
	sessToken string // the session's token, to end it (logout)
	viaCookie bool
	// tokenSession is set for a browser signed in with an admin token
	// (the dashboard's token sign-in): token is that token.
	tokenSession *store.TokenSession
	authz        authz.Principal
}

// csrf is the CSRF token of the cookie's session ("" for a bearer).
func (p *principal) csrf() string {
	switch {
	case !p.viaCookie:
		return ""
	case p.session != nil:
		return p.session.CSRF
	case p.tokenSession != nil:
		return p.tokenSession.CSRF
	}
	return ""
}

type principalKey struct{}

func principalOf(r *http.Request) *principal {
	p, _ := r.Context().Value(principalKey{}).(*principal)
	return p
}

// actorName names r's principal in records of who did what.
func actorName(r *http.Request) string {
	p := principalOf(r)
	switch {
	case p == nil:
		return "the API"
	case p.user != nil:
		return "user " + strconv.Quote(userLabel(p.user))
	default:
		return "token " + strconv.Quote(p.token.Name)
	}
}

// userLabel is how a user is named to people: their email, else their
// name, else the provider's subject.
func userLabel(u *store.User) string {
	switch {
	case u.Email != "":
		return u.Email
	case u.Name != "":
		return u.Name
	}
	return u.Subject
}

// scope names the project a request acts on ("" for none), from its
// path; false when it has answered (bad id, no such build).
type scope func(s *Server, w http.ResponseWriter, r *http.Request) (string, bool)

// onProject: the {project} of the path.
func onProject(_ *Server, _ http.ResponseWriter, r *http.Request) (string, bool) {
	return r.PathValue("project"), true
}

// onBuild: the project of the build {id} of the path.
func onBuild(s *Server, w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := pathID(w, r)
	if !ok {
		return "", false
	}
	b, err := s.store.Build(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return "", false
	}
	return b.Project, true
}

// allow is a REST route taking action a on the project sc names (nil: on
// none): the request is authenticated (authenticate), then refused with
// 403 unless the policy allows its principal a there. An admin token
// may do anything, so the project is not looked up for one: the
// handler answers for a missing one as it always did.
func (s *Server) allow(a authz.Action, sc scope, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if !p.authz.GlobalAdmin {
			project := ""
			if sc != nil {
				if project, ok = sc(s, w, r); !ok {
					return
				}
			}
			if !authz.Allowed(p.authz, a, project) {
				writeError(w, http.StatusForbidden, "forbidden", authz.Forbidden(a, project))
				return
			}
		}
		next(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// withPrincipal is ctx carrying p (principalOf), and its token if any.
func withPrincipal(ctx context.Context, p *principal) context.Context {
	ctx = context.WithValue(ctx, principalKey{}, p)
	if p.token != nil {
		ctx = context.WithValue(ctx, ctxKey{}, p.token)
	}
	return ctx
}

// authenticate finds r's principal (identify), answering 401 or 403
// itself when there is none.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*principal, bool) {
	p, refusal, err := s.identify(r)
	if err != nil {
		s.storeError(w, err)
		return nil, false
	}
	if refusal != nil {
		if refusal.challenge != "" {
			w.Header().Set("WWW-Authenticate", refusal.challenge)
		}
		writeError(w, refusal.status, refusal.code, refusal.msg)
		return nil, false
	}
	return p, true
}

// refusal is why a request has no principal.
type refusal struct {
	status    int
	code, msg string
	challenge string // WWW-Authenticate, if any
}

// identify finds r's principal: a bearer admin token or session token,
// else the session cookie (with, for a change, the CSRF header). An
// error is the store's.
func (s *Server) identify(r *http.Request) (*principal, *refusal, error) {
	plain, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	viaCookie := false
	if !bearer || plain == "" {
		c, err := r.Cookie(SessionCookie)
		if err != nil || c.Value == "" {
			return nil, &refusal{http.StatusUnauthorized, "unauthorized", "missing bearer token: send Authorization: Bearer <token>, or sign in (GET /auth/login)", `Bearer realm="kiln"`}, nil
		}
		plain, viaCookie = c.Value, true
	}
	if strings.HasPrefix(plain, store.SessionPrefix) {
		se, u, err := s.store.SessionByToken(r.Context(), plain)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &refusal{http.StatusUnauthorized, "unauthorized", "session expired or signed out: sign in again", `Bearer realm="kiln", error="invalid_token"`}, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if viaCookie && !safeMethod(r.Method) && subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(se.CSRF)) != 1 {
			return nil, &refusal{http.StatusForbidden, "csrf", "a change authenticated by the session cookie needs the " + CSRFHeader + " header: the csrf_token GET /auth/session gives", ""}, nil
		}
		p, err := s.userPrincipal(r.Context(), u)
		if err != nil {
			return nil, nil, err
		}
		p.session, p.sessToken, p.viaCookie = se, plain, viaCookie
		return p, nil, nil
	}
	if viaCookie && strings.HasPrefix(plain, store.TokenSessionPrefix) {
		se, tok, err := s.store.TokenSessionByToken(r.Context(), plain)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &refusal{http.StatusUnauthorized, "unauthorized", "session expired, signed out or its token revoked: sign in again", ""}, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if !safeMethod(r.Method) && subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(se.CSRF)) != 1 {
			return nil, &refusal{http.StatusForbidden, "csrf", "a change authenticated by the session cookie needs the " + CSRFHeader + " header: the csrf_token GET /auth/session gives", ""}, nil
		}
		return &principal{token: tok, tokenSession: se, sessToken: plain, viaCookie: true, authz: authz.AdminPrincipal()}, nil, nil
	}
	if viaCookie {
		return nil, &refusal{http.StatusUnauthorized, "unauthorized", "the session cookie holds no session: sign in again", ""}, nil
	}
	tok, err := s.store.Authenticate(r.Context(), plain)
	if err != nil {
		return nil, &refusal{http.StatusUnauthorized, "unauthorized", "invalid or revoked token", `Bearer realm="kiln", error="invalid_token"`}, nil
	}
	if tok.Kind != store.TokenAdmin {
		return nil, &refusal{http.StatusForbidden, "forbidden", fmt.Sprintf("a %s token cannot use this endpoint (needs a %s token)", tok.Kind, store.TokenAdmin), ""}, nil
	}
	return &principal{token: tok, authz: authz.AdminPrincipal()}, nil, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// userPrincipal is u with the roles its bindings give now (read at each
// request: a binding set or removed applies to sessions already open).
func (s *Server) userPrincipal(ctx context.Context, u *store.User) (*principal, error) {
	rows, err := s.store.ListRoleBindings(ctx)
	if err != nil {
		return nil, err
	}
	bindings := make([]authz.Binding, 0, len(rows))
	for _, b := range rows {
		role, err := authz.ParseRole(b.Role)
		if err != nil {
			continue // not a role this kiln knows: grants nothing
		}
		bindings = append(bindings, authz.Binding{Project: b.Project, Group: b.Kind == store.BindGroup, Subject: b.Subject, Role: role})
	}
	return &principal{user: u, authz: authz.Resolve(authz.Identity{Subject: u.Subject, Email: u.Email, Groups: u.Groups}, bindings)}, nil
}

// viewable is the ids of the projects r's principal may view, for the
// lists; all is true for a principal who sees every project.
func (s *Server) viewable(r *http.Request) (ids []int64, all bool, err error) {
	p := principalOf(r)
	if p == nil || p.authz.GlobalAdmin || p.authz.Role("") >= authz.Viewer {
		return nil, true, nil
	}
	ps, err := s.store.ListProjects(r.Context())
	if err != nil {
		return nil, false, err
	}
	for _, pr := range ps {
		if authz.Allowed(p.authz, authz.ViewProject, pr.Name) {
			ids = append(ids, pr.ID)
		}
	}
	return ids, false, nil
}

// canView says whether r's principal may view project.
func canView(r *http.Request, project string) bool {
	p := principalOf(r)
	return p == nil || authz.Allowed(p.authz, authz.ViewProject, project)
}
