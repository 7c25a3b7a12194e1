package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

const poolUsage = "usage: kiln pool add NAME -labels self-hosted,linux -image IMAGE -max N -scope OWNER[/REPO] [flags] | ls | show NAME | rm NAME"

// runPool manages GitHub Actions runner pools (docs/actions.md).
func runPool(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(poolUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("kiln pool "+sub, flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var p api.PoolView
	var labels, scope, memory, agentLabels string
	var timeout time.Duration
	if sub == "add" {
		fs.StringVar(&labels, "labels", "", "the runs-on labels the pool serves, comma-separated, with self-hosted (a job matches when all its labels are here)")
		fs.StringVar(&p.Image, "image", "", "the runner image (the actions/runner binary baked in)")
		fs.IntVar(&p.MaxRunners, "max", 0, "most runners of the pool running at once")
		fs.StringVar(&scope, "scope", "", "where runners register: ORG (organization runners) or OWNER/REPO (repository runners)")
		fs.Int64Var(&p.InstallationID, "installation", 0, "the GitHub App's installation id on the scope's owner (with -github-app-id)")
		fs.Int64Var(&p.RunnerGroupID, "group", 0, "runner group id of organization runners (default 1, the default group)")
		fs.Float64Var(&p.CPUs, "cpus", 0, "CPUs per runner sandbox (default: the agent's)")
		fs.StringVar(&memory, "memory", "", "memory per runner sandbox, e.g. 4g (default: the agent's)")
		fs.Int64Var(&p.Pids, "pids", 0, "process limit per runner sandbox (default: the agent's)")
		fs.StringVar(&p.Command, "command", "", "the step that starts the runner (default \"exec /runner/run.sh\")")
		fs.StringVar(&agentLabels, "agent-labels", "", "Kiln agent labels a runner job needs, comma-separated")
		fs.DurationVar(&timeout, "timeout", 0, "a runner job's timeout (default: the runner's maximum lifetime plus 10m)")
		fs.IntVar(&p.Warm, "warm", 0, "idle runners to keep ready (at most -max)")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	switch {
	case sub == "add" && len(pos) == 1:
		p.Name, p.Labels, p.AgentLabels = pos[0], splitList(labels), splitList(agentLabels)
		p.Owner, p.Repo, _ = strings.Cut(scope, "/")
		p.TimeoutSeconds = int(timeout / time.Second)
		if memory != "" {
			if p.MemoryBytes, err = parseBytes(memory); err != nil {
				return fmt.Errorf("-memory: %w", err)
			}
		}
		var out api.PoolView
		if err := c.do(ctx, "POST", "/pools", p, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out)
		}
		fmt.Printf("pool %s added: labels %s, image %s, at most %d runners, scope %s\n", out.Name, strings.Join(out.Labels, ","), out.Image, out.MaxRunners, poolScope(&out))
		fmt.Printf("GitHub webhook (event workflow_job): %s/hooks/github-actions\n", c.server)
		return nil
	case sub == "ls" && len(pos) == 0:
		var ps []api.PoolView
		if err := c.do(ctx, "GET", "/pools", nil, &ps); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(ps)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tLABELS\tIMAGE\tMAX\tSCOPE\tINSTALLATION")
		for _, p := range ps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\n", p.Name, strings.Join(p.Labels, ","), p.Image, p.MaxRunners, poolScope(&p), p.InstallationID)
		}
		return tw.Flush()
	case sub == "show" && len(pos) == 1:
		var out api.PoolView
		if err := c.do(ctx, "GET", "/pools/"+url.PathEscape(pos[0]), nil, &out); err != nil {
			return err
		}
		return printJSON(out)
	case sub == "rm" && len(pos) == 1:
		var out struct {
			Canceled []int64 `json:"canceled_builds"`
		}
		if err := c.do(ctx, "DELETE", "/pools/"+url.PathEscape(pos[0]), nil, &out); err != nil {
			return err
		}
		fmt.Printf("pool %s removed; %d runner builds canceled\n", pos[0], len(out.Canceled))
		return nil
	}
	return errors.New(poolUsage)
}

func poolScope(p *api.PoolView) string {
	if p.Repo == "" {
		return p.Owner
	}
	return p.Owner + "/" + p.Repo
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
