package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/kilnci/kiln/internal/apiclient"
)

// apiClient is the CLI's REST client.
type apiClient struct {
	server, token string
	http          *http.Client
}

// clientFlags adds --server and --token. The token defaults to $KILN_TOKEN,
// then the session kiln login saved for the server, then the admin token
// `kiln up` saved in the data dir.
func clientFlags(fs *flag.FlagSet) func() (*apiClient, error) {
	server := fs.String("server", envOr("KILN_SERVER", "http://127.0.0.1:8080"), "Kiln server URL ($KILN_SERVER)")
	token := fs.String("token", os.Getenv("KILN_TOKEN"), "API token ($KILN_TOKEN; default: kiln login's session for the server in $KILN_HOME/session, else the admin token in $KILN_HOME/admin-token)")
	return func() (*apiClient, error) {
		base := strings.TrimRight(*server, "/")
		t, err := clientToken(*token, base)
		if err != nil {
			return nil, err
		}
		return &apiClient{server: base, token: t, http: &http.Client{}}, nil
	}
}

// clientToken is the token the CLI sends to server: the flag's (or
// $KILN_TOKEN's), else the saved session's, else the saved admin token.
func clientToken(given, server string) (string, error) {
	if given != "" {
		return given, nil
	}
	if s, ok := loadSession(server); ok {
		return s.Token, nil
	}
	b, err := os.ReadFile(filepath.Join(defaultDataDir(), "admin-token"))
	if err != nil {
		return "", errors.New("no API token: pass -token, set KILN_TOKEN, sign in with 'kiln login', or run on the machine where 'kiln up' saved one")
	}
	return strings.TrimSpace(string(b)), nil
}

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	return c.api().Do(ctx, method, "/api/v1"+path, in, out)
}

func (c *apiClient) api() apiclient.Client {
	return apiclient.Client{URL: c.server, Token: c.token, HTTP: c.http, UserAgent: "kiln-cli/" + version}
}

// printJSON prints v indented (for -json output).
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseArgs parses flags that may come before or after positional
// arguments (Go's flag package stops at the first positional one).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
