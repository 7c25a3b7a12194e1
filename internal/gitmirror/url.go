package gitmirror

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// remote is a repository URL as given, with what the mirror needs of it.
type remote struct {
	raw      string // passed to git; may hold credentials: never print it
	redacted string // for errors and logs
	public   string // without any credentials: the checkout's origin
	key      string // the mirror's directory name
	secrets  []string
	// fetchURL is what a fetch names on git's command line: never with
	// credentials, which anyone on the host can read in a process list.
	// An http(s) URL's userinfo goes to git as an Authorization header in
	// fetchEnv instead, readable only by the user running Kiln.
	fetchURL string
	fetchEnv []string
}

// parseRemote validates rawURL and derives the mirror key. A local path is
// made absolute (git runs in the mirror directory).
func parseRemote(rawURL string) (*remote, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("gitmirror: empty repository URL")
	}
	if strings.HasPrefix(rawURL, "-") || strings.ContainsAny(rawURL, "\x00\n\r") {
		return nil, fmt.Errorf("gitmirror: invalid repository URL %q", Redact(rawURL))
	}
	r := &remote{raw: rawURL}
	if isLocalPath(rawURL) {
		abs, err := filepath.Abs(rawURL)
		if err != nil {
			return nil, fmt.Errorf("gitmirror: %w", err)
		}
		r.raw = abs
	}
	r.public = stripUserinfo(r.raw)
	r.redacted = Redact(r.raw)
	r.fetchURL = r.raw
	if u, err := url.Parse(r.raw); err == nil && u.User != nil && isHTTP(u.Scheme) {
		pass, _ := u.User.Password()
		r.setBasic(u.User.Username(), pass)
	} else if err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			r.secrets = append(r.secrets, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}

	// The key does not depend on credentials: the same repository fetched
	// with another token is the same mirror.
	sum := sha256.Sum256([]byte(strings.TrimSuffix(r.public, "/")))
	r.key = hex.EncodeToString(sum[:8]) + "-" + readableName(r.public)
	return r, nil
}

// isLocalPath tells a local path from a URL, as git does: a URL has
// "scheme://", scp-like syntax ("host:path", "user@host:path") has a colon
// before the first slash; anything else is a path.
func isLocalPath(s string) bool {
	if strings.Contains(s, "://") {
		return false
	}
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return true
	}
	slash := strings.IndexByte(s, '/')
	return slash >= 0 && slash < colon
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// readableName is the last path element of a repository URL, safe as part
// of a file name: "https://host/org/kiln.git" gives "kiln".
func readableName(u string) string {
	u = strings.TrimRight(u, "/")
	if i := strings.LastIndexAny(u, "/:"); i >= 0 {
		u = u[i+1:]
	}
	u = strings.TrimSuffix(u, ".git")
	u = strings.Trim(unsafeChars.ReplaceAllString(u, "_"), "._-")
	if len(u) > 40 {
		u = u[:40]
	}
	if u == "" {
		u = "repo"
	}
	return u
}

// userinfoRE finds the userinfo of URLs in free text (git's messages).
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@\s'"]*)@`)

// Redact returns s, a repository URL or a message that contains URLs, with
// credentials replaced: "https://user:token@host" becomes
// "https://user:***@host". For http(s) a user name alone is also replaced
// ("https://***@host"), since tokens are often passed that way; the user of
// an ssh URL ("ssh://git@host") is not a secret and is kept.
func Redact(s string) string {
	return userinfoRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := userinfoRE.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		if user, _, ok := strings.Cut(info, ":"); ok {
			return scheme + user + ":***@"
		}
		if isHTTP(scheme) {
			return scheme + "***@"
		}
		return m
	})
}

func isHTTP(scheme string) bool {
	s := strings.ToLower(strings.TrimSuffix(scheme, "://"))
	return s == "http" || s == "https"
}

// stripUserinfo removes credentials from a URL; the user of an ssh URL is
// kept (it is needed, and not secret).
func stripUserinfo(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil || !strings.Contains(s, "://") {
		return s
	}
	if !isHTTP(u.Scheme) && u.User.Username() != "" {
		u.User = url.User(u.User.Username())
	} else {
		u.User = nil
	}
	return u.String()
}

// cleanPath turns a path in the repository into the form git's
// "<commit>:<path>" syntax takes: relative to the root, cleaned.
func cleanPath(p string) (string, error) {
	c := path.Clean("/" + p)[1:]
	if c == "" || strings.ContainsAny(p, "\x00\n") {
		return "", fmt.Errorf("gitmirror: invalid path %q", p)
	}
	return c, nil
}

