package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/server"
)

// logCapture is the server's log, as JSON records, for tests that check
// what it says.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// records returns the records whose message is msg.
func (c *logCapture) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	c.mu.Lock()
	data := bytes.Clone(c.buf.Bytes())
	c.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// newEnvLogged is newEnv with the server's log captured.
func newEnvLogged(t *testing.T, opts ...func(*server.Config)) (*env, *logCapture) {
	t.Helper()
	c := &logCapture{}
	var h slog.Handler = slog.NewJSONHandler(c, nil)
	return startEnv(t, slog.New(h), opts...), c
}

// wantRefusalLogged checks that the last "webhook refused" record names
// the delivery as sent, with the reason and the status answered.
func wantRefusalLogged(t *testing.T, logs *logCapture, n int, forge, project, delivery, reason string, status int) {
	t.Helper()
	recs := logs.records(t, "webhook refused")
	if len(recs) != n {
		t.Fatalf("%d refusals logged, want %d: %v", len(recs), n, recs)
	}
	rec := recs[n-1]
	if rec["level"] != "WARN" || rec["forge"] != forge || rec["project"] != project || rec["delivery"] != delivery ||
		rec["reason"] != reason || rec["status"] != float64(status) || !strings.HasPrefix(fmt.Sprint(rec["remote"]), "127.0.0.1:") || rec["err"] == "" {
		t.Errorf("refusal logged as %v; want forge %s, project %s, delivery %q, reason %s, status %d, a remote address and the error",
			rec, forge, project, delivery, reason, status)
	}
}

// TestWebhookUnknownProjectLikeBadSignature: a delivery for a project that
// does not exist, or that has no webhook secret, is answered exactly as a
// bad signature for a project that exists (status, header, body), for each
// forge and each way a signature can be wrong, so that the answer tells
// an outsider nothing about which projects exist. The server's log tells
// them apart.
func TestWebhookUnknownProjectLikeBadSignature(t *testing.T) {
	e, logs := newEnvLogged(t)
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	e.project("nosecret", dir, map[string]any{"webhook_secret": ""})
	push := githubPush(t, "main", head)
	gitea := fixture(t, "gitea/push.json")
	gitlab := fixture(t, "gitlab/push.json")

	tests := []struct {
		name   string
		forge  string
		header http.Header
		body   []byte
	}{
		{"github: wrong secret", "github", githubHeader("push", "u-1", "another-secret-of-16+", push), push},
		{"github: unsigned", "github", githubHeader("push", "u-2", "", push), push},
		{"github: not hex", "github", with(githubHeader("push", "u-3", "", push), "X-Hub-Signature-256", "sha256=zz"), push},
		{"github: the right secret of another project", "github", githubHeader("push", "u-4", hookSecret, push), push},
		{"gitea: wrong secret", "gitea", giteaHeader("u-5", "another-secret-of-16+", gitea), gitea},
		{"gitlab: wrong token", "gitlab", gitlabHeader("Push Hook", "u-6", "wrong-token-0123456789"), gitlab},
		{"gitlab: no token", "gitlab", without(gitlabHeader("Push Hook", "u-7", ""), "X-Gitlab-Token"), gitlab},
	}
	n := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			known := "hello"
			if tc.name == "github: the right secret of another project" {
				known = "nosecret" // its own "secret" is empty: it accepts nothing
			}
			want := e.hook(tc.forge, known, tc.header, tc.body)
			want.wantError(t, http.StatusUnauthorized, "bad_signature")
			n++
			reason := "bad_signature"
			if known == "nosecret" {
				reason = "no_secret"
			}
			wantRefusalLogged(t, logs, n, tc.forge, known, tc.header.Get("X-GitHub-Delivery")+tc.header.Get("X-Gitea-Delivery")+tc.header.Get("Idempotency-Key"), reason, 401)
			for _, project := range []string{"nope", "nosecret"} {
				if project == known {
					continue
				}
				got := e.hook(tc.forge, project, tc.header, tc.body)
				n++
				if got.code != want.code || !bytes.Equal(got.body, want.body) || got.header.Get("Content-Type") != want.header.Get("Content-Type") ||
					got.header.Get("Content-Length") != want.header.Get("Content-Length") {
					t.Errorf("project %s: HTTP %d %q %s; project %s with a bad signature: HTTP %d %q %s", project, got.code, got.header, got.body, known, want.code, want.header, want.body)
				}
				reason := "unknown_project"
				if project == "nosecret" {
					reason = "no_secret"
				}
				wantRefusalLogged(t, logs, n, tc.forge, project, tc.header.Get("X-GitHub-Delivery")+tc.header.Get("X-Gitea-Delivery")+tc.header.Get("Idempotency-Key"), reason, 401)
			}
		})
	}
	e.wantBuilds(0)
	if n := e.deliveries(); n != 0 {
		t.Errorf("%d deliveries stored", n)
	}
	m := e.metrics()
	if got := m[sample("kiln_webhook_deliveries_total", "forge", "github", "result", "unknown_project")]; got != 4 {
		t.Errorf("unknown_project deliveries counted: %v, want 4", got)
	}
}

