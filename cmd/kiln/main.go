// Command kiln is Kiln's single binary: the control plane, the agent, both
// in one process, and the client commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kilnci/kiln/internal/protocol"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, usage string
	run         func(ctx context.Context, args []string) error
}

var commands = []command{
	{"up", "run the control plane and one agent in one process (SQLite, local files, local engine)", runUp},
	{"server", "run the control plane", runServer},
	{"agent", "run a host agent against a control plane", runAgent},
	{"migrate", "copy a SQLite installation's database into an empty PostgreSQL one", runMigrate},
	{"lint", "validate a .kiln.yml", runLint},
	{"project", "manage projects: add, ls, show, set, rm, secret", runProject},
	{"trigger", "start a build of a project's branch or commit", runTrigger},
	{"builds", "list builds", runBuilds},
	{"build", "show a build: build ID", runBuild},
	{"logs", "print a build's log; -f follows it live", runLogs},
	{"cancel", "cancel a build", runCancel},
	{"retry", "start a new build of a finished build's commit", runRetry},
	{"approve", "let a fork's build that waits for approval run", runApprove},
	{"reject", "cancel a fork's build that waits for approval", runReject},
	{"token", "manage API tokens: create, ls, revoke", runToken},
	{"login", "sign in through the server's single sign-on; the session is saved for the CLI", runLogin},
	{"logout", "end the saved session", runLogout},
	{"whoami", "who the CLI's credentials are, and their roles", runWhoami},
	{"role", "role bindings: set, list, rm", runRole},
	{"audit", "the audit log: who changed what, when, from where", runAudit},
	{"insights", "builds per day, failure rate, queue and job times, cache hits, slowest and flaky jobs: -project NAME, -days 7|30", runInsights},
	{"cache", "keyed cache entries: ls, rm, prune", runCache},
	{"artifacts", "a build's artifacts: list them, or get one job's (-o FILE, -x DIR)", runArtifacts},
	{"agents", "list agents", runAgents},
	{"pool", "GitHub Actions runner pools: add, ls, show, rm", runPool},
	{"runners", "list GitHub Actions runners and their jobs", runRunners},
	{"version", "print the version", func(context.Context, []string) error { fmt.Println("kiln", version); return nil }},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: kiln <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", c.name, c.usage)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'kiln <command> -h' for a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	protocol.KilnVersion = version
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts a graceful shutdown; a second one ends the
	// process at once (the default action, restored by stop).
	go func() { <-ctx.Done(); stop() }()
	for _, c := range commands {
		if c.name == os.Args[1] {
			err := c.run(ctx, os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(2)
			}
			var ee exitError
			if errors.As(err, &ee) {
				os.Exit(int(ee))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "kiln:", err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "kiln: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}

// exitError ends the process with a status and no message (the command
// has printed what it had to say).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
