package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/apiclient"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/sandbox/docker"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
	"github.com/kilnci/kiln/internal/testenv"
)

// The multi-host test's shape: builds per project, log lines per build.
const (
	mhProjects      = 2
	mhBuildsPerProj = 12
	mhLines         = 8
)

// mhPipeline is each build's one job, "work": mhLines numbered lines half
// a second apart (the work the faults land on), then an artifact, kept
// in S3.
var mhPipeline = fmt.Sprintf(`image: %s
jobs:
  work:
    artifacts: [out.txt]
    steps:
      - run: for i in $(seq 1 %d); do echo "line $i of build $KILN_BUILD_ID"; sleep 0.5; done
      - run: echo "built $KILN_BUILD_ID at $KILN_COMMIT" > out.txt
`, testenv.BaseImage, mhLines)

// replica is a `kiln server` process on a host of its own.
type replica struct {
	host *netHost
	url  string
	env  []string
	args []string
	p    *proc
	api  *harness // the REST API through this replica
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	r.p = r.host.start(r.env, r.args...)
	tailOnFailure(t, r.host.name, r.p)
	waitUntil(t, r.host.name+" serving", func() bool { return strings.Contains(r.p.output(), "listening on") }, r.p.output)
}

// metric returns the value of the sample named name (with its labels,
// as /metrics writes them) on the replica, and whether it answered.
func (r *replica) metric(name string) (float64, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(r.url + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, resp.StatusCode == http.StatusOK
}

// leader returns the one replica of live whose kiln_leader{lease="background"}
// is 1, or nil when none or several are.
func leader(live []*replica) *replica {
	var held []*replica
	for _, r := range live {
		if v, _ := r.metric(`kiln_leader{lease="background"}`); v == 1 {
			held = append(held, r)
		}
	}
	if len(held) != 1 {
		return nil
	}
	return held[0]
}

// TestMultiHost is the production shape, each control-plane replica and
// each agent a host of its own (a network namespace on one bridge):
// PostgreSQL and S3 shared, three `kiln server` replicas, four `kiln
// agent`s given all three URLs, 24 pushed builds with commit statuses to
// (fake) GitHub and a runner pool the GitHub reconciler lists. With builds
// running, the leader replica is SIGKILLed and one agent running a job is
// cut off the network until its attempt's lease has expired and been
// reaped; then both come back. At the end: every build succeeded (none
// lost), nothing is left queued or running, each job's attempts were
// reported once (every attempt but the last ended in error, the last is
// the job's result; the cut agent's late writes were refused as stale),
// every expected log line is stored once in the last
// attempt's log with no gap, each build's artifact is served from S3, and
// the leader's work was done once: each commit status's final state
// reached GitHub, a second time only from another replica (the one that
// died before recording it: the outbox sends at least once across a
// crash, at most once otherwise), and GitHub's calls (statuses and the
// reconciler's listings) came in no more runs of one replica than there
// were leader tenures, so no two replicas ever worked side by side.
func TestMultiHost(t *testing.T) {
	requireNetlab(t)
	if !storetest.HavePostgres() {
		t.Skipf("%s is not set: no PostgreSQL server to test (scripts/postgres.sh starts one)", storetest.Env)
	}
	s3 := blobstoretest.S3Config(t)
	// One engine: the subject is the control plane; the engines have
	// their own suites.
	e := testenv.Engines(t)[0]
	database := storetest.PostgresDatabase(t)
	lab := newNetlab(t)

	// PostgreSQL is reached over its Unix socket (the URL's host is the
	// socket's directory), which every namespace shares. The S3 server
	// (versitygw) listens on 127.0.0.1 only, which in a host's namespace
	// is the host's own loopback: the test forwards the gateway's address
	// to it (lab.forward), and the replicas are given that endpoint, so
	// presigned URLs name it too.
	s3Addr := strings.TrimPrefix(strings.TrimPrefix(s3.Endpoint, "http://"), "https://")
	s3Endpoint := lab.forward(s3Addr)
	artifactsPrefix := s3.Prefix + "-artifacts"
	t.Cleanup(func() {
		cfg := s3
		cfg.Prefix = artifactsPrefix
		blobstoretest.EmptyS3(cfg)
	})
	gh := fakegithub.New(fakegithub.WithListener(lab.listen()))
	t.Cleanup(gh.Close)
	gh.AddToken(ghToken)

	secretKey := strings.Repeat("7a", 32)
	var replicas []*replica
	for i := range 3 {
		host := lab.addHost(fmt.Sprintf("s%d", i+1))
		r := &replica{host: host, url: "http://" + host.ip + ":8080"}
		r.env = []string{"KILN_S3_ACCESS_KEY=" + s3.AccessKey, "KILN_S3_SECRET_KEY=" + s3.SecretKey, "KILN_GITHUB_TOKEN=" + ghToken}
		dataDir := t.TempDir()
		r.args = []string{"server", "-data-dir", dataDir, "-database", database, "-secret-key", secretKey,
			"-listen", host.ip + ":8080", "-public-url", r.url,
			// Short enough that a lost agent's job and a dead leader's
			// lease are given up within seconds; long enough that a
			// loaded machine's late heartbeat expires nothing.
			"-lease", "10s", "-leader-ttl", "6s", "-retry-delay", "200ms",
			"-cache-s3-endpoint", s3Endpoint, "-cache-s3-insecure", "-cache-s3-bucket", s3.Bucket,
			"-cache-s3-prefix", s3.Prefix, "-artifacts-s3-prefix", artifactsPrefix,
			"-github-api-url", gh.URL(), "-github-reconcile-interval", "1s", "-github-reap-interval", "1s"}
		r.start(t)
		r.api = &harness{t: t, url: r.url, dataDir: dataDir}
		if i == 0 {
			// The first replica made the admin token; the others find it.
			r.api.admin = waitToken(t, r.p, dataDir)
		} else {
			r.api.admin = replicas[0].api.admin
		}
		replicas = append(replicas, r)
	}
	rt, err := docker.New(e.Host)
	if err != nil {
		t.Fatal(err)
	}
	api := replicas[0].api
	api.rt = rt

	// GitHub Actions: a pool of the tests' repository, so that the
	// reconciler lists its queued jobs every second (none come: no
	// runner is started; what is counted is who lists).
	pool := store.Pool{Name: "runners", Labels: runnerLabels, Image: testenv.BaseImage, MaxRunners: 1, Owner: ghOwner, Repo: ghRepo, MemoryBytes: 256 << 20, CPUs: 1}
	if code := api.do("POST", "/api/v1/pools", pool, nil); code != http.StatusCreated {
		t.Fatalf("create pool: HTTP %d", code)
	}

	var urls []string
	for _, r := range replicas {
		urls = append(urls, r.url)
	}
	type hostAgent struct {
		host *netHost
		p    *proc
		id   string
	}
	var agents []*hostAgent
	for i := range 4 {
		host := lab.addHost(fmt.Sprintf("a%d", i+1))
		var tok struct {
			Secret string `json:"secret"`
		}
		if code := api.do("POST", "/api/v1/tokens", map[string]string{"name": host.name, "kind": "agent"}, &tok); code != http.StatusCreated || tok.Secret == "" {
			t.Fatalf("agent token: HTTP %d", code)
		}
		p := host.start([]string{"KILN_AGENT_TOKEN=" + tok.Secret}, "agent", "-server", strings.Join(urls, ","),
			"-data-dir", t.TempDir(), "-engine", e.Host, "-name", host.name, "-memory", "256m", "-capacity", "2")
		tailOnFailure(t, host.name, p)
		agents = append(agents, &hostAgent{host: host, p: p})
	}
	waitUntil(t, "four agents registered", func() bool {
		var list []store.Agent
		api.do("GET", "/api/v1/agents", nil, &list)
		for _, l := range list {
			for _, a := range agents {
				if l.Name == a.host.name {
					a.id = l.ID
				}
			}
		}
		return !slices.ContainsFunc(agents, func(a *hostAgent) bool { return a.id == "" })
	})

	// Projects on the fake GitHub, their pushes delivered round robin to
	// the replicas, as a load balancer would.
	commits := map[int64]string{} // build → commit
	var ids []int64
	for p := range mhProjects {
		name := fmt.Sprintf("proj%d", p+1)
		repo, head := newRepo(t, map[string]string{".kiln.yml": mhPipeline, "n.txt": "0"})
		api.addProject(name, repo, projectOpts{})
		forge := map[string]any{"forge": "github", "forge_repo": "acme/" + name, "forge_url": strings.TrimSuffix(gh.URL(), "/"), "forge_token": ghToken}
		if code := api.do("PATCH", "/api/v1/projects/"+name, forge, nil); code != http.StatusOK {
			t.Fatalf("forge connection: HTTP %d", code)
		}
		for b := range mhBuildsPerProj {
			if b > 0 {
				head = commit(t, repo, map[string]string{"n.txt": strconv.Itoa(b)})
			}
			via := replicas[len(ids)%len(replicas)].api
			code, resp := via.postGitHub(name, "push", fmt.Sprintf("mh-%s-%d", name, b), "webhook-secret-"+name, githubPush(t, "refs/heads/main", head))
			if code != http.StatusCreated {
				t.Fatalf("push %s #%d through %s: HTTP %d %v", name, b, via.url, code, resp)
			}
			id := int64(resp["build_id"].(float64))
			ids = append(ids, id)
			commits[id] = head
		}
	}

	// Builds running, one of them on the agent to be cut off.
	victim := agents[len(agents)-1]
	victimJobs := map[int64]int{} // job → its attempt on the victim
	var builds map[int64]*store.Build
	snapshot := func(via *harness) {
		builds = map[int64]*store.Build{}
		for _, id := range ids {
			builds[id] = via.build(id)
		}
	}
	describe := func() string { return dump(builds) }
	waitUntil(t, "a step running on "+victim.host.name+" while builds wait", func() bool {
		snapshot(api)
		queued := false
		clear(victimJobs)
		for _, b := range builds {
			queued = queued || b.Status == store.StatusQueued
			for _, j := range b.Jobs {
				if j.Status == store.StatusRunning && j.AgentID == victim.id && len(j.Steps) > 0 && j.Steps[0].Status == store.StatusRunning {
					victimJobs[j.ID] = j.Attempt
				}
			}
		}
		return queued && len(victimJobs) > 0
	}, describe)
	victim.host.cut()
	var dead *replica
	waitUntil(t, "one leader", func() bool { dead = leader(replicas); return dead != nil })
	dead.p.kill()
	var live []*replica
	for _, r := range replicas {
		if r != dead {
			live = append(live, r)
		}
	}
	api = live[0].api
	api.rt = rt
	t.Logf("cut %s off, running jobs %v; killed the leader %s", victim.host.name, victimJobs, dead.host.name)

	// Another replica takes the background work over once the dead
	// leader's lease expires; the cut agent's attempts are given up once
	// theirs do (the new leader's reaper) and claimed again by another
	// agent, which can only be through a replica still up (agents start
	// on the first URL, the first replica's, which is also the first
	// leader as a rule: most of them have failed over).
	waitUntil(t, "a new leader", func() bool { return leader(live) != nil })
	waitUntil(t, victim.host.name+"'s jobs claimed again", func() bool {
		snapshot(api)
		for _, b := range builds {
			for _, j := range b.Jobs {
				if at, ok := victimJobs[j.ID]; ok && j.Attempt == at && !j.Status.Terminal() {
					return false
				}
			}
		}
		return true
	}, describe)
	dead.start(t)
	victim.host.mend()

	// The rest through the restarted replica.
	api = dead.api
	api.rt = rt
	for _, id := range ids {
		if b := api.waitDone(id); b.Status != store.StatusSuccess {
			t.Errorf("build %d ended %s (want success):\n%s\n%s", id, b.Status, dump(b), api.logText(id))
		}
	}
	// The cut agent, back, writes for its lost attempts (a heartbeat, or
	// the last batches of their logs, which it keeps trying for a while
	// after it gave them up itself): refused as stale, by whichever replica
	// it reaches. (The dead replica's count died with it; the restarted one
	// counts from its start, before the network came back.) And it has
	// removed their sandboxes.
	var refused float64
	waitUntil(t, "the cut agent's late writes refused", func() bool {
		refused = 0
		for _, r := range replicas {
			v, _ := r.metric("kiln_stale_writes_refused_total")
			refused += v
		}
		return refused > 0
	}, victim.p.output)
	for job := range victimJobs {
		api.waitSandboxGone(job)
	}

	db, err := sql.Open("pgx", database)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkNothingRunning(t, db)
	retried := checkAttempts(t, db, victimJobs)
	if retried == 0 {
		t.Errorf("none of %s's jobs %v was retried: the cut came too late to test a lost lease", victim.host.name, victimJobs)
	}
	checkLogLines(t, db, ids)
	checkArtifacts(t, live[0], ids)

	// The statuses' outbox, drained: every row delivered (or superseded
	// by a newer one); each build's final states at GitHub.
	waitUntil(t, "the statuses' outbox drained", func() bool {
		var n int
		return db.QueryRow(`SELECT count(*) FROM forge_statuses WHERE outcome = ''`).Scan(&n) == nil && n == 0
	})
	var failed int
	if err := db.QueryRow(`SELECT count(*) FROM forge_statuses WHERE outcome NOT IN ('delivered', 'superseded')`).Scan(&failed); err != nil || failed != 0 {
		t.Errorf("statuses neither delivered nor superseded: %d (%v)", failed, err)
	}
	waitUntil(t, "each build's final statuses at GitHub", func() bool {
		for _, id := range ids {
			states, _ := statusesOf(gh, commits[id])
			for _, ctx := range []string{"kiln", "kiln/work"} {
				if got := states[ctx]; len(got) == 0 || got[len(got)-1] != "success" {
					return false
				}
			}
		}
		return true
	})
	checkDeliveredOnce(t, gh.Statuses())

	// Who called, then how many tenures there were: the calls keep coming
	// (the reconciler), and tenures only add up, so every call read here
	// was made in one of those counted after.
	var statusFrom, listFrom []string
	for _, s := range gh.Statuses() {
		statusFrom = append(statusFrom, s.Remote)
	}
	for _, c := range gh.CallLog() {
		if c.Endpoint == fakegithub.EndpointListRuns {
			listFrom = append(listFrom, c.Remote)
		}
	}
	var tenures int
	if err := db.QueryRow(`SELECT token FROM leader_leases WHERE name = 'background'`).Scan(&tenures); err != nil {
		t.Fatal(err)
	}
	if runs := senderRuns(statusFrom); runs > tenures {
		t.Errorf("commit statuses came in %d runs of one replica, more than the %d leader tenures: two replicas sent side by side (%v)", runs, tenures, statusFrom)
	}
	if runs := senderRuns(listFrom); runs > tenures || runs < 2 {
		t.Errorf("the reconciler's listings came in %d runs of one replica, want 2 (the dead leader's, its successor's) to %d (the leader tenures): %v", runs, tenures, listFrom)
	}
	t.Logf("%d builds; %d leader tenures; %d of the cut agent's jobs retried; %.0f stale writes refused; %d statuses, %d listings",
		len(ids), tenures, retried, refused, len(statusFrom), len(listFrom))
}

// tailOnFailure logs the end of p's output if the test fails (all of it
// with KILN_TEST_VERBOSE set).
func tailOnFailure(t *testing.T, name string, p *proc) {
	t.Cleanup(func() {
		verbose := os.Getenv("KILN_TEST_VERBOSE") != ""
		if t.Failed() || verbose {
			lines := strings.Split(strings.TrimSpace(p.output()), "\n")
			if !verbose {
				lines = lines[max(len(lines)-60, 0):]
			}
			t.Logf("%s (pid %d), last lines:\n%s", name, p.cmd.Process.Pid, strings.Join(lines, "\n"))
		}
	})
}

// checkNothingRunning: no job, attempt or step is left unfinished.
func checkNothingRunning(t *testing.T, db *sql.DB) {
	t.Helper()
	for what, q := range map[string]string{
		"jobs not finished":     `SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')`,
		"attempts not finished": `SELECT count(*) FROM job_attempts WHERE status IN ('queued', 'running') OR finished_at IS NULL`,
		"steps not finished":    `SELECT count(*) FROM steps WHERE status IN ('queued', 'running')`,
		"builds not finished":   `SELECT count(*) FROM builds WHERE status IN ('queued', 'running')`,
	} {
		var n int
		if err := db.QueryRow(q).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d (%v)", what, n, err)
		}
	}
}