// slowBody is a request body the test writes to while the server reads it.
type slowBody struct {
	w    *io.PipeWriter
	done chan *response
}

// startSlowHook sends a webhook whose body of n bytes the test writes
// (first sends, then finish): the server holds it open meanwhile.
func (e *env) startSlowHook(t *testing.T, forge, project string, header http.Header, n int64) *slowBody {
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", e.url+"/hooks/"+forge+"/"+project, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	req.ContentLength = n
	sb := &slowBody{w: pw, done: make(chan *response, 1)}
	go func() {
		resp, err := e.http.Do(req)
		if err != nil {
			sb.done <- &response{code: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		sb.done <- &response{code: resp.StatusCode, header: resp.Header, body: data}
	}()
	return sb
}

// waitFor polls cond until it holds (at most waitLimit: a safety net, not
// an assertion about speed).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// spooled lists the files in the data directory's webhook spool.
func spooled(t *testing.T, dataDir string) []os.FileInfo {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var out []os.FileInfo
	for _, en := range entries {
		fi, err := en.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, fi)
	}
	return out
}

// TestWebhookBodiesBounded: at most -webhook-concurrency bodies are read
// at once; a body past 256 KiB goes to a file (0600, removed once
// answered), not memory; a delivery beyond the bound waits, then is
// answered 503 with Retry-After and logged; a large authentic push spooled
// to disk still builds.
func TestWebhookBodiesBounded(t *testing.T) {
	var dataDir string
	e, logs := newEnvLogged(t, func(c *server.Config) {
		dataDir = c.DataDir
		c.MaxWebhookBody = 4 << 20
		c.WebhookConcurrency = 2
		c.WebhookQueueWait = 100 * time.Millisecond // the slots stay held: the wait's length changes nothing
	})
	dir, head := newRepo(t)
	e.project("hello", dir, nil)

	// Two deliveries with a wrong signature each send 300 KiB of their
	// 1 MiB and hold: both are being read, both spooled to disk.
	const size, first = 1 << 20, 300 << 10
	var held []*slowBody
	for i := range 2 {
		h := githubHeader("push", fmt.Sprintf("held-%d", i), "", nil)
		h.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("ab", 32))
		sb := e.startSlowHook(t, "github", "hello", h, size)
		if _, err := sb.w.Write(bytes.Repeat([]byte{'x'}, first)); err != nil {
			t.Fatal(err)
		}
		held = append(held, sb)
	}
	waitFor(t, "two spooled bodies", func() bool {
		m := e.metrics()
		return m["kiln_webhook_bodies_reading"] == 2 && m["kiln_webhook_bodies_spooled_total"] == 2 && len(spooled(t, dataDir)) == 2
	})
	for _, fi := range spooled(t, dataDir) {
		if fi.Mode().Perm() != 0o600 || fi.Size() < hookMemory {
			t.Errorf("spooled body %s: mode %v, %d bytes; want 0600 and at least %d", fi.Name(), fi.Mode().Perm(), fi.Size(), hookMemory)
		}
	}

	// A third, even a good one, finds no slot.
	push := githubPush(t, "main", head)
	r := e.hook("github", "hello", githubHeader("push", "third", hookSecret, push), push)
	r.wantError(t, http.StatusServiceUnavailable, "busy", "2 webhook deliveries are being read already")
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After: %v", r.header)
	}
	wantRefusalLogged(t, logs, 1, "github", "hello", "third", "busy", 503)
	if m := e.metrics(); m["kiln_webhook_bodies_reading"] != 2 {
		t.Errorf("%v bodies read at once, want 2", m["kiln_webhook_bodies_reading"])
	}

	// The held ones end: refused, their files gone.
	for _, sb := range held {
		if _, err := sb.w.Write(bytes.Repeat([]byte{'x'}, size-first)); err != nil {
			t.Fatal(err)
		}
		sb.w.Close()
		r := <-sb.done
		r.wantError(t, http.StatusUnauthorized, "bad_signature", "does not match")
	}
	if m := e.metrics(); m["kiln_webhook_bodies_reading"] != 0 {
		t.Errorf("%v bodies still read", m["kiln_webhook_bodies_reading"])
	}
	if fs := spooled(t, dataDir); len(fs) != 0 {
		t.Errorf("%d spooled bodies left", len(fs))
	}

	// An authentic push of 1 MiB is spooled and builds.
	big := edit(t, push, func(m map[string]any) { m["padding"] = strings.Repeat("p", 1<<20) })
	var out struct {
		BuildID int64 `json:"build_id"`
	}
	e.hook("github", "hello", githubHeader("push", "big", hookSecret, big), big).want(t, http.StatusCreated, &out)
	wantQueued(t, e.waitPlanned(out.BuildID), head)
	if m := e.metrics(); m["kiln_webhook_bodies_spooled_total"] != 3 {
		t.Errorf("%v bodies spooled, want 3", m["kiln_webhook_bodies_spooled_total"])
	}
}

