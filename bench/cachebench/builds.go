package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/api"
)

const (
	goFlags = "-mod=mod -buildvcs=false"
	// The job runs go build -v: -v lists the packages compiled (not those
	// found in the build cache), which says how warm a build was.
	cachePath = "/root/go/pkg/mod, /root/.cache/go-build"
)

// pipeline is the .kiln.yml of one way of building; host is the agent
// label it runs on, cache its `cache:` block ("" for none).
func pipeline(image, host, cache, buildCmd, goProxy string) string {
	return fmt.Sprintf(`image: %s
runs-on: [%s]
resources: {cpus: 2, memory: 4g}
timeout: 45m
env:
  GOPROXY: %s
  GOFLAGS: "%s"
  GOTOOLCHAIN: local
  CGO_ENABLED: "0"
%ssteps:
  - name: go build
    run: %s 2>&1
`, image, host, goProxy, goFlags, cache, buildCmd)
}

// The agents' labels: host1 runs the cold build, every sticky build and
// the keyed build of A (which saves the cache); host2 runs the keyed
// builds of B, which restore it over HTTP with nothing of host1's.
const (
	host1 = "host1"
	host2 = "host2"
)

// pipelines returns, per branch, the .kiln.yml of commit A and that of the
// commits B (they differ only where a build runs).
func pipelines(image, buildCmd, goProxy string) map[string][2]string {
	keyed := `cache:
  - key: "go-${{ hashFiles('go.sum') }}-${{ os }}-${{ arch }}"
    restore-keys: [go-]
    paths: [` + cachePath + `]
`
	same := func(p string) [2]string { return [2]string{p, p} }
	return map[string][2]string{
		"cold":   same(pipeline(image, host1, "", buildCmd, goProxy)),
		"sticky": same(pipeline(image, host1, "cache: ["+cachePath+"]\n", buildCmd, goProxy)),
		"keyed":  {pipeline(image, host1, keyed, buildCmd, goProxy), pipeline(image, host2, keyed, buildCmd, goProxy)},
	}
}

// measured is one timed build: through Kiln (r set) or on the host.
type measured struct {
	total    time.Duration // trigger → success (host: the go command's run)
	step     time.Duration // the step's own duration, from its record
	compiled int           // packages compiled (go build -v lines)
	fetched  int           // modules downloaded
	r        *run
}

var importPath = regexp.MustCompile(`^[a-zA-Z0-9._~-]+(/[a-zA-Z0-9._~+-]+)*$`)

// countOutput counts packages compiled and modules downloaded in go build
// -v output lines.
func countOutput(lines []string) (compiled, fetched int) {
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "go: downloading "):
			fetched++
		case importPath.MatchString(l):
			compiled++
		}
	}
	return compiled, fetched
}

func fromRun(r *run) measured {
	m := measured{total: r.elapsed, r: r}
	var out []string
	for _, l := range r.lines {
		if l.Step == 0 {
			out = append(out, l.Text)
		}
	}
	m.compiled, m.fetched = countOutput(out)
	if j := r.build.Jobs; len(j) > 0 {
		for _, s := range j[0].Steps {
			if s.Attempt == j[0].Attempt && s.Index == 0 && s.StartedAt != nil && s.FinishedAt != nil {
				m.step = s.FinishedAt.Sub(*s.StartedAt)
			}
		}
	}
	return m
}

// phases splits a Kiln build's time using the build's own records: the
// job's claim and finish times, its step's record, and the times of Kiln's
// own log lines (taken by the agent as it writes them).
type phases struct {
	queue    time.Duration // trigger → job claimed
	prepare  time.Duration // claimed → sandbox up: checkout, cache restore, container
	step     time.Duration // the step's record
	keep     time.Duration // step done → last of Kiln's lines: sandbox destroy, caches kept or saved
	finish   time.Duration // last line → job finished: workspace removal, finish report
	seen     time.Duration // job finished → the poll sees the build done
	timeline []string
}

