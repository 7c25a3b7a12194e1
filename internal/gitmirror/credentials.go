package gitmirror

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
)

// Credentials are HTTP credentials for a remote given apart from its URL
// (a forge connection's token), so that the URL every log and error shows
// never holds them. git gets them as a URL's own userinfo: an
// Authorization header in its environment, never on its command line or
// in a repository's config. A user name alone (an empty Password) is a
// token too (Gitea reads a token in either field).
type Credentials struct {
	Username string
	Password string
}

// String and LogValue keep the credentials out of anything that prints
// them by accident.
func (c Credentials) String() string { return "gitmirror.Credentials{***}" }

func (c Credentials) LogValue() slog.Value { return slog.StringValue("***") }

// Secrets are the values a log or an error must never show: the password,
// or a user name standing alone (a token), and the basic credentials
// git's header carries.
func (c Credentials) Secrets() []string {
	basic := base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))
	switch {
	case c.Password != "":
		return []string{c.Password, basic}
	case c.Username != "":
		return []string{c.Username, basic}
	}
	return nil
}

// Option changes one call of Resolve, ReadFile, FetchRef or Checkout.
type Option func(*callOptions)

type callOptions struct {
	creds *Credentials
}

// WithCredentials fetches with c (nil or empty: none). A URL with
// credentials of its own keeps them; a remote that is not http(s) is
// refused with credentials (they would not be sent).
func WithCredentials(c *Credentials) Option {
	return func(o *callOptions) {
		if c != nil && (c.Username != "" || c.Password != "") {
			o.creds = c
		}
	}
}

// ErrAuth: the remote asked for credentials and had none it accepted
// (none given, or a wrong or expired token). Wrapped beside ErrFetch.
var ErrAuth = errors.New("the repository refused the credentials (or needs some)")

// setBasic makes fetches send user and pass as HTTP basic credentials, in
// git's environment only.
func (r *remote) setBasic(user, pass string) {
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	r.fetchURL = r.public
	r.fetchEnv = []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic " + basic}
	r.secrets = append(r.secrets, basic)
	// Whatever of it is secret, in the forms git may print: the password,
	// or for http(s) a user name alone (a token).
	secret := pass
	if secret == "" {
		secret = user
	}
	if secret != "" {
		r.secrets = append(r.secrets, secret, url.QueryEscape(secret), url.PathEscape(secret))
	}
}

// withCredentials gives r the credentials of opts, unless its URL has its own.
func (r *remote) withCredentials(opts []Option) error {
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.creds == nil || r.public != r.raw {
		return nil // none given, or the URL's own userinfo wins
	}
	if strings.ContainsAny(o.creds.Username+o.creds.Password, "\x00\n\r") || strings.Contains(o.creds.Username, ":") {
		return errors.New("gitmirror: invalid credentials (a control character, or a colon in the user name)")
	}
	u, err := url.Parse(r.raw)
	if err != nil || !isHTTP(u.Scheme) || !strings.Contains(r.raw, "://") {
		return fmt.Errorf("gitmirror: credentials are sent to http and https remotes only, not to %s", r.redacted)
	}
	r.setBasic(o.creds.Username, o.creds.Password)
	return nil
}

// authFailure reports whether a failed fetch's message says the remote
// wanted credentials it did not get, in git's words.
func authFailure(err error) bool {
	var ge *gitError
	if !errors.As(err, &ge) || ge.timedOut > 0 {
		return false
	}
	for _, s := range []string{"Authentication failed", "could not read Username", "could not read Password",
		"The requested URL returned error: 401", "The requested URL returned error: 403"} {
		if strings.Contains(ge.stderr, s) {
			return true
		}
	}
	return false
}