// checkAttempts: each job's attempts are 1..its attempt, each reported
// once: every one but the last ended in error (its lease lost, the job
// retried), the last with the job's own result. A report accepted twice
// would show as an attempt before the last that did not end in error, or
// a last one whose status is not the job's. It returns how many of the
// jobs in retried (job → attempt) ran again after that attempt.
func checkAttempts(t *testing.T, db *sql.DB, retried map[int64]int) int {
	t.Helper()
	rows, err := db.Query(`SELECT j.id, j.attempt, j.status, a.attempt, a.status, a.error FROM jobs j JOIN job_attempts a ON a.job_id = j.id ORDER BY j.id, a.attempt`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[int64]int{}
	n := 0
	for rows.Next() {
		var job int64
		var last, attempt int
		var jobStatus, status, msg string
		if err := rows.Scan(&job, &last, &jobStatus, &attempt, &status, &msg); err != nil {
			t.Fatal(err)
		}
		seen[job]++
		switch {
		case attempt != seen[job]:
			t.Errorf("job %d: attempt %d where %d was due", job, attempt, seen[job])
		case attempt < last && status != string(store.StatusError):
			t.Errorf("job %d: attempt %d of %d ended %s (%s), want error: a report accepted from an attempt that had lost its lease", job, attempt, last, status, msg)
		case attempt == last && status != jobStatus:
			t.Errorf("job %d: its last attempt %d ended %s, the job %s", job, attempt, status, jobStatus)
		}
		if at, ok := retried[job]; ok && attempt == at+1 {
			n++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var jobs int
	if err := db.QueryRow(`SELECT count(*) FROM jobs`).Scan(&jobs); err != nil || jobs != len(seen) {
		t.Errorf("%d jobs, %d with attempts (%v)", jobs, len(seen), err)
	}
	return n
}

// checkLogLines: in each job's last attempt, every line the build printed
// is stored exactly once, and the sequence numbers have no gap; no (job,
// attempt, seq) is stored twice in any attempt.
func checkLogLines(t *testing.T, db *sql.DB, ids []int64) {
	t.Helper()
	var dups int
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT 1 FROM log_lines GROUP BY job_id, attempt, seq HAVING count(*) > 1) d`).Scan(&dups); err != nil || dups != 0 {
		t.Errorf("(job, attempt, seq) stored more than once: %d (%v)", dups, err)
	}
	for _, id := range ids {
		rows, err := db.Query(`SELECT l.seq, l.text FROM jobs j JOIN log_lines l ON l.job_id = j.id AND l.attempt = j.attempt WHERE j.build_id = $1 ORDER BY l.seq`, id)
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		var seqs []int64
		for rows.Next() {
			var seq int64
			var text string
			if err := rows.Scan(&seq, &text); err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, seq)
			count[text]++
		}
		rows.Close()
		for i, s := range seqs {
			if i > 0 && s != seqs[i-1]+1 {
				t.Errorf("build %d: a gap in the log's sequence numbers: %d after %d", id, s, seqs[i-1])
				break
			}
		}
		for i := 1; i <= mhLines; i++ {
			if line := fmt.Sprintf("line %d of build %d", i, id); count[line] != 1 {
				t.Errorf("build %d: %q stored %d times, want once", id, line, count[line])
			}
		}
	}
}

// checkArtifacts: each build's artifact is served from S3 (a redirect to
// a presigned URL, through the forwarder) with the checksum recorded.
func checkArtifacts(t *testing.T, r *replica, ids []int64) {
	t.Helper()
	c := apiclient.Client{URL: r.url, Token: r.api.admin}
	for _, id := range ids {
		d, err := c.Artifact(context.Background(), id, "work")
		if err != nil {
			t.Errorf("build %d's artifact: %v", id, err)
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, d)
		d.Close()
		if sum := hex.EncodeToString(h.Sum(nil)); err != nil || !d.Redirected || sum != d.SHA256 {
			t.Errorf("build %d's artifact: redirected to S3 %v, sha256 %s, recorded %s (%v)", id, d.Redirected, sum, d.SHA256, err)
		}
	}
}

// checkDeliveredOnce: each (commit, context)'s states reached GitHub in
// order, pending ones and then its final state, once, or again only from
// another replica. The outbox marks a row delivered after the forge took
// it: a leader that dies in between leaves it for the next to send again;
// one replica never sends a delivered row twice.
func checkDeliveredOnce(t *testing.T, statuses []fakegithub.CommitStatus) {
	t.Helper()
	final := map[string]string{}  // commit context → its final state
	from := map[string][]string{} // commit context → who sent it
	for _, s := range statuses {
		k := s.SHA[:7] + " " + s.Context
		switch {
		case s.State == "pending" && final[k] != "":
			t.Errorf("%s: pending after %s", k, final[k])
		case s.State == "pending":
		case final[k] != "" && final[k] != s.State:
			t.Errorf("%s: final state %s after %s", k, s.State, final[k])
		case slices.Contains(from[k], s.Remote):
			t.Errorf("%s: final state %s sent twice by %s", k, s.State, s.Remote)
		default:
			final[k] = s.State
			from[k] = append(from[k], s.Remote)
		}
	}
}

// senderRuns counts the runs of one sender in the calls' order: calls
// made by one leader at a time come in at most as many runs as there
// were leader tenures, whatever their timing.
func senderRuns(from []string) int {
	runs := 0
	for i, f := range from {
		if i == 0 || f != from[i-1] {
			runs++
		}
	}
	return runs
}
