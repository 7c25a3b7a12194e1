package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
)

// savedSession is what kiln login keeps in $KILN_HOME/session (0600):
// the session's token and the server it is good for (it is sent to no
// other).
type savedSession struct {
	Server    string    `json:"server"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func sessionFile() string { return filepath.Join(defaultDataDir(), "session") }

// loadSession is the saved session for server, if any.
func loadSession(server string) (savedSession, bool) {
	b, err := os.ReadFile(sessionFile())
	if err != nil {
		return savedSession{}, false
	}
	var s savedSession
	if json.Unmarshal(b, &s) != nil || s.Token == "" || strings.TrimRight(s.Server, "/") != strings.TrimRight(server, "/") {
		return savedSession{}, false
	}
	return s, true
}

func saveSession(s savedSession) error {
	if err := os.MkdirAll(defaultDataDir(), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(s)
	tmp := sessionFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, sessionFile())
}

// cliLogin signs in at server through its provider: it listens on a
// loopback port, has open show the user the server's login URL (which
// sends the browser back to that port with a one-time code), and trades
// the code for a session (POST /auth/cli/exchange).
func cliLogin(ctx context.Context, hc *http.Client, server string, open func(loginURL string)) (*api.CLIExchangeResponse, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("login: listen on loopback: %w", err)
	}
	defer ln.Close()
	state := rand.Text()
	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/callback" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 || q.Get("code") == "" {
			// Not our sign-in's answer (a stray request, or another
			// page's): refused, and we keep waiting.
			http.Error(w, "not this kiln login's sign-in", http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "Signed in to Kiln. You can close this tab and return to the terminal.")
		select {
		case got <- result{code: q.Get("code")}:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	redirect := "http://" + ln.Addr().String() + "/callback"
	open(server + "/auth/login?" + url.Values{"cli_redirect": {redirect}, "cli_state": {state}}.Encode())

	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		return nil, errors.New("login: no sign-in came back within 10 minutes (or interrupted)")
	}
	var out api.CLIExchangeResponse
	c := apiclient.Client{URL: server, HTTP: hc, UserAgent: "kiln-cli/" + version}
	if err := c.Do(ctx, "POST", "/auth/cli/exchange", api.CLIExchangeRequest{Code: r.code}, &out); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return &out, nil
}

func runLogin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln login", flag.ContinueOnError)
	server := fs.String("server", envOr("KILN_SERVER", "http://127.0.0.1:8080"), "Kiln server URL ($KILN_SERVER)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	base := strings.TrimRight(*server, "/")
	out, err := cliLogin(ctx, &http.Client{}, base, func(u string) {
		fmt.Fprintf(os.Stderr, "Open this URL in a browser on this machine to sign in:\n\n  %s\n\nWaiting for the sign-in...\n", u)
	})
	if err != nil {
		return err
	}
	if err := saveSession(savedSession{Server: base, Token: out.Token, ExpiresAt: out.ExpiresAt}); err != nil {
		return fmt.Errorf("login: save the session: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Signed in as %s until %s (session saved to %s).\n", whoName(out.User), out.ExpiresAt.Local().Format("2006-01-02 15:04"), sessionFile())
	return nil
}

func whoName(u *api.UserView) string {
	if u == nil {
		return "?"
	}
	if u.Email != "" {
		return u.Email
	}
	if u.Name != "" {
		return u.Name
	}
	return u.Subject
}

// runLogout ends the saved session on the server and forgets it.
func runLogout(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln logout", flag.ContinueOnError)
	server := fs.String("server", envOr("KILN_SERVER", "http://127.0.0.1:8080"), "Kiln server URL ($KILN_SERVER)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	base := strings.TrimRight(*server, "/")
	s, ok := loadSession(base)
	if !ok {
		return errors.New("logout: no saved session for " + base)
	}
	c := apiclient.Client{URL: base, Token: s.Token, HTTP: &http.Client{}, UserAgent: "kiln-cli/" + version}
	// A session already ended (HTTP 401) is forgotten all the same.
	if err := c.Do(ctx, "POST", "/auth/logout", nil, nil); err != nil && !strings.HasSuffix(err.Error(), "(HTTP 401)") {
		return fmt.Errorf("logout: %w", err)
	}
	if err := os.Remove(sessionFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintln(os.Stderr, "Signed out.")
	return nil
}

// runWhoami prints who the CLI's credentials are and their roles.
func runWhoami(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln whoami", flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var v api.SessionView
	if err := c.api().Do(ctx, "GET", "/auth/session", nil, &v); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(v)
	}
	return printWho(os.Stdout, v)
}

func printWho(w io.Writer, v api.SessionView) error {
	if v.User != nil {
		fmt.Fprintf(w, "user %s (subject %s)\n", whoName(v.User), v.User.Subject)
		if len(v.User.Groups) > 0 {
			fmt.Fprintf(w, "groups: %s\n", strings.Join(v.User.Groups, ", "))
		}
		if v.ExpiresAt != nil {
			fmt.Fprintf(w, "session until %s\n", v.ExpiresAt.Local().Format("2006-01-02 15:04"))
		}
	} else {
		fmt.Fprintf(w, "admin token %q\n", v.Token)
	}
	projects := make([]string, 0, len(v.Roles))
	for p := range v.Roles {
		projects = append(projects, p)
	}
	sort.Strings(projects)
	if len(projects) == 0 {
		fmt.Fprintln(w, "roles: none")
	}
	for _, p := range projects {
		fmt.Fprintf(w, "  %-20s %s\n", p, v.Roles[p])
	}
	return nil
}
