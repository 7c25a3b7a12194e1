package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/kilnci/kiln/internal/pipeline"
)

// runLint validates pipeline files locally, printing every problem as
// FILE:LINE:COL: field: message.
func runLint(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln lint", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, "usage: kiln lint [FILE...]   (default .kiln.yml)") }
	files, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		files = []string{".kiln.yml"}
	}
	bad := false
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			bad = true
			continue
		}
		p, err := pipeline.Parse(f, data)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			bad = true
			continue
		}
		jobs := p.Compile()
		steps := 0
		for _, j := range jobs {
			steps += len(j.Steps)
		}
		fmt.Printf("%s: ok (%d jobs, %d steps)\n", f, len(jobs), steps)
	}
	if bad {
		return exitError(1)
	}
	return nil
}