func phasesOf(r *run, t0 time.Time) phases {
	var p phases
	b := r.build
	if len(b.Jobs) == 0 || b.Jobs[0].StartedAt == nil || b.Jobs[0].FinishedAt == nil {
		return p
	}
	j := b.Jobs[0]
	claimed, finished := *j.StartedAt, *j.FinishedAt
	var step *api.StepView
	for _, s := range j.Steps {
		if s.Attempt == j.Attempt && s.Index == 0 && s.StartedAt != nil && s.FinishedAt != nil {
			step = &s
		}
	}
	if step == nil {
		return p
	}
	type event struct {
		at   time.Time
		text string
	}
	events := []event{{claimed, "job claimed by the agent"}, {*step.StartedAt, "step started"}, {*step.FinishedAt, "step finished"},
		{finished, "job finished (reported)"}, {t0.Add(r.elapsed), "build seen finished"}}
	var sandboxAt, lastSys time.Time
	for _, l := range r.lines {
		if !strings.HasPrefix(l.Text, "[kiln] ") {
			continue
		}
		if strings.HasPrefix(l.Text, "[kiln] sandbox ") && sandboxAt.IsZero() {
			sandboxAt = l.Time
		}
		if l.Time.After(*step.FinishedAt) {
			lastSys = l.Time
		}
		events = append(events, event{l.Time, l.Text})
	}
	sort.SliceStable(events, func(a, b int) bool { return events[a].at.Before(events[b].at) })
	for _, e := range events {
		p.timeline = append(p.timeline, fmt.Sprintf("+%6.2fs %s", e.at.Sub(t0).Seconds(), e.text))
	}
	if lastSys.IsZero() {
		lastSys = *step.FinishedAt
	}
	p.queue = claimed.Sub(t0)
	if !sandboxAt.IsZero() {
		p.prepare = sandboxAt.Sub(claimed)
	}
	p.step = step.FinishedAt.Sub(*step.StartedAt)
	p.keep = lastSys.Sub(*step.FinishedAt)
	p.finish = finished.Sub(lastSys)
	p.seen = t0.Add(r.elapsed).Sub(finished)
	return p
}

type buildsConfig struct {
	engine, image string
	dir           string
	rounds        int
	skipHost      bool
	buildCmd      string       // the job's command (the host runs the same go build)
	project       string       // module@version from the proxy
	goProxy       string       // the module proxy's URL, from the host's own go env
	mainPkg, leaf string       // the package built; the file changed
	log           *slog.Logger // Kiln's own log
}

type results struct {
	cold             measured
	sticky, keyed    []measured
	host             []measured
	stickyP, keyedP  []phases
	primeS, primeK   measured
	primeH           time.Duration
	change           string
	hostGo, hostArgs string
}

