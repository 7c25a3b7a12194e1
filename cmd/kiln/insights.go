package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

// runInsights prints a window's insights (GET /api/v1/insights): one
// project's, or overall (every project the caller may view).
func runInsights(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln insights", flag.ContinueOnError)
	connect := clientFlags(fs)
	project := fs.String("project", "", "one project's insights (default: every project you may view)")
	days := fs.Int("days", 7, "the window: 7 or 30 days, the last of them today (UTC)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	q := url.Values{"days": {strconv.Itoa(*days)}}
	if *project != "" {
		q.Set("project", *project)
	}
	var v api.InsightsView
	if err := c.do(ctx, "GET", "/insights?"+q.Encode(), nil, &v); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(v)
	}
	return printInsights(os.Stdout, v)
}

// printInsights prints v as the other commands print: a summary, then
// one table per figure.
func printInsights(w io.Writer, v api.InsightsView) error {
	scope := "every project you may view"
	if v.Project != "" {
		scope = "project " + qs(v.Project)
	}
	fmt.Fprintf(w, "%s, the last %d days (%s to %s UTC)\n", scope, v.Days, v.Since.UTC().Format(time.DateOnly), v.Until.UTC().Format(time.DateOnly))
	b := v.Builds
	fmt.Fprintf(w, "builds: %d (%d success, %d failure, %d error, %d canceled); failure rate %s\n", b.Total, b.Success, b.Failure, b.Error, b.Canceled, percent(v.FailureRate))
	fmt.Fprintf(w, "queue time: p50 %s, p95 %s, max %s (%d jobs)\n", ms(v.QueueTime.P50MS), ms(v.QueueTime.P95MS), ms(v.QueueTime.MaxMS), v.QueueTime.Count)
	fmt.Fprintf(w, "cache: %d of %d restores hit (%s), %s restored\n", v.Cache.Hits, v.Cache.Restores, percent(v.Cache.HitRate), humanBytes(v.Cache.BytesRestored))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nDAY\tSUCCESS\tFAILURE\tERROR\tCANCELED")
	for _, d := range v.PerDay {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", d.Date, d.Success, d.Failure, d.Error, d.Canceled)
	}
	fmt.Fprintln(tw, "\nJOB\tRUNS\tFAILURES\tRETRIED\tP50\tP95\tMAX")
	for _, j := range v.Jobs {
		fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d\t%s\t%s\t%s\n", qs(j.Project), qs(j.Name), j.Runs, j.Failures, j.Retried, ms(j.Duration.P50MS), ms(j.Duration.P95MS), ms(j.Duration.MaxMS))
	}
	fmt.Fprintln(tw, "\nSLOWEST\tBUILD\tSTATUS\tDURATION\tFINISHED")
	for _, s := range v.Slowest {
		fmt.Fprintf(tw, "%s/%s\t%d (#%d)\t%s\t%s\t%s\n", qs(s.Project), qs(s.Job), s.BuildID, s.BuildNumber, s.Status, ms(s.DurationMS), s.FinishedAt.Local().Format("2006-01-02 15:04:05"))
	}
	fmt.Fprintln(tw, "\nFLAKY\tFLIPS\tCOMMITS\tLAST FAILED\tTHEN PASSED\tCOMMIT")
	for _, f := range v.Flaky {
		fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d (#%d)\t%d (#%d)\t%s\n", qs(f.Project), qs(f.Job), f.Flips, f.Commits, f.LastFailedBuild, f.LastFailedNumber,
			f.LastPassedBuild, f.LastPassedNumber, qs(shortSHA(f.LastCommit)))
	}
	return tw.Flush()
}

// percent prints a rate, or "-" for none.
func percent(r *float64) string {
	if r == nil {
		return "-"
	}
	return strconv.FormatFloat(*r*100, 'f', 1, 64) + "%"
}

// ms prints milliseconds as a duration.
func ms(n int64) string {
	return (time.Duration(n) * time.Millisecond).String()
}
