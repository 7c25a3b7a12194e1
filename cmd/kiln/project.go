package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/kilnci/kiln/internal/api"
)

func runProject(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: kiln project add|ls|show|set|rm|secret|registry ...")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("kiln project "+sub, flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var req api.ProjectRequest
	var cloneURL, branch, secret string
	var cancelSup, forks, drafts, badge string
	var forgeTokenStdin bool
	var onboard *onboardFlags
	if sub == "add" || sub == "set" {
		onboard = addOnboardFlags(fs)
		fs.Func("forge", "where commit statuses go: github, gitlab or gitea (\"\": nowhere)", strFlag(&req.Forge))
		fs.Func("forge-repo", "the forge's repository: owner/name (GitLab: group/name)", strFlag(&req.ForgeRepo))
		fs.Func("forge-url", "the forge's API base URL (github: GitHub's public API by default; required for gitlab and gitea)", strFlag(&req.ForgeURL))
		fs.BoolVar(&forgeTokenStdin, "forge-token-stdin", false, "read the forge API token (it may set commit statuses) from stdin")
		fs.Func("forge-installation", "github: the id of the server's GitHub App installation on the repository, instead of a token (0: none)", int64Flag(&req.ForgeInstallationID))
		fs.StringVar(&forks, "fork-pull-requests", "", "requests from forks: approve (they wait for kiln approve; the default), run, or off")
		fs.StringVar(&drafts, "draft-pull-requests", "", "draft requests: build (the default), or wait until they are ready")
		fs.StringVar(&badge, "badge", "", "who sees the status badge /badge/NAME.svg: private (the default: those who may view the project) or public (anyone, for a README)")
		fs.StringVar(&cloneURL, "url", "", "clone URL (any git URL or a local path)")
		fs.StringVar(&branch, "branch", "", "default branch (add: main)")
		fs.StringVar(&secret, "webhook-secret", "", "secret shared with the forge's webhook (at least 16 characters)")
		fs.StringVar(&cancelSup, "cancel-superseded", "", "true: a new push cancels running and queued builds of the same branch")
		fs.Func("log-retention-days", "days a finished build's logs are kept (0: forever, -1: the server's default)", intFlag(&req.LogRetentionDays))
		fs.Func("log-max-bytes", "bytes of logs the project keeps, oldest builds' pruned first (0: no limit, -1: the server's default)", int64Flag(&req.LogMaxBytes))
		fs.Func("max-running", "jobs the project may run at once (0: no cap, -1: the server's default)", intFlag(&req.MaxRunning))
		fs.Func("weight", "the project's weight in the fair share across projects, 1 to 100 (default 1)", intFlag(&req.Weight))
	}
	var registryUser string
	if sub == "registry" {
		fs.StringVar(&registryUser, "user", "", "registry add: the registry's user name (the password is read from stdin)")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	if cloneURL != "" {
		req.CloneURL = &cloneURL
	}
	if branch != "" {
		req.DefaultBranch = &branch
	}
	if secret != "" {
		req.WebhookSecret = &secret
	}
	if cancelSup != "" {
		v := cancelSup == "true"
		req.CancelSuperseded = &v
	}
	if forks != "" {
		req.ForkPullRequests = &forks
	}
	if forgeTokenStdin {
		token, err := readSecretValue(os.Stdin, isTerminal(os.Stdin))
		if err != nil {
			return fmt.Errorf("forge token: %w", err)
		}
		req.ForgeToken = &token
	}
	if drafts != "" {
		req.DraftPullRequests = &drafts
	}
	if badge != "" {
		req.Badge = &badge
	}
	if onboard != nil {
		if err := onboard.apply(&req, sub, forgeTokenStdin || req.ForgeInstallationID != nil, os.Getenv); err != nil {
			return err
		}
	}
	need := func(n int, usage string) error {
		if len(pos) != n {
			return fmt.Errorf("usage: kiln project %s", usage)
		}
		return nil
	}
	var out api.ProjectView
	switch sub {
	case "add":
		if err := need(1, "add NAME -url URL [-branch B] [-webhook-secret S] [-cancel-superseded true] | add NAME -github OWNER/NAME [-github-url API] | -gitlab GROUP/NAME -gitlab-url URL | -gitea OWNER/NAME -gitea-url URL (token: $"+forgeTokenEnv+", -forge-token-stdin or -forge-installation ID)"); err != nil {
			return err
		}
		req.Name = pos[0]
		if err := c.do(ctx, "POST", "/projects", req, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out)
		}
		fmt.Printf("project %s added (clone %s, default branch %s)\n", qs(out.Name), qs(out.CloneURL), qs(out.DefaultBranch))
		if out.Webhook != nil {
			printWebhook(out)
			return nil
		}
		fmt.Printf("webhooks: %s%s (GitHub), %s%s (GitLab), %s%s (Gitea)\n", c.server, out.WebhookPaths[0], c.server, out.WebhookPaths[1], c.server, out.WebhookPaths[2])
		return nil
	case "set":
		if err := need(1, "set NAME [-url URL] [-branch B] [-webhook-secret S] [-cancel-superseded true|false] [-log-retention-days N] [-log-max-bytes N] [-max-running N] [-weight N] [-badge public|private] [-forge github|gitlab|gitea -forge-repo R [-forge-url URL] -forge-token-stdin|-forge-installation ID] [-github|-gitlab|-gitea REPO …] [-forge-webhook]"); err != nil {
			return err
		}
		if err := c.do(ctx, "PATCH", "/projects/"+url.PathEscape(pos[0]), req, &out); err != nil {
			return err
		}
		if err := printProject(out, *asJSON); err != nil || *asJSON {
			return err
		}
		printWebhook(out)
		return nil
	case "show":
		if err := need(1, "show NAME"); err != nil {
			return err
		}
		if err := c.do(ctx, "GET", "/projects/"+url.PathEscape(pos[0]), nil, &out); err != nil {
			return err
		}
		return printProject(out, *asJSON)
	case "ls":
		var ps []api.ProjectView
		if err := c.do(ctx, "GET", "/projects", nil, &ps); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(ps)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCLONE URL\tBRANCH\tWEBHOOK SECRET\tCANCEL SUPERSEDED")
		for _, p := range ps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\n", qs(p.Name), qs(p.CloneURL), qs(p.DefaultBranch), p.HasWebhookSecret, p.CancelSuperseded)
		}
		return tw.Flush()
	case "rm":
		if err := need(1, "rm NAME"); err != nil {
			return err
		}
		return c.do(ctx, "DELETE", "/projects/"+url.PathEscape(pos[0]), nil, nil)
	case "secret":
		return projectSecret(ctx, c, pos)
	case "registry":
		return projectRegistry(ctx, c, pos, registryUser, *asJSON)
	}
	return fmt.Errorf("unknown subcommand %q: want add, ls, show, set, rm, secret or registry", sub)
}