// hookMemory is what the server holds of a body in memory (hookMemoryBody).
const hookMemory = 256 << 10

// zeros reads as many zero bytes as asked, allocating nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestWebhookMemoryBounded: forty large deliveries at once, half unsigned
// (24 MiB each) and half with a wrong signature (8 MiB each), all refused,
// and the server's allocations stay far below what holding them would take
// (the old handler read every body whole: 640 MiB and more). Measured as
// the bytes allocated by the whole process while they are answered
// (runtime.MemStats.TotalAlloc), which no timing changes.
func TestWebhookMemoryBounded(t *testing.T) {
	e, logs := newEnvLogged(t, func(c *server.Config) {
		c.MaxWebhookBody = 25 << 20
		c.WebhookConcurrency = 4
		c.WebhookQueueWait = waitLimit
	})
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)

	const n = 40
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // a figure for the log only: a sampler may miss the peak
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}()
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			size := int64(24 << 20)
			h := githubHeader("push", fmt.Sprintf("mem-%d", i), "", nil)
			if i%2 == 1 {
				size = 8 << 20
				h.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0f", 32))
			}
			req, err := http.NewRequest("POST", e.url+"/hooks/github/hello", io.LimitReader(zeros{}, size))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header = h
			req.ContentLength = size
			resp, err := e.http.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d deliveries (%d MiB sent): %.1f MiB allocated by the process, heap in use at most %.1f MiB (sampled)", n, n/2*32, float64(alloc)/(1<<20), float64(peak)/(1<<20))
	for i, c := range codes {
		if c != http.StatusUnauthorized {
			t.Errorf("delivery %d: HTTP %d, want 401", i, c)
		}
	}
	if alloc > 64<<20 {
		t.Errorf("%.1f MiB allocated while refusing %d large deliveries; want under 64 MiB", float64(alloc)/(1<<20), n)
	}
	if recs := logs.records(t, "webhook refused"); len(recs) != n {
		t.Errorf("%d refusals logged, want %d", len(recs), n)
	}
}

