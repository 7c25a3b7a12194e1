// Command insightsbench measures insights' queries with many builds in
// the store (issue 11), on a fresh SQLite file and a fresh PostgreSQL
// database in the same run, and prints the figures and their ratios.
//
//	go run ./bench/insightsbench                                  # SQLite only
//	go run ./bench/insightsbench -postgres "$KILN_TEST_POSTGRES"  # and PostgreSQL
//
// Each store is seeded with -builds builds (100,000) of -projects
// projects (10), finished over the last -spread days (365), three jobs
// each (build, test, lint), with a mix of results (about 85% success, 8%
// failure, 3% error, 2% canceled, 2% timed out), queue and run times,
// cache restores, and a retry of the same commit for a fifth of the
// failures (most of which pass: flaky jobs). The rows go in by multi-row
// INSERTs through the store's handle, then ANALYZE (PostgreSQL: VACUUM
// ANALYZE), as a database that has been running a while has its
// statistics. A job's spec is about 2 KiB, as a small pipeline's.
//
// Timed, -n times each after one untimed warm-up, the median printed:
// the report (store.Insights, then insights.Compute: what GET
// /api/v1/insights does but for the JSON) over 7 and 30 days, for one
// project and overall; the baseline, in the same run, is a plain
// SELECT COUNT(*) of the same window's builds, and the same report on a
// store of a tenth of the builds over a tenth of the days (as many builds
// a day, so the same window's rows): what the store's size costs.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kilnci/kiln/bench/internal/seed"
	"github.com/kilnci/kiln/internal/insights"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
)

func main() {
	builds := flag.Int("builds", 100_000, "builds to seed")
	projects := flag.Int("projects", 10, "projects they belong to")
	spread := flag.Int("spread", 365, "days over which they finished (the last N days)")
	n := flag.Int("n", 5, "timed runs of each query (the median is printed)")
	pg := flag.String("postgres", "", "a PostgreSQL server's URL (a role that may create databases); empty: SQLite only")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the timed runs to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	now := time.Now()
	fmt.Printf("insightsbench: %d builds of %d projects over the last %d days, 3 jobs each (and, the baseline, a tenth of them over a tenth of the days); %d runs per figure (median)\n",
		*builds, *projects, *spread, *n)
	big := seed.Plan{Builds: *builds, Projects: *projects, Spread: *spread, Now: now}
	small := seed.Plan{Builds: *builds / 10, Projects: *projects, Spread: max(*spread/10, 1), Now: now}

	dir, err := os.MkdirTemp("", "insightsbench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	dialects := []string{"sqlite"}
	if *pg != "" {
		dialects = append(dialects, "postgres")
	}
	results := map[string]map[string]time.Duration{}
	for _, d := range dialects {
		for _, plan := range []seed.Plan{small, big} {
			var database string
			drop := func() {}
			if d == "sqlite" {
				database = filepath.Join(dir, fmt.Sprintf("kiln-%d.db", plan.Builds))
			} else {
				database, drop = pgDatabase(ctx, *pg)
			}
			results[fmt.Sprintf("%s %d", d, plan.Builds)] = run(ctx, d, database, plan, *n)
			drop()
		}
		fmt.Printf("\n%s: report with %d builds in the store / with %d (the same builds per day):\n", d, big.Builds, small.Builds)
		for _, k := range figureOrder {
			if strings.HasPrefix(k, "report") {
				fmt.Printf("  %-20s %.2f×\n", k, float64(results[fmt.Sprintf("%s %d", d, big.Builds)][k])/float64(results[fmt.Sprintf("%s %d", d, small.Builds)][k]))
			}
		}
	}
	if len(dialects) == 2 {
		fmt.Printf("\nreport on PostgreSQL / on SQLite, %d builds:\n", big.Builds)
		for _, k := range figureOrder {
			if strings.HasPrefix(k, "report") {
				fmt.Printf("  %-20s %.2f×\n", k, float64(results[fmt.Sprintf("postgres %d", big.Builds)][k])/float64(results[fmt.Sprintf("sqlite %d", big.Builds)][k]))
			}
		}
	}
}

var figureOrder = []string{"count 7d project", "report 7d project", "count 7d overall", "report 7d overall",
	"count 30d project", "report 30d project", "count 30d overall", "report 30d overall"}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "insightsbench:", err)
	os.Exit(1)
}

// run seeds a fresh store and times the figures.
func run(ctx context.Context, name, database string, plan seed.Plan, n int) map[string]time.Duration {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secretbox.New(key)
	if err != nil {
		fail(err)
	}
	s, err := store.Open(ctx, database, box)
	if err != nil {
		fail(err)
	}
	defer s.Close()
	t0 := time.Now()
	ids, err := plan.Into(ctx, s)
	if err != nil {
		fail(fmt.Errorf("%s: seed: %w", name, err))
	}
	var total int
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM builds`).Scan(&total); err != nil {
		fail(err)
	}
	fmt.Printf("\n%s, %d builds (%d with the retries) over %d days: seeded in %v\n", name, plan.Builds, total, plan.Spread, time.Since(t0).Round(time.Millisecond))
	out := map[string]time.Duration{}
	for _, days := range insights.Windows {
		win, err := insights.NewWindow(plan.Now, days)
		if err != nil {
			fail(err)
		}
		for _, scope := range []string{"project", "overall"} {
			q := win.Query(scope == "overall", ids[:1])
			var rows int
			count := median(n, func() {
				cond, args := "", []any{win.Since.UnixMilli(), win.Until.UnixMilli()}
				if scope == "project" {
					cond, args = " AND project_id = ?", append(args, ids[0])
				}
				if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE finished_at >= ? AND finished_at < ?`+cond, args...).Scan(&rows); err != nil {
					fail(err)
				}
			})
			var r insights.Report
			report := median(n, func() {
				d, err := s.Insights(ctx, q)
				if err != nil {
					fail(err)
				}
				r = insights.Compute(win, d)
			})
			key := fmt.Sprintf("%dd %s", days, scope)
			out["count "+key], out["report "+key] = count, report
			fmt.Printf("  %-12s %6d builds, %6d job runs, %3d flaky jobs: report %9v, count(*) %9v, ratio %6.1f×\n", key, rows, jobRuns(r),
				len(r.Flaky), report.Round(10*time.Microsecond), count.Round(10*time.Microsecond), float64(report)/float64(count))
		}
	}
	return out
}

func jobRuns(r insights.Report) int {
	n := 0
	for _, j := range r.Jobs {
		n += j.Runs
	}
	return n
}

// median runs f once untimed, then n times, and returns the median time.
func median(n int, f func()) time.Duration {
	f()
	ds := make([]time.Duration, n)
	for i := range ds {
		t0 := time.Now()
		f()
		ds[i] = time.Since(t0)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// pgDatabase creates an empty database on the server at admin and
// returns its URL and what drops it.
func pgDatabase(ctx context.Context, admin string) (string, func()) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "kiln_insightsbench_" + hex.EncodeToString(b[:])
	db, err := sql.Open("pgx", admin)
	if err != nil {
		fail(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		fail(fmt.Errorf("create database: %w", err))
	}
	u, err := url.Parse(admin)
	if err != nil {
		fail(err)
	}
	u.Path = "/" + name
	return u.String(), func() {
		defer db.Close()
		if _, err := db.ExecContext(ctx, `DROP DATABASE `+name); err != nil {
			fmt.Fprintln(os.Stderr, "insightsbench: drop database:", err)
		}
	}
}
