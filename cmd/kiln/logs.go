package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/termtext"
)

func runLogs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kiln logs", flag.ContinueOnError)
	connect := clientFlags(fs)
	follow := fs.Bool("f", false, "follow: stream lines live until the build ends, then exit with its result")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	id, err := buildIDArg(pos, "kiln logs [-f] BUILD_ID")
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	if err := prunedNotice(ctx, c, id); err != nil {
		return err
	}
	if *follow {
		return followLogs(ctx, c, id)
	}
	return printBuildLogs(ctx, c.api(), id, newLinePrinter(os.Stdout))
}

// printBuildLogs prints a build's whole stored log, every page of it.
func printBuildLogs(ctx context.Context, c apiclient.Client, id int64, p *linePrinter) error {
	return c.BuildLogs(ctx, id, 0, func(j api.JobLog) error {
		for _, l := range j.Lines {
			p.print(j.Name, l)
		}
		return p.err
	})
}

// prunedNotice says so when log retention deleted the build's logs: an
// empty log is otherwise indistinguishable from a build that printed nothing.
func prunedNotice(ctx context.Context, c *apiClient, id int64) error {
	var b api.BuildView
	if err := c.do(ctx, "GET", fmt.Sprintf("/builds/%d", id), nil, &b); err != nil {
		return err
	}
	if b.LogsPrunedAt != nil {
		fmt.Printf("[kiln] logs of this build were pruned on %s (log retention)\n", b.LogsPrunedAt.Local().Format("2006-01-02 15:04:05 MST"))
	}
	return nil
}

// linePrinter prints log lines and makes gaps in the sequence visible.
//
// What reaches the terminal is made safe: a step's line keeps its colours
// but no other escape sequence or control character (termtext.Log), job
// names are escaped if need be. Kiln's own lines (step -1: written by the
// agent's code, never by a step) start with "[kiln]", in bold on a
// terminal; a step's line that would look like one (its visible text
// starts with "[kiln]") is printed after "[step]", so it cannot pass for
// one.
type linePrinter struct {
	w    io.Writer
	tty  bool
	last map[string]int64
	err  error
}

func newLinePrinter(f *os.File) *linePrinter {
	return &linePrinter{w: f, tty: isTerminal(f)}
}

func (p *linePrinter) print(job string, l store.LogLine) {
	if p.last == nil {
		p.last = map[string]int64{}
	}
	job = qs(job)
	key := fmt.Sprintf("%s/%d", job, l.Attempt)
	if prev := p.last[key]; l.Seq > prev+1 {
		p.kiln(job, fmt.Sprintf("[kiln] %d log lines missing (seq %d-%d)", l.Seq-prev-1, prev+1, l.Seq-1))
	}
	p.last[key] = l.Seq
	text := termtext.Log(l.Text)
	if l.Step < 0 {
		p.kiln(job, text)
		return
	}
	if v := strings.TrimLeft(termtext.Visible(text), " \t"); strings.HasPrefix(v, "[kiln]") {
		text = "[step] " + text
	}
	p.printf("[%s] %s\n", job, text)
}

// kiln prints one of Kiln's own lines.
func (p *linePrinter) kiln(job, text string) {
	if p.tty {
		p.printf("[%s] \x1b[1m%s\x1b[0m\n", job, text)
		return
	}
	p.printf("[%s] %s\n", job, text)
}

func (p *linePrinter) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// followLogs streams a build's log over SSE, then prints the result and
// returns an exitError unless the build succeeded.
func followLogs(ctx context.Context, c *apiClient, id int64) error {
	p := newLinePrinter(os.Stdout)
	b, err := c.api().FollowLogs(ctx, id, func(l api.StreamLine) { p.print(l.Job, l.LogLine) })
	if err != nil {
		return err
	}
	fmt.Println()
	printBuild(b)
	if b.Status != store.StatusSuccess {
		return exitError(1)
	}
	return nil
}
