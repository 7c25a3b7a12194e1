package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strings"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/store"
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
	var jobs []api.JobLog
	if err := c.do(ctx, "GET", fmt.Sprintf("/builds/%d/logs", id), nil, &jobs); err != nil {
		return err
	}
	for _, j := range jobs {
		p := &linePrinter{}
		for _, l := range j.Lines {
			p.print(j.Name, l)
		}
	}
	return nil
}

// prunedNotice says so when log retention deleted the build's logs: an
// empty log is otherwise indistinguishable from a build that printed nothing.
func prunedNotice(ctx context.Context, c *apiClient, id int64) error {
	var b store.Build
	if err := c.do(ctx, "GET", fmt.Sprintf("/builds/%d", id), nil, &b); err != nil {
		return err
	}
	if b.LogsPrunedAt != nil {
		fmt.Printf("[kiln] logs of this build were pruned on %s (log retention)\n", b.LogsPrunedAt.Local().Format("2006-01-02 15:04:05 MST"))
	}
	return nil
}

// linePrinter prints log lines and makes gaps in the sequence visible.
type linePrinter struct{ last map[string]int64 }

func (p *linePrinter) print(job string, l store.LogLine) {
	if p.last == nil {
		p.last = map[string]int64{}
	}
	key := fmt.Sprintf("%s/%d", job, l.Attempt)
	if prev := p.last[key]; l.Seq > prev+1 {
		fmt.Printf("[%s] [kiln] %d log lines missing (seq %d-%d)\n", job, l.Seq-prev-1, prev+1, l.Seq-1)
	}
	p.last[key] = l.Seq
	fmt.Printf("[%s] %s\n", job, l.Text)
}

// followLogs streams a build's log over SSE, then prints the result and
// returns an exitError unless the build succeeded.
func followLogs(ctx context.Context, c *apiClient, id int64) error {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/v1/builds/%d/logs/stream", c.server, id), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach Kiln at %s: %w", c.server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("log stream: %s (HTTP %d)", e.Error, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	p := &linePrinter{}
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			switch event {
			case "line":
				var l api.StreamLine
				if json.Unmarshal(data, &l) == nil {
					p.print(l.Job, l.LogLine)
				}
			case "end":
				var b store.Build
				if err := json.Unmarshal(data, &b); err != nil {
					return err
				}
				fmt.Println()
				printBuild(&b)
				if b.Status != store.StatusSuccess {
					return exitError(1)
				}
				return nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("log stream: %w", err)
	}
	return fmt.Errorf("log stream ended before build %d finished", id)
}
