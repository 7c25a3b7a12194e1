package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"

	"github.com/kilnci/kiln/internal/api"
)

const roleUsage = "usage: kiln role set PROJECT|'*' (-user EMAIL|SUBJECT | -group GROUP) viewer|maintainer|admin | list | rm PROJECT|'*' (-user … | -group …)"

// runRole manages role bindings (docs/auth.md): who holds which role on
// a project, or on every project ('*').
func runRole(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(roleUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("kiln role "+sub, flag.ContinueOnError)
	connect := clientFlags(fs)
	user := fs.String("user", "", "the user: an email or the provider's subject")
	group := fs.String("group", "", "a group of the provider's groups claim")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case (sub == "set" && len(pos) == 2) || (sub == "rm" && len(pos) == 1):
		if (*user == "") == (*group == "") {
			return errors.New("kiln role " + sub + ": give one of -user and -group")
		}
		c, err := connect()
		if err != nil {
			return err
		}
		if sub == "rm" {
			q := url.Values{"project": {pos[0]}}
			if *user != "" {
				q.Set("user", *user)
			} else {
				q.Set("group", *group)
			}
			return c.do(ctx, "DELETE", "/roles?"+q.Encode(), nil, nil)
		}
		var out api.RoleBindingView
		if err := c.do(ctx, "PUT", "/roles", api.RoleRequest{Project: pos[0], User: *user, Group: *group, Role: pos[1]}, &out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s on %s: %s\n", bindingWho(out), out.Project, out.Role)
		return nil
	case (sub == "ls" || sub == "list") && len(pos) == 0:
		c, err := connect()
		if err != nil {
			return err
		}
		var bs []api.RoleBindingView
		if err := c.do(ctx, "GET", "/roles", nil, &bs); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PROJECT\tWHO\tROLE\tSINCE")
		for _, b := range bs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Project, bindingWho(b), b.Role, b.CreatedAt.Local().Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	}
	return errors.New(roleUsage)
}

func bindingWho(b api.RoleBindingView) string {
	if b.Group != "" {
		return "group " + b.Group
	}
	return "user " + b.User
}
