// Command ctlbench measures Kiln's control plane on its three shapes, side
// by side in one run with one load generator, and prints the ratios:
// SQLite with one server, PostgreSQL with one replica, and PostgreSQL with
// three replicas on one database.
//
//	go run ./bench/ctlbench -postgres 'postgres://postgres@/postgres?host=/run/kiln-postgres&port=5432'
//
// The PostgreSQL URL (-postgres, else $KILN_TEST_POSTGRES) names a server
// and a role that may create databases: each PostgreSQL setup runs on a
// fresh database, dropped after it. Without one, only SQLite is measured.
//
// The servers run in this process (internal/server, as `kiln server`
// wires it: several of them on one PostgreSQL database, each with a data
// dir of its own, as the end-to-end failover tests run replicas), on
// loopback ports. The load generator spreads its requests over the
// replicas itself, round robin per request: there is no load balancer.
//
// intake: -n signed GitHub push deliveries (the real example payload of
// @octokit/webhooks-examples, each a new commit of a local repository,
// so none is a duplicate) from -senders goroutines at once; deliveries
// per second and each delivery's latency to its answer (201, the build
// stored). It is preceded by an uncounted warm-up of 2 × -senders
// deliveries, whose builds are then canceled. The servers' planners plan
// the builds meanwhile (one job each), as they would.
//
// claims: once those -n jobs are queued, -agents agents (agent protocol
// clients with no engine: an agent token each, registered, capacity 1)
// claim them, each reporting its job a success at once; the time from
// the start to the -n-th claim (and to the -n-th finish).
//
// -cpuprofile DIR writes a CPU profile of this process (servers and load
// generator) for each setup and phase. On PostgreSQL the run samples
// what the database's sessions are doing (pg_stat_activity) every 10 ms.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kilnci/kiln/bench/internal/ghhook"
	"github.com/kilnci/kiln/bench/internal/stats"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

type options struct {
	postgres           string
	n, senders, agents int
	replicas           int
	cpuprofile         string
	only               string
}

func main() {
	var o options
	flag.StringVar(&o.postgres, "postgres", os.Getenv(storetest.Env), "PostgreSQL server URL (a role that may create databases); empty: SQLite only")
	flag.IntVar(&o.n, "n", 1000, "deliveries in the intake, and so jobs claimed")
	flag.IntVar(&o.senders, "senders", 16, "intake: concurrent senders")
	flag.IntVar(&o.agents, "agents", 20, "claims: agents")
	flag.IntVar(&o.replicas, "replicas", 3, "replicas of the last setup")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "directory for CPU profiles, SETUP-PHASE.pprof")
	flag.StringVar(&o.only, "only", "", "run only these setups (comma-separated: sqlite, pg1, pgN for -replicas N)")
	flag.Parse()
	if o.n < 1 || o.senders < 1 || o.agents < 1 || o.replicas < 2 {
		fail(errors.New("-n, -senders, -agents: at least 1; -replicas: at least 2"))
	}
	if err := run(context.Background(), o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ctlbench:", err)
	os.Exit(1)
}

// result is one setup's figures.
type result struct {
	setup    setup
	intake   intakeResult
	planned  time.Duration // from the intake's start to every job queued
	claims   claimResult
	cpu      [2]time.Duration // this process's CPU time in the intake, the claims
	pg       [2]pgSample
	tx       [2]phaseTx
	loadFrom string
	loadTo   string
}

func run(ctx context.Context, o options) error {
	setups := []setup{{"sqlite", false, 1}, {"pg1", true, 1}, {fmt.Sprintf("pg%d", o.replicas), true, o.replicas}}
	if o.only != "" {
		var keep []setup
		for _, s := range setups {
			if strings.Contains(","+o.only+",", ","+s.name+",") {
				keep = append(keep, s)
			}
		}
		setups = keep
	}
	pgFrom := "-postgres"
	if !slices.ContainsFunc(os.Args[1:], func(a string) bool { return strings.HasPrefix(strings.TrimLeft(a, "-"), "postgres") }) {
		pgFrom = "$" + storetest.Env
	}
	fmt.Printf("== ctlbench %s (PostgreSQL server from %s)\n", strings.Join(os.Args[1:], " "), pgFrom)
	fmt.Printf("date: %s; machine: %s\n", time.Now().UTC().Format(time.RFC3339), machine())
	if o.postgres == "" {
		fmt.Printf("no PostgreSQL server (-postgres or $%s): SQLite only\n", storetest.Env)
		setups = slices.DeleteFunc(setups, func(s setup) bool { return s.postgres })
	} else if v, err := postgresVersion(ctx, o.postgres); err == nil {
		fmt.Printf("postgresql: %s\n", v)
	}
	if len(setups) == 0 {
		return errors.New("no setup to run (-only: sqlite, pg1, pgN for -replicas N)")
	}
	fmt.Printf("intake: %d signed push deliveries, %d senders at once; claims: %d queued jobs, %d agents (capacity 1 each)\n", o.n, o.senders, o.n, o.agents)
	fixtures, err := ghhook.Fixtures()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ctlbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	warm := 2 * o.senders
	r, err := makeRepo(filepath.Join(dir, "repo"), warm+o.n)
	if err != nil {
		return err
	}
	var results []result
	for _, s := range setups {
		res, err := measure(ctx, o, s, r, fixtures, warm, filepath.Join(dir, s.name))
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		results = append(results, res)
		printResult(res)
	}
	summary(results)
	return nil
}

