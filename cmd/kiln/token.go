package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/kilnci/kiln/internal/api"
)

func runToken(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: kiln token create [-kind admin|agent] NAME | ls | revoke ID")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("kiln token "+sub, flag.ContinueOnError)
	connect := clientFlags(fs)
	kind := fs.String("kind", "admin", "admin (REST API) or agent (agent protocol only)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	switch {
	case sub == "create" && len(pos) == 1:
		var out struct {
			Token  api.TokenView
			Secret string
		}
		if err := c.do(ctx, "POST", "/tokens", map[string]string{"name": pos[0], "kind": *kind}, &out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s token %q created (id %d); it is shown once:\n", out.Token.Kind, out.Token.Name, out.Token.ID)
		fmt.Println(out.Secret)
		return nil
	case sub == "ls" && len(pos) == 0:
		var ts []api.TokenView
		if err := c.do(ctx, "GET", "/tokens", nil, &ts); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tKIND\tCREATED\tLAST USED")
		for _, t := range ts {
			used := "never"
			if t.LastUsed != nil {
				used = t.LastUsed.Local().Format("2006-01-02 15:04")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Kind, t.CreatedAt.Local().Format("2006-01-02 15:04"), used)
		}
		return tw.Flush()
	case sub == "revoke" && len(pos) == 1:
		return c.do(ctx, "DELETE", "/tokens/"+pos[0], nil, nil)
	}
	return errors.New("usage: kiln token create [-kind admin|agent] NAME | ls | revoke ID")
}
