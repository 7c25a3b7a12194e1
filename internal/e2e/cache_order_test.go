package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// A keyed cache's restore overlaps the sandbox's creation, so either may
// finish last; both orders are forced here, with a cache the size of a
// small Go build cache (256 directories, 32 MiB), and the step must see
// the whole cache and be able to write into it (as `go build` does: it
// creates files under the cache's directories):
//
//   - the restore finishes last: the cache service's download waits until
//     the sandbox is up (a container mounts the cache's directory before
//     anything is restored into it);
//   - the sandbox finishes last: its creation waits until the job's log
//     says the cache was restored.
func TestKeyedCacheRestoreOrders(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		gate := &orderGate{}
		proxy := httptest.NewServer(gate)
		t.Cleanup(proxy.Close)
		cfg := server.DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.Listen = "127.0.0.1:0"
		cfg.Scheduler.Lease = 10 * time.Second
		cfg.Scheduler.RetryDelay = 200 * time.Millisecond
		cfg.Scheduler.PollInterval = 200 * time.Millisecond
		// Jobs reach the cache service through the gate.
		cfg.PublicURL = proxy.URL
		h, rt := serve(t, e, cfg)
		target, _ := url.Parse(h.url)
		gate.proxy = httputil.NewSingleHostReverseProxy(target)
		gate.rt = rt
		h.startAgent("a1", gate)

		const fill = `for i in $(seq 0 255); do d=/cache/go-build/$(printf %02x $i); mkdir -p $d; head -c 131072 /dev/urandom > $d/$i-d; done; echo "sum $(cat /cache/go-build/*/* | md5sum | cut -c1-32)"`
		const use = `n=$(ls /cache/go-build | wc -l); echo "dirs $n"; [ "$n" = 256 ]; echo "sum $(cat /cache/go-build/*/* | md5sum | cut -c1-32)"; mkdir /cache/go-build/00/new && echo x > /cache/go-build/00/new/f && echo x > /cache/go-build/trim.txt && echo "wrote"`
		keyed := "cache:\n  - key: go-build-v1\n    paths: [/cache/go-build]\n"
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile(keyed, fill)})
		h.addProject("app", repo, projectOpts{})
		b := h.waitDone(h.trigger("app", "main"))
		log := h.logText(b.ID)
		if b.Status != store.StatusSuccess || !strings.Contains(log, ": saved") {
			t.Fatalf("first build %s:\n%s", b.Status, log)
		}
		sum := regexp.MustCompile(`sum ([0-9a-f]{32})`).FindStringSubmatch(log)
		if sum == nil {
			t.Fatalf("no sum in the first build's log:\n%s", log)
		}
		commit(t, repo, map[string]string{".kiln.yml": pipelineFile(keyed, use)})

		for _, order := range []string{"restore last", "sandbox last"} {
			gate.set(order, h)
			id := h.trigger("app", "main")
			gate.build(id)
			b := h.waitDone(id)
			log := h.logText(id)
			for _, want := range []string{"hit on exact key go-build-v1", "dirs 256", "sum " + sum[1], "wrote"} {
				if b.Status != store.StatusSuccess || !strings.Contains(log, want) {
					t.Fatalf("%s: build %s, want %q in its log:\n%s", order, b.Status, want, log)
				}
			}
			if err := gate.check(); err != nil {
				t.Fatalf("%s: %v\n%s", order, err, log)
			}
		}
	})
}

// orderGate forces one order between a job's keyed cache restore and its
// sandbox's creation. It is the cache service's public URL (a reverse
// proxy to the server that can hold blob downloads) and the agent's
// runtime (one that can hold Create).
type orderGate struct {
	proxy http.Handler
	rt    sandbox.Runtime

	mu       sync.Mutex
	order    string        // "" (nothing held), "restore last", "sandbox last"
	up       chan struct{} // closed when the job's sandbox is up
	upClosed bool
	restore  chan struct{} // closed when the job's log says the cache was restored
	h        *harness
	events   []string
}

func (g *orderGate) set(order string, h *harness) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.order, g.h, g.events, g.upClosed = order, h, nil, false
	g.up, g.restore = make(chan struct{}), make(chan struct{})
}

// build watches build id's log for the restore's line, for "sandbox last".
func (g *orderGate) build(id int64) {
	g.mu.Lock()
	restore, h := g.restore, g.h
	g.mu.Unlock()
	go func() {
		deadline := time.Now().Add(waitLimit)
		for time.Now().Before(deadline) {
			if strings.Contains(h.logTextQuiet(id), "hit on exact key") {
				g.event("restored")
				close(restore)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func (g *orderGate) event(e string) {
	g.mu.Lock()
	g.events = append(g.events, e)
	g.mu.Unlock()
}

// check says whether the order was the one asked for.
func (g *orderGate) check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := []string{"sandbox up", "download"}
	if g.order == "sandbox last" {
		want = []string{"restored", "sandbox up"}
	}
	got := []string{}
	for _, e := range g.events {
		for _, w := range want {
			if e == w {
				got = append(got, e)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("order of events %q, want %q", g.events, want)
	}
	return nil
}

func (g *orderGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	order, up := g.order, g.up
	g.mu.Unlock()
	if order == "restore last" && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/cache-blobs/") {
		select {
		case <-up:
		case <-r.Context().Done():
			return
		case <-time.After(waitLimit):
		}
		g.event("download")
	}
	g.proxy.ServeHTTP(w, r)
}

func (g *orderGate) Ping(ctx context.Context) error { return g.rt.Ping(ctx) }
func (g *orderGate) Exec(ctx context.Context, id string, s sandbox.ExecSpec) (int, error) {
	return g.rt.Exec(ctx, id, s)
}
func (g *orderGate) Destroy(ctx context.Context, id string) error { return g.rt.Destroy(ctx, id) }
func (g *orderGate) List(ctx context.Context, l map[string]string) ([]sandbox.Info, error) {
	return g.rt.List(ctx, l)
}

func (g *orderGate) Create(ctx context.Context, spec sandbox.Spec) (string, error) {
	g.mu.Lock()
	order, up, restore := g.order, g.up, g.restore
	g.mu.Unlock()
	if order == "sandbox last" {
		select {
		case <-restore:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(waitLimit): // a safety net: check() fails the test
		}
	}
	id, err := g.rt.Create(ctx, spec)
	if order != "" {
		g.mu.Lock()
		if !g.upClosed {
			g.upClosed = true
			g.events = append(g.events, "sandbox up")
			close(up)
		}
		g.mu.Unlock()
	}
	return id, err
}

// logTextQuiet is logText for a goroutine: "" when the log cannot be read.
func (h *harness) logTextQuiet(id int64) string {
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/builds/%d/logs", h.url, id), nil)
	req.Header.Set("Authorization", "Bearer "+h.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, _ = io.Copy(&sb, resp.Body)
	return sb.String()
}