// readFlag is a body that records whether it was read.
type readFlag struct {
	mu   sync.Mutex
	read bool
	r    io.Reader
}

func (f *readFlag) Read(p []byte) (int, error) {
	f.mu.Lock()
	f.read = true
	f.mu.Unlock()
	return f.r.Read(p)
}

// TestWebhookRefusedBeforeBody: what the header alone proves wrong (a
// wrong GitLab token, a missing signature) is refused before the body is
// read: a client that waits for 100 Continue never sends it.
func TestWebhookRefusedBeforeBody(t *testing.T) {
	e, logs := newEnvLogged(t)
	dir, _ := newRepo(t)
	e.project("hello", dir, nil)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ExpectContinueTimeout = waitLimit // the body goes only on 100 Continue
	client := &http.Client{Transport: tr}
	t.Cleanup(client.CloseIdleConnections)
	gl := fixture(t, "gitlab/push.json")
	for i, tc := range []struct {
		forge, project string
		header         http.Header
	}{
		{"gitlab", "hello", gitlabHeader("Push Hook", "b-1", "wrong-token-0123456789")},
		{"gitlab", "nope", gitlabHeader("Push Hook", "b-2", "wrong-token-0123456789")},
		{"github", "hello", githubHeader("push", "b-3", "", gl)},
	} {
		body := &readFlag{r: bytes.NewReader(gl)}
		req, err := http.NewRequest("POST", e.url+"/hooks/"+tc.forge+"/"+tc.project, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = tc.header.Clone()
		req.Header.Set("Expect", "100-continue")
		req.ContentLength = int64(len(gl))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		(&response{code: resp.StatusCode, header: resp.Header, body: data}).wantError(t, http.StatusUnauthorized, "bad_signature")
		if body.read {
			t.Errorf("%s/%s: the body was sent", tc.forge, tc.project)
		}
		reason := "bad_signature"
		if tc.project == "nope" {
			reason = "unknown_project"
		}
		wantRefusalLogged(t, logs, i+1, tc.forge, tc.project, tc.header.Get("X-GitHub-Delivery")+tc.header.Get("Idempotency-Key"), reason, 401)
	}
}

// TestWebhookSpoolFails: when the server cannot keep a large body (here
// its spool directory is gone, a file in its place), the delivery gets
// 503, without the server's paths, and the cause is logged.
func TestWebhookSpoolFails(t *testing.T) {
	var dataDir string
	e, logs := newEnvLogged(t, func(c *server.Config) { dataDir = c.DataDir; c.MaxWebhookBody = 4 << 20 })
	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	spool := filepath.Join(dataDir, "tmp")
	if err := os.Remove(spool); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spool, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	big := edit(t, githubPush(t, "main", head), func(m map[string]any) { m["padding"] = strings.Repeat("p", 1<<20) })
	r := e.hook("github", "hello", githubHeader("push", "no-room", hookSecret, big), big)
	pe := r.wantError(t, http.StatusServiceUnavailable, "unavailable", "cannot keep the webhook body")
	if strings.Contains(pe.Error, dataDir) {
		t.Errorf("answer names the data directory: %q", pe.Error)
	}
	wantRefusalLogged(t, logs, 1, "github", "hello", "no-room", "error", 503)
	if rec := logs.records(t, "webhook refused")[0]; !strings.Contains(fmt.Sprint(rec["err"]), spool) {
		t.Errorf("logged cause %v does not name the spool", rec["err"])
	}
	e.wantBuilds(0)
}