func builds(ctx context.Context, cfg buildsConfig, log func(string, ...any)) (*results, error) {
	log("fetching %s from %s and making commits A and B1..B%d", cfg.project, cfg.goProxy, cfg.rounds)
	repo, err := makeRepo(ctx, cfg.goProxy, cfg.project, cfg.leaf, filepath.Join(cfg.dir, "repo"), pipelines(cfg.image, cfg.buildCmd, cfg.goProxy), cfg.rounds)
	if err != nil {
		return nil, err
	}
	res := &results{change: repo.change}

	k, err := startKiln(ctx, filepath.Join(cfg.dir, "kiln"), cfg.engine, cfg.log)
	if err != nil {
		return nil, err
	}
	defer k.close()
	for _, p := range []string{"cold", "sticky", "keyed"} {
		if err := k.addProject(p, repo.dir, p); err != nil {
			return nil, err
		}
	}
	// Agent 1 runs the cold build and the priming builds (two at once) and
	// the sticky builds; agent 2 (another data dir: no git mirror, no
	// volume, nothing of agent 1's) runs the keyed warm builds. Both stay
	// up, as agents do; only one runs a build at a time after the priming.
	stop1, err := k.startAgent(ctx, "agent1", 2, host1)
	if err != nil {
		return nil, err
	}
	defer stop1()
	stop2, err := k.startAgent(ctx, "agent2", 1, host2)
	if err != nil {
		return nil, err
	}
	defer stop2()

	// (a) cold: alone on the machine (as far as this program goes).
	log("(a) cold build of B1: fresh sandbox, no cache (several minutes: every module is fetched, every package compiled)")
	r, err := k.build(ctx, "cold", "cold", repo.b["cold"][0])
	if err != nil {
		return nil, fmt.Errorf("(a) cold: %w", err)
	}
	res.cold = fromRun(r)
	if err := k.quiesce(ctx); err != nil {
		return nil, err
	}
	log("(a) cold: %s (step %s, %d packages compiled, %d modules downloaded)", sec(res.cold.total), sec(res.cold.step), res.cold.compiled, res.cold.fetched)

	// Priming, not timed as results: A through the sticky volumes, A into
	// the cache service, A on the host, all three at once.
	log("priming with A: sticky volumes, the cache service and the host's caches, concurrently (not measured)")
	hostDir := filepath.Join(cfg.dir, "host")
	var wg sync.WaitGroup
	errs := make([]error, 3)
	prime := func(i int, f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f() }()
	}
	prime(0, func() error {
		r, err := k.build(ctx, "sticky", "sticky", repo.a["sticky"])
		if err == nil {
			res.primeS = fromRun(r)
		}
		return err
	})
	prime(1, func() error {
		r, err := k.build(ctx, "keyed", "keyed", repo.a["keyed"])
		if err == nil {
			res.primeK = fromRun(r)
		}
		return err
	})
	var host *hostBuild
	if !cfg.skipHost {
		prime(2, func() error {
			var err error
			if host, err = newHostBuild(hostDir, repo.dir, cfg.mainPkg, cfg.goProxy); err != nil {
				return err
			}
			m, err := host.build(ctx, repo.a["cold"])
			res.primeH = m.total
			return err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("priming: %w", err)
	}
	if err := k.quiesce(ctx); err != nil {
		return nil, err
	}
	log("primed: sticky %s, keyed %s (with its save), host %s", sec(res.primeS.total), sec(res.primeK.total), sec(res.primeH))
	if host != nil {
		res.hostGo, res.hostArgs = host.goVersion, host.describe()
	}

	// The warm builds, interleaved round by round so that a change in the
	// machine's load hits every way alike.
	for i := 0; i < cfg.rounds; i++ {
		if host != nil {
			m, err := host.build(ctx, repo.b["cold"][i])
			if err != nil {
				return nil, fmt.Errorf("(d) host: %w", err)
			}
			res.host = append(res.host, m)
			log("round %d: (d) host %s (%d packages compiled)", i+1, sec(m.total), m.compiled)
		}
		t0 := time.Now()
		r, err := k.build(ctx, "sticky", "sticky", repo.b["sticky"][i])
		if err != nil {
			return nil, fmt.Errorf("(b) sticky: %w", err)
		}
		res.sticky, res.stickyP = append(res.sticky, fromRun(r)), append(res.stickyP, phasesOf(r, t0))
		if err := k.quiesce(ctx); err != nil {
			return nil, err
		}
		log("round %d: (b) sticky %s (step %s, %d packages compiled)", i+1, sec(r.elapsed), sec(res.sticky[i].step), res.sticky[i].compiled)

		// Agent 2 takes the keyed build: nothing on its host helps; the
		// cache comes over HTTP.
		t0 = time.Now()
		r, err = k.build(ctx, "keyed", "keyed", repo.b["keyed"][i])
		if err != nil {
			return nil, fmt.Errorf("(c) keyed: %w", err)
		}
		res.keyed, res.keyedP = append(res.keyed, fromRun(r)), append(res.keyedP, phasesOf(r, t0))
		if err := k.quiesce(ctx); err != nil {
			return nil, err
		}
		log("round %d: (c) keyed %s (step %s, %d packages compiled)", i+1, sec(r.elapsed), sec(res.keyed[i].step), res.keyed[i].compiled)
	}
	return res, nil
}

// hostBuild is the limit: the same builds with the host's go command, in a
// checkout of the same commits, with a GOCACHE and a GOMODCACHE of their
// own (temporary), the proxy and flags of the job.
type hostBuild struct {
	dir, src, out string
	mainPkg       string
	env           []string
	goVersion     string
	goProxy       string
}

func newHostBuild(dir, repo, mainPkg, goProxy string) (*hostBuild, error) {
	h := &hostBuild{dir: dir, src: filepath.Join(dir, "src"), out: filepath.Join(dir, "out"), mainPkg: mainPkg, goProxy: goProxy}
	if _, err := git("", "clone", "-q", repo, h.src); err != nil {
		return nil, err
	}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GO") && !strings.HasPrefix(e, "CGO_") {
			h.env = append(h.env, e)
		}
	}
	h.env = append(h.env, "GOCACHE="+filepath.Join(dir, "gocache"), "GOMODCACHE="+filepath.Join(dir, "gomodcache"),
		"GOPATH="+filepath.Join(dir, "gopath"), "GOPROXY="+h.goProxy, "GOFLAGS="+goFlags, "GOTOOLCHAIN=local",
		"CGO_ENABLED=0", "GOENV=off", "GOTELEMETRY=off")
	v, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w", err)
	}
	h.goVersion = strings.TrimSpace(string(v))
	return h, nil
}

func (h *hostBuild) describe() string {
	return fmt.Sprintf("GOCACHE, GOMODCACHE temporary; GOPROXY=%s GOFLAGS=%q CGO_ENABLED=0", h.goProxy, goFlags)
}

func (h *hostBuild) build(ctx context.Context, commit string) (measured, error) {
	if _, err := git(h.src, "checkout", "-q", "--detach", commit); err != nil {
		return measured{}, err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-v", "-o", h.out, h.mainPkg)
	cmd.Dir, cmd.Env = h.src, h.env
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return measured{}, fmt.Errorf("host go build at %.12s: %v\n%s", commit, err, out)
	}
	m := measured{total: d, step: d}
	m.compiled, m.fetched = countOutput(strings.Split(strings.TrimSpace(string(out)), "\n"))
	return m, nil
}