// measure starts setup s, sends the warm-up and the intake, waits for the
// jobs to be planned, and has the agents claim them.
func measure(ctx context.Context, o options, s setup, r *repo, fixtures string, warm int, dir string) (result, error) {
	res := result{setup: s, loadFrom: loadavg()}
	c, err := start(ctx, s, o.postgres, dir, discardLog())
	if err != nil {
		return res, err
	}
	defer c.stop()
	if err := c.api(ctx, "POST", "/api/v1/projects", map[string]any{"name": project, "clone_url": r.dir, "default_branch": "main", "webhook_secret": webhookSecret}, nil); err != nil {
		return res, err
	}
	run := fmt.Sprintf("ctlbench-%s-%d", s.name, time.Now().UnixNano())
	bodies, ids, err := deliveries(fixtures, run, r.commits)
	if err != nil {
		return res, err
	}
	// The warm-up: connections opened, the planners' git mirrors made.
	w, err := intake(ctx, c, o.senders, bodies[:warm], ids[:warm])
	if err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	for _, id := range w.builds {
		if err := c.api(ctx, "POST", fmt.Sprintf("/api/v1/builds/%d/cancel", id), nil, nil); err != nil {
			return res, fmt.Errorf("cancel a warm-up build: %w", err)
		}
	}
	if err := c.waitQueued(ctx, 0, time.Minute); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}

	var intakeErr error
	res.cpu[0], res.pg[0], res.tx[0], err = phase(ctx, o, c, s.name+"-intake", func() {
		res.intake, intakeErr = intake(ctx, c, o.senders, bodies[warm:], ids[warm:])
	})
	if err == nil {
		err = intakeErr
	}
	if err != nil {
		return res, fmt.Errorf("intake: %w", err)
	}
	if err := c.waitQueued(ctx, o.n, 10*time.Minute); err != nil {
		return res, fmt.Errorf("planning: %w", err)
	}
	res.planned = time.Since(res.intake.start)

	agents, err := newAgents(ctx, c, o.agents)
	if err != nil {
		return res, err
	}
	var claimErr error
	res.cpu[1], res.pg[1], res.tx[1], err = phase(ctx, o, c, s.name+"-claims", func() {
		res.claims, claimErr = claims(ctx, c, agents, o.n)
	})
	if err == nil {
		err = claimErr
	}
	if err != nil {
		return res, fmt.Errorf("claims: %w", err)
	}
	if res.claims.twice > 0 {
		return res, fmt.Errorf("claims: %d jobs claimed twice", res.claims.twice)
	}
	res.loadTo = loadavg()
	return res, nil
}

// phaseTx is a phase's store transactions over its wall time.
type phaseTx struct {
	store.TxStats
	wall time.Duration
}

func (t phaseTx) String(per int, what string) string {
	if t.Begun == 0 {
		return "no transactions"
	}
	return fmt.Sprintf("%d transactions (%.1f per %s), %d rolled back (%.1f per %s); write lock held %.0f%% of the time, %.2f ms per transaction; %.1f ms waited for it per transaction; %.1f s waited for pool connections",
		t.Begun, float64(t.Begun)/float64(per), what, t.RolledBack, float64(t.RolledBack)/float64(per), what,
		100*float64(t.Held)/float64(t.wall), float64(t.Held)/float64(time.Millisecond)/float64(t.Begun),
		float64(t.Wait)/float64(time.Millisecond)/float64(t.Begun), t.PoolWait.Seconds())
}

