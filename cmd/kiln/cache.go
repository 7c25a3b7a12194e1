package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/cache"
)

const cacheUsage = "usage: kiln cache ls PROJECT | rm PROJECT ID | prune"

// runCache manages keyed cache entries (the cache service's; sticky volumes
// live on the agents' hosts and are pruned there by age).
func runCache(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(cacheUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("kiln cache "+sub, flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	switch {
	case sub == "ls" && len(pos) == 1:
		var entries []api.CacheEntryView
		if err := c.do(ctx, "GET", "/projects/"+url.PathEscape(pos[0])+"/caches", nil, &entries); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(entries)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKEY\tBRANCH\tSIZE\tCREATED\tLAST USED")
		var total int64
		for _, e := range entries {
			total += e.Size
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s ago\n", e.ID, e.Key, e.Scope, humanBytes(e.Size),
				e.Created.Local().Format("2006-01-02 15:04"), time.Since(e.LastUsed).Round(time.Second))
		}
		fmt.Fprintf(tw, "\t%d entries\t\t%s\t\t\n", len(entries), humanBytes(total))
		return tw.Flush()
	case sub == "rm" && len(pos) == 2:
		return c.do(ctx, "DELETE", "/projects/"+url.PathEscape(pos[0])+"/caches/"+url.PathEscape(pos[1]), nil, nil)
	case sub == "prune" && len(pos) == 0:
		var st cache.EvictStats
		if err := c.do(ctx, "POST", "/caches/prune", nil, &st); err != nil {
			return err
		}
		return printJSON(st)
	}
	return errors.New(cacheUsage)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