func median(ms []measured, f func(measured) time.Duration) time.Duration {
	if len(ms) == 0 {
		return 0
	}
	ds := make([]time.Duration, len(ms))
	for i, m := range ms {
		ds[i] = f(m)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// medianIndex is the index of the run whose total is the median.
func medianIndex(ms []measured) int {
	idx := make([]int, len(ms))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return ms[idx[a]].total < ms[idx[b]].total })
	return idx[len(idx)/2]
}

func totalOf(m measured) time.Duration { return m.total }
func stepOf(m measured) time.Duration  { return m.step }

func sec(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func all(ms []measured, f func(measured) time.Duration) string {
	var s []string
	for _, m := range ms {
		s = append(s, sec(f(m)))
	}
	return strings.Join(s, " ")
}

func printBuilds(res *results, cfg buildsConfig) {
	fmt.Printf("\n== warm caches: `%s` of %s (B: %s), engine %s, image %s\n", cfg.buildCmd, cfg.project, res.change, cfg.engine, cfg.image)
	fmt.Printf("%-44s %9s %9s %9s  %s\n", "", "total", "step", "compiled", "(total of each run)")
	row := func(name string, ms []measured) {
		if len(ms) == 0 {
			return
		}
		c := ms[medianIndex(ms)].compiled
		fmt.Printf("%-44s %9s %9s %9d  %s\n", name, sec(median(ms, totalOf)), sec(median(ms, stepOf)), c, all(ms, totalOf))
	}
	row("(a) cold: fresh sandbox, no cache", []measured{res.cold})
	row("(b) sticky warm (median)", res.sticky)
	row("(c) keyed warm, another agent (median)", res.keyed)
	row("(d) the limit: host go build (median)", res.host)
	fmt.Printf("total = API trigger → build seen successful; step = the go build step's record; compiled = packages compiled (go build -v)\n")
	fmt.Printf("(a) downloaded %d modules; priming with A took: sticky %s, keyed %s (incl. its save), host %s (run concurrently)\n",
		res.cold.fetched, sec(res.primeS.total), sec(res.primeK.total), sec(res.primeH))
	b, c, a := median(res.sticky, totalOf), median(res.keyed, totalOf), res.cold.total
	if d := median(res.host, totalOf); d > 0 {
		fmt.Printf("ratio b/d = %.2f (target ≤ 1.2)   c/d = %.2f   (step only: b/d %.2f, c/d %.2f)\n",
			ratio(b, d), ratio(c, d), ratio(median(res.sticky, stepOf), d), ratio(median(res.keyed, stepOf), d))
	}
	fmt.Printf("ratio a/b = %.1f (cold over sticky warm)   a/c = %.1f\n", ratio(a, b), ratio(a, c))
	where := func(name string, ps []phases, ms []measured) {
		if len(ps) == 0 {
			return
		}
		i := medianIndex(ms)
		p := ps[i]
		fmt.Printf("where the time of %s goes (its median run, %s):\n", name, sec(ms[i].total))
		fmt.Printf("  trigger → job claimed (plan .kiln.yml, long-poll)                 %7s\n", sec(p.queue))
		fmt.Printf("  claimed → sandbox up (checkout, cache restore, container)         %7s\n", sec(p.prepare))
		fmt.Printf("  the go build step                                                 %7s\n", sec(p.step))
		fmt.Printf("  step done → caches kept (sandbox destroy, cache promote or save)  %7s\n", sec(p.keep))
		fmt.Printf("  caches kept → job finished (workspace removal, finish report)     %7s\n", sec(p.finish))
		fmt.Printf("  job finished → build seen done (API poll, 50ms)                   %7s\n", sec(p.seen))
		fmt.Println("  timeline:")
		for _, l := range p.timeline {
			fmt.Printf("    %s\n", l)
		}
	}
	where("(b) sticky", res.stickyP, res.sticky)
	where("(c) keyed", res.keyedP, res.keyed)
	if res.hostGo != "" {
		fmt.Printf("(d): %s on the host, %s\n", res.hostGo, res.hostArgs)
	}
}

func ratio(x, y time.Duration) float64 {
	if y == 0 {
		return 0
	}
	return float64(x) / float64(y)
}

// moduleProxy is the first module proxy URL of the host's own Go settings
// (`go env GOPROXY`), so the benchmark fetches from wherever this machine
// is configured to, and the tree names no proxy of its own.
func moduleProxy() (string, error) {
	out, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPROXY: %w", err)
	}
	for _, p := range strings.FieldsFunc(strings.TrimSpace(string(out)), func(r rune) bool { return r == ',' || r == '|' }) {
		if strings.HasPrefix(p, "https://") || strings.HasPrefix(p, "http://") {
			return p, nil
		}
	}
	return "", fmt.Errorf("go env GOPROXY = %q names no proxy URL; cachebench fetches its project from one", strings.TrimSpace(string(out)))
}