// allowedProtocols is GIT_ALLOW_PROTOCOL for every git command: git itself
// then refuses any other transport, wherever the URL comes from (a
// redirect, a submodule, a remote helper's "ext::" or "fd::"). "file"
// covers local paths: a checkout clones from the local mirror. Whether a
// file:// remote may be fetched is decided before git runs (CheckURL).
const allowedProtocols = "https:http:ssh:git:file"

// sshSchemes are the URL schemes git treats as ssh.
var sshSchemes = map[string]bool{"ssh": true, "git+ssh": true, "ssh+git": true}

// CheckURL reports whether url is a repository URL Kiln may fetch: https,
// http, ssh (ssh:// or scp-like user@host:path), git, or a local path, and
// file:// only when allowFile is set (an admin's choice: it reads the
// server's own disk through git's full transport). Anything else, above all
// git's remote helpers ("ext::", "fd::", "<helper>::"), which run commands
// or talk over file descriptors, is refused with a message naming the
// transport.
func CheckURL(url string, allowFile bool) error {
	if url == "" {
		return fmt.Errorf("empty repository URL")
	}
	if strings.HasPrefix(url, "-") || strings.ContainsAny(url, "\x00\n\r") {
		return fmt.Errorf("invalid repository URL %q", Redact(url))
	}
	transport, ok := transportOf(url)
	switch {
	case !ok:
		return fmt.Errorf("repository URL %q uses git's remote helper %q, which Kiln does not allow: use an https, http, ssh or git URL, or a local path", Redact(url), transport+"::")
	case transport == "https", transport == "http", transport == "git", sshSchemes[transport], transport == "local":
		return nil
	case transport == "file" && allowFile:
		return nil
	case transport == "file":
		return fmt.Errorf("repository URL %q: file:// URLs are refused unless the server runs with -allow-file-remotes; use a local path, or an https, http, ssh or git URL", Redact(url))
	}
	return fmt.Errorf("repository URL %q: transport %q is not allowed: use an https, http, ssh or git URL, or a local path", Redact(url), transport)
}

// transportOf names the transport git would use for url, following git's
// own rules (transport.c): "<helper>::<address>" is a remote helper (ok is
// false), "scheme://" a URL, a colon before any slash scp-like ssh
// ("ssh"), anything else a local path ("local").
func transportOf(url string) (transport string, ok bool) {
	i := 0
	for i < len(url) && isSchemeChar(url[i], i == 0) {
		i++
	}
	if strings.HasPrefix(url[i:], "::") {
		return url[:i], false
	}
	if strings.HasPrefix(url[i:], "://") && i > 0 {
		return strings.ToLower(url[:i]), true
	}
	if isLocalPath(url) {
		return "local", true
	}
	return "ssh", true
}

// isSchemeChar is git's is_urlschemechar.
func isSchemeChar(c byte, first bool) bool {
	alpha := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
	if first {
		return alpha
	}
	return alpha || '0' <= c && c <= '9' || c == '+' || c == '.' || c == '-'
}

// SameRepository reports whether two repository URLs name the same
// repository on the same host, whatever their transport and credentials:
// "git@github.com:acme/web.git" and "https://github.com/acme/web" are the
// same. comparable is false when either is a local path or unparsable,
// when nothing can be said.
func SameRepository(a, b string) (same, comparable bool) {
	ha, pa, oka := hostPath(a)
	hb, pb, okb := hostPath(b)
	if !oka || !okb {
		return false, false
	}
	return ha == hb && pa == pb, true
}

// hostPath is a repository URL's host (lower-case, without user or port)
// and path (lower-case, without leading or trailing slashes or ".git").
// Forges treat owner and repository names without regard to case.
func hostPath(s string) (host, path string, ok bool) {
	if isLocalPath(s) || strings.HasPrefix(s, "file:") {
		return "", "", false
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() == "" {
			return "", "", false
		}
		host, path = u.Hostname(), u.Path
	} else {
		// scp-like: [user@]host:path
		hp, p, found := strings.Cut(s, ":")
		if !found {
			return "", "", false
		}
		if _, h, at := strings.Cut(hp, "@"); at {
			hp = h
		}
		host, path = hp, p
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	if host == "" || path == "" {
		return "", "", false
	}
	return strings.ToLower(host), strings.ToLower(path), true
}
