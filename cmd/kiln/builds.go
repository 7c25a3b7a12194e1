package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/termtext"
)

func buildIDArg(pos []string, usage string) (int64, error) {
	if len(pos) != 1 {
		return 0, errors.New("usage: " + usage)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("invalid build id %q", pos[0])
	}
	return id, nil
}

// runTrigger starts a build; with -f it follows the log and exits with the
// build's outcome (0 on success), which makes it usable in scripts.
func runTrigger(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln trigger", flag.ContinueOnError)
	connect := clientFlags(fs)
	branch := fs.String("branch", "", "branch to build (default: the project's default branch)")
	commit := fs.String("commit", "", "exact commit SHA to build (default: the branch's head)")
	follow := fs.Bool("f", false, "follow the build's log and exit with its result")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: kiln trigger PROJECT [-branch B] [-commit SHA] [-f]")
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var b api.BuildView
	if err := c.do(ctx, "POST", "/projects/"+url.PathEscape(pos[0])+"/builds", api.TriggerRequest{Branch: *branch, Commit: *commit}, &b); err != nil {
		return err
	}
	fmt.Printf("build %d (%s #%d) queued\n", b.ID, qs(b.Project), b.Number)
	if !*follow {
		return nil
	}
	return followLogs(ctx, c, b.ID)
}

func runBuilds(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln builds", flag.ContinueOnError)
	connect := clientFlags(fs)
	project := fs.String("project", "", "only this project's builds")
	status := fs.String("status", "", "only builds in this status")
	limit := fs.Int("n", 20, "how many")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *project != "" {
		q.Set("project", *project)
	}
	if *status != "" {
		q.Set("status", *status)
	}
	var bs []api.BuildView
	if err := c.do(ctx, "GET", "/builds?"+q.Encode(), nil, &bs); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(bs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROJECT\t#\tSTATUS\tBRANCH\tCOMMIT\tTRIGGER\tCREATED\tDURATION")
	for _, b := range bs {
		status, branch := string(b.Status), qs(b.Branch)
		if pr := b.PullRequest; pr != nil {
			branch = fmt.Sprintf("#%d %s", pr.Number, qs(pr.HeadBranch))
		}
		if b.Approval == store.ApprovalWaiting && b.Status == store.StatusQueued {
			status = "waiting for approval"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, qs(b.Project), b.Number, status, branch, qs(shortSHA(b.Commit)), b.Trigger,
			b.CreatedAt.Local().Format("2006-01-02 15:04:05"), duration(b.StartedAt, b.FinishedAt))
	}
	return tw.Flush()
}

func shortSHA(s string) string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

func duration(start, end *time.Time) string {
	if start == nil {
		return "-"
	}
	e := time.Now()
	if end != nil {
		e = *end
	}
	return e.Sub(*start).Round(10 * time.Millisecond).String()
}

func runBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln build", flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	id, err := buildIDArg(pos, "kiln build ID")
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var b api.BuildView
	if err := c.do(ctx, "GET", fmt.Sprintf("/builds/%d", id), nil, &b); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(b)
	}
	printBuild(&b)
	return nil
}

