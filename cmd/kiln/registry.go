package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

// projectRegistry: registry add PROJECT HOST -user NAME (the password read
// from stdin, so it stays out of shell history and process lists),
// registry list PROJECT, registry remove PROJECT HOST.
func projectRegistry(ctx context.Context, c *apiClient, pos []string, user string, asJSON bool) error {
	const usage = "usage: kiln project registry add PROJECT HOST -user NAME < password | registry list PROJECT | registry remove PROJECT HOST"
	if len(pos) < 2 {
		return errors.New(usage)
	}
	base := "/projects/" + url.PathEscape(pos[1]) + "/registries"
	switch {
	case pos[0] == "add" && len(pos) == 3:
		if user == "" {
			return errors.New("registry add: -user NAME is required (" + usage + ")")
		}
		password, err := readSecretValue(os.Stdin, isTerminal(os.Stdin))
		if err != nil {
			return fmt.Errorf("the registry's password: %w", err)
		}
		if err := c.do(ctx, "PUT", base+"/"+url.PathEscape(pos[2]), api.RegistryRequest{Username: user, Password: password}, nil); err != nil {
			return err
		}
		fmt.Printf("project %s pulls from %s as %s\n", qs(pos[1]), qs(pos[2]), qs(user))
		return nil
	case (pos[0] == "list" || pos[0] == "ls") && len(pos) == 2:
		var regs []api.RegistryView
		if err := c.do(ctx, "GET", base, nil, &regs); err != nil {
			return err
		}
		if asJSON {
			return printJSON(regs)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tUSER\tUPDATED")
		for _, r := range regs {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", qs(r.Host), qs(r.Username), r.UpdatedAt.Local().Format(time.DateTime))
		}
		return tw.Flush()
	case (pos[0] == "remove" || pos[0] == "rm") && len(pos) == 3:
		return c.do(ctx, "DELETE", base+"/"+url.PathEscape(pos[2]), nil, nil)
	}
	return errors.New(usage)
}
