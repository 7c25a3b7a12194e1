package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

// runRunners lists GitHub Actions runner jobs and their runners' states.
func runRunners(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln runners", flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pool := fs.String("pool", "", "only this pool's")
	all := fs.Bool("all", false, "also those that ended more than a day ago")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *pool != "" {
		q.Set("pool", *pool)
	}
	if *all {
		q.Set("all", "true")
	}
	var rs []api.RunnerView
	if err := c.do(ctx, "GET", "/runners?"+q.Encode(), nil, &rs); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(rs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUNNER\tSTATE\tPOOL\tPROJECT\tGITHUB JOB\tJOB STATUS\tBUILD\tKILN STATUS\tAGE\tLINK")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", r.Name, r.State, r.Pool, r.Project, r.GHJobID, r.JobStatus, r.BuildID, r.Status,
			time.Since(r.CreatedAt).Round(time.Second), r.HTMLURL)
	}
	return tw.Flush()
}