// phase runs f, measuring this process's CPU time and, on PostgreSQL,
// sampling the database's sessions; with -cpuprofile it profiles f.
func phase(ctx context.Context, o options, c *cluster, name string, f func()) (time.Duration, pgSample, phaseTx, error) {
	var watch *pgWatch
	if c.database != "" {
		var err error
		if watch, err = watchPostgres(ctx, c.database, 10*time.Millisecond); err != nil {
			return 0, pgSample{}, phaseTx{}, err
		}
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return 0, pgSample{}, phaseTx{}, err
		}
		pf, err := os.Create(filepath.Join(o.cpuprofile, name+".pprof"))
		if err != nil {
			return 0, pgSample{}, phaseTx{}, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return 0, pgSample{}, phaseTx{}, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, tx0, t0 := cpuTime(), c.txStats(), time.Now()
	f()
	cpu, tx := cpuTime()-cpu0, phaseTx{c.txStats().Sub(tx0), time.Since(t0)}
	var sample pgSample
	if watch != nil {
		sample = watch.end()
	}
	return cpu, sample, tx, nil
}

func printResult(r result) {
	in, cl := r.intake, r.claims
	fmt.Printf("-- %s (%d server(s); load average %s → %s)\n", r.setup.name, r.setup.replicas, r.loadFrom, r.loadTo)
	fmt.Printf("  intake: %d deliveries in %s: %.1f/s; latency p50 %s, p99 %s, max %s; CPU of this process %.2f ms per delivery\n",
		in.n, in.elapsed.Round(time.Millisecond), in.rate(), ms(stats.Pct(in.latencies, 50)), ms(stats.Pct(in.latencies, 99)), ms(stats.Pct(in.latencies, 100)),
		float64(r.cpu[0])/float64(time.Millisecond)/float64(in.n))
	fmt.Printf("  planning: every job queued %s after the intake's first delivery\n", r.planned.Round(time.Millisecond))
	fmt.Printf("  claims: %d jobs claimed in %s (%.1f/s), all finished in %s; claim latency p50 %s, p99 %s; CPU of this process %.2f ms per job\n",
		cl.n, cl.allClaimed.Round(time.Millisecond), float64(cl.n)/cl.allClaimed.Seconds(), cl.allEnd.Round(time.Millisecond),
		ms(stats.Pct(cl.latencies, 50)), ms(stats.Pct(cl.latencies, 99)), float64(r.cpu[1])/float64(time.Millisecond)/float64(cl.n))
	fmt.Printf("  store, intake: %s\n", r.tx[0].String(in.n, "delivery"))
	fmt.Printf("  store, claims: %s\n", r.tx[1].String(cl.n, "job"))
	if r.setup.postgres {
		fmt.Printf("  postgres sessions, intake: %s\n", r.pg[0])
		fmt.Printf("  postgres sessions, claims: %s\n", r.pg[1])
	}
}

func summary(rs []result) {
	fmt.Println("== summary")
	fmt.Printf("| setup | intake deliveries/s | intake p50 / p99 | %d jobs claimed in | claims/s | claim p50 / p99 |\n", rs[0].claims.n)
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Printf("| %s | %.1f | %s / %s | %s | %.1f | %s / %s |\n", r.setup.name, r.intake.rate(),
			ms(stats.Pct(r.intake.latencies, 50)), ms(stats.Pct(r.intake.latencies, 99)),
			r.claims.allClaimed.Round(time.Millisecond), float64(r.claims.n)/r.claims.allClaimed.Seconds(),
			ms(stats.Pct(r.claims.latencies, 50)), ms(stats.Pct(r.claims.latencies, 99)))
	}
	for i := 1; i < len(rs); i++ {
		a, b := rs[i], rs[i-1]
		fmt.Printf("ratio %s / %s: intake rate %.2fx, intake p99 %.2fx, time to claim all %.2fx\n", a.setup.name, b.setup.name,
			stats.Ratio(a.intake.rate(), b.intake.rate()),
			stats.Ratio(float64(stats.Pct(a.intake.latencies, 99)), float64(stats.Pct(b.intake.latencies, 99))),
			stats.Ratio(float64(a.claims.allClaimed), float64(b.claims.allClaimed)))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// cpuTime is this process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func postgresVersion(ctx context.Context, database string) (string, error) {
	db, err := sql.Open("pgx", database)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var v string
	return v, db.QueryRowContext(ctx, `SELECT version()`).Scan(&v)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 && f[0] == "MemTotal:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d cores%s, linux %s, %s; load average %s", runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), runtime.Version(), loadavg())
}