func printBuild(b *api.BuildView) {
	fmt.Printf("build %d: %s #%d  %s\n", b.ID, qs(b.Project), b.Number, b.Status)
	fmt.Printf("  ref %s  commit %s  trigger %s  duration %s\n", qs(b.Ref), qs(b.Commit), b.Trigger, duration(b.StartedAt, b.FinishedAt))
	if pr := b.PullRequest; pr != nil {
		from := "branch " + qs(pr.HeadBranch)
		if pr.Fork {
			from = "fork branch " + qs(pr.HeadBranch) + " (untrusted: no secrets, read-only caches)"
		}
		fmt.Printf("  request #%d  %s → %s  from %s\n", pr.Number, qs(pr.Title), qs(pr.BaseBranch), from)
	}
	switch b.Approval {
	case store.ApprovalWaiting:
		fmt.Printf("  waiting for approval: kiln approve %d, or kiln reject %d\n", b.ID, b.ID)
	case store.ApprovalApproved, store.ApprovalRejected:
		fmt.Printf("  %s by %s\n", b.Approval, qs(b.ApprovedBy))
	}
	if b.Message != "" {
		subject, _, _ := strings.Cut(b.Message, "\n")
		fmt.Printf("  message %s\n", qs(strings.TrimRight(subject, "\r")))
	}
	if b.Error != "" {
		printText("  ", b.Error)
	}
	for _, j := range b.Jobs {
		fmt.Printf("  job %-20s %-9s attempt %d  %s\n", qs(j.Name), j.Status, j.Attempt, duration(j.StartedAt, j.FinishedAt))
		if j.Error != "" {
			printText("      ", j.Error)
		}
		for _, s := range j.Steps {
			code := ""
			if s.ExitCode != nil {
				code = fmt.Sprintf("exit %d", *s.ExitCode)
			}
			fmt.Printf("    step %-30s %-9s %-8s %s\n", qs(s.Name), s.Status, code, duration(s.StartedAt, s.FinishedAt))
		}
	}
}

func runCancel(ctx context.Context, args []string) error {
	return buildAction(ctx, args, "cancel")
}

func runRetry(ctx context.Context, args []string) error {
	return buildAction(ctx, args, "retry")
}

func runApprove(ctx context.Context, args []string) error {
	return buildAction(ctx, args, "approve")
}

func runReject(ctx context.Context, args []string) error {
	return buildAction(ctx, args, "reject")
}

func buildAction(ctx context.Context, args []string, action string) error {
	fs := flag.NewFlagSet("kiln "+action, flag.ContinueOnError)
	connect := clientFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	id, err := buildIDArg(pos, "kiln "+action+" BUILD_ID")
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var b api.BuildView
	if err := c.do(ctx, "POST", fmt.Sprintf("/builds/%d/%s", id, action), nil, &b); err != nil {
		return err
	}
	switch action {
	case "retry":
		fmt.Printf("build %d (%s #%d) queued, retrying build %d\n", b.ID, qs(b.Project), b.Number, id)
	case "approve":
		fmt.Printf("build %d (%s #%d) approved: it runs now\n", b.ID, qs(b.Project), b.Number)
	case "reject":
		fmt.Printf("build %d (%s #%d) rejected: %s\n", b.ID, qs(b.Project), b.Number, b.Status)
	default:
		fmt.Printf("build %d: cancel requested (%s)\n", b.ID, b.Status)
	}
	return nil
}

func runAgents(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln agents", flag.ContinueOnError)
	connect := clientFlags(fs)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var as []api.AgentView
	if err := c.do(ctx, "GET", "/agents", nil, &as); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tLABELS\tCAPACITY\tVERSION\tPROTOCOL\tLAST SEEN\tSTATE")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\t%s\t%s ago\t%s\n", qs(a.ID), qs(a.Name), a.Labels, a.Capacity, qs(a.Version), qs(a.Protocol), time.Since(a.LastSeen).Round(time.Second), agentState(a))
	}
	return tw.Flush()
}

// agentState says an agent's state under the broken-agent policy, with
// its streak of errors and, when quarantined, for how much longer.
func agentState(a api.AgentView) string {
	switch {
	case a.State == "quarantined" && a.QuarantinedUntil != nil:
		return fmt.Sprintf("quarantined for %s (%d errors in a row)", time.Until(*a.QuarantinedUntil).Round(time.Second), a.ErrorStreak)
	case a.State == "probing":
		return fmt.Sprintf("probing (%d errors in a row)", a.ErrorStreak)
	}
	return a.State
}

// qs shows a user-controlled name (branch, project, job, step, commit) as
// it is if it is printable, escaped and quoted if not: a control or
// bidirectional character in it is seen, not obeyed by the terminal.
func qs(s string) string { return termtext.Quote(s) }

// printText prints a possibly multi-line text (an error) line by line,
// each made safe for the terminal, after indent.
func printText(indent, text string) {
	for _, l := range strings.Split(text, "\n") {
		fmt.Printf("%s%s\n", indent, termtext.Log(l))
	}
}