func printProject(p api.ProjectView, asJSON bool) error {
	if asJSON {
		return printJSON(p)
	}
	maxRunning := "the server's default"
	switch {
	case p.MaxRunning == nil:
	case *p.MaxRunning == 0:
		maxRunning = "no cap"
	default:
		maxRunning = strconv.Itoa(*p.MaxRunning)
	}
	fmt.Printf("name:              %s\nclone url:         %s\ndefault branch:    %s\nwebhook secret:    %v\ncancel superseded: %v\nfork requests:     %s\ndraft requests:    %s\nmax running:       %s\nweight:            %d\nbadge:             %s (/badge/%s.svg)\nwebhook paths:     %s\n",
		qs(p.Name), qs(p.CloneURL), qs(p.DefaultBranch), p.HasWebhookSecret, p.CancelSuperseded, p.ForkPullRequests, p.DraftPullRequests, maxRunning, p.Weight, p.Badge, p.Name, strings.Join(p.WebhookPaths, ", "))
	if p.Forge != nil {
		cred := fmt.Sprintf("token set: %v", p.HasForgeToken)
		if p.Forge.InstallationID != 0 {
			cred = fmt.Sprintf("GitHub App installation %d", p.Forge.InstallationID)
		}
		fmt.Printf("forge:             %s %s at %s (%s)\n", p.Forge.Forge, qs(p.Forge.Repo), qs(p.Forge.APIURL), cred)
	}
	return nil
}

// maxSecretValue bounds a secret's value read from stdin (the API takes
// request bodies of up to 1 MiB).
const maxSecretValue = 512 << 10

// readSecretValue reads a secret's value: from a terminal one line; from a
// pipe or file everything (a multi-line value, a key file, is stored
// whole), minus one trailing newline ("\n" or "\r\n").
func readSecretValue(r io.Reader, tty bool) (string, error) {
	var value string
	if tty {
		v, err := bufio.NewReader(r).ReadString('\n')
		if err != nil && v == "" {
			return "", fmt.Errorf("reading the secret's value from stdin: %w", err)
		}
		value = v
	} else {
		data, err := io.ReadAll(io.LimitReader(r, maxSecretValue+1))
		if err != nil {
			return "", fmt.Errorf("reading the secret's value from stdin: %w", err)
		}
		if len(data) > maxSecretValue {
			return "", fmt.Errorf("secret value longer than %d bytes", maxSecretValue)
		}
		value = string(data)
	}
	if v, ok := strings.CutSuffix(value, "\n"); ok {
		value = strings.TrimSuffix(v, "\r")
	}
	if value == "" {
		return "", errors.New("empty secret value on stdin")
	}
	return value, nil
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// projectSecret: secret set PROJECT NAME (value read from stdin, so it stays
// out of shell history and process lists), secret ls PROJECT, secret rm PROJECT NAME.
func projectSecret(ctx context.Context, c *apiClient, pos []string) error {
	const usage = "usage: kiln project secret set PROJECT NAME < value | secret ls PROJECT | secret rm PROJECT NAME"
	if len(pos) < 2 {
		return errors.New(usage)
	}
	base := "/projects/" + url.PathEscape(pos[1]) + "/secrets"
	switch {
	case pos[0] == "set" && len(pos) == 3:
		value, err := readSecretValue(os.Stdin, isTerminal(os.Stdin))
		if err != nil {
			return err
		}
		return c.do(ctx, "PUT", base+"/"+url.PathEscape(pos[2]), map[string]string{"value": value}, nil)
	case pos[0] == "ls" && len(pos) == 2:
		var out struct{ Names []string }
		if err := c.do(ctx, "GET", base, nil, &out); err != nil {
			return err
		}
		for _, n := range out.Names {
			fmt.Println(qs(n))
		}
		return nil
	case pos[0] == "rm" && len(pos) == 3:
		return c.do(ctx, "DELETE", base+"/"+url.PathEscape(pos[2]), nil, nil)
	}
	return errors.New(usage)
}

// strFlag sets *p to the flag's value (so an empty value is still set).
func strFlag(p **string) func(string) error {
	return func(v string) error {
		*p = &v
		return nil
	}
}
