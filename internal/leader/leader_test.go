package leader_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/leader"
	"github.com/kilnci/kiln/internal/secretbox"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/store/storetest"
)

// clock is the store's: a lease expires only when the test says.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func openStore(t *testing.T) (*store.Store, *clock) {
	t.Helper()
	box, err := secretbox.New(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), storetest.Database(t), box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	st.SetClock(c.now)
	return st, c
}

// leases is the store, counting tries and failing writes when told.
type leases struct {
	st    *store.Store
	tries atomic.Int64
	fail  atomic.Bool
}

var errDown = errors.New("store unreachable")

func (l *leases) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, int64, error) {
	l.tries.Add(1)
	if l.fail.Load() {
		return false, 0, errDown
	}
	return l.st.AcquireLease(ctx, name, holder, ttl)
}

func (l *leases) ReleaseLease(ctx context.Context, name, holder string) error {
	if l.fail.Load() {
		return errDown
	}
	return l.st.ReleaseLease(ctx, name, holder)
}

// work records who runs it, and fails the test if two ever do at once.
type work struct {
	t       *testing.T
	mu      sync.Mutex
	running map[string]bool
	runs    map[string]int
	causes  map[string]error
}

func newWork(t *testing.T) *work {
	return &work{t: t, running: map[string]bool{}, runs: map[string]int{}, causes: map[string]error{}}
}

func (w *work) fn(who string) func(context.Context) {
	return func(ctx context.Context) {
		w.mu.Lock()
		for other, on := range w.running {
			if on {
				w.t.Errorf("%s's work started while %s's runs", who, other)
			}
		}
		w.running[who] = true
		w.runs[who]++
		w.mu.Unlock()
		<-ctx.Done()
		w.mu.Lock()
		w.running[who] = false
		w.causes[who] = context.Cause(ctx)
		w.mu.Unlock()
	}
}

func (w *work) state(who string) (running bool, runs int, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running[who], w.runs[who], w.causes[who]
}

type elector struct {
	*leader.Elector
	leases *leases
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs an elector for "background" whose lease, 1h, expires only
// when the test moves the store's clock; it tries every 5ms.
func start(t *testing.T, st *store.Store, w *work, who string, log *slog.Logger) *elector {
	t.Helper()
	l := &leases{st: st}
	e, err := leader.New(l, leader.Config{Name: "background", Holder: who, TTL: time.Hour, Every: 5 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	el := &elector{Elector: e, leases: l, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(el.done); e.Run(ctx, w.fn(who)) }()
	t.Cleanup(el.stop)
	return el
}

func (e *elector) stop() { e.cancel(); <-e.done }

// triesMore waits until e has tried for the lease n more times.
func (e *elector) triesMore(t *testing.T, n int64) {
	t.Helper()
	from := e.leases.tries.Load()
	waitUntil(t, "more tries", func() bool { return e.leases.tries.Load() >= from+n })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Two electors on one store: the work runs on one of them; when its
// context ends it releases the lease, and the other takes over at its
// next try, long before the lease would have expired.
func TestOneLeaderThenHandover(t *testing.T) {
	st, _ := openStore(t)
	w := newWork(t)
	a := start(t, st, w, "a", quiet())
	waitUntil(t, "a leads", func() bool { on, _, _ := w.state("a"); return on })
	b := start(t, st, w, "b", quiet())
	b.triesMore(t, 5) // b asks, a keeps it
	if on, runs, _ := w.state("b"); on || runs != 0 || b.Leading() || !a.Leading() {
		t.Fatalf("b's work ran (%v, %d runs) while a leads", on, runs)
	}

	a.stop()
	if on, _, cause := w.state("a"); on || !errors.Is(cause, context.Canceled) {
		t.Fatalf("a stopped: its work running %v, cause %v", on, cause)
	}
	if a.Leading() {
		t.Fatal("a still leading after its Run returned")
	}
	// No clock moved: b gets it because a released it.
	waitUntil(t, "b leads", func() bool { on, _, _ := w.state("b"); return on })
	l, err := st.Lease(context.Background(), "background")
	if err != nil || l.Holder != "b" || l.Token != 2 {
		t.Fatalf("lease after the handover: %+v %v", l, err)
	}
}

// A holder whose store writes fail loses the lease: its work stops at its
// first failed renewal. Another takes over only once the lease expired
// (its holder might still be working): here when the store's clock
// passes it.
func TestFailingHolderLosesLease(t *testing.T) {
	st, clk := openStore(t)
	w := newWork(t)
	var logs syncBuffer
	a := start(t, st, w, "a", slog.New(slog.NewTextHandler(&logs, nil)))
	waitUntil(t, "a leads", func() bool { on, _, _ := w.state("a"); return on })
	b := start(t, st, w, "b", quiet())
	b.triesMore(t, 3)

	a.leases.fail.Store(true)
	waitUntil(t, "a's work stopped", func() bool { on, _, _ := w.state("a"); return !on })
	if _, _, cause := w.state("a"); !errors.Is(cause, leader.ErrLost) || !strings.Contains(cause.Error(), errDown.Error()) {
		t.Fatalf("a's work ended by %v", cause)
	}
	waitUntil(t, "a no longer leading", func() bool { return !a.Leading() })
	b.triesMore(t, 3) // the lease has not expired: b waits
	if on, runs, _ := w.state("b"); on || runs != 0 {
		t.Fatal("b took a lease that had not expired")
	}

	clk.advance(time.Hour)
	waitUntil(t, "b leads", func() bool { on, _, _ := w.state("b"); return on })
	// a's store is back: a tries again and finds b holding it.
	a.leases.fail.Store(false)
	a.triesMore(t, 3)
	if _, runs, _ := w.state("a"); runs != 1 || a.Leading() {
		t.Fatalf("a ran its work %d times; leading %v", runs, a.Leading())
	}
	for _, want := range []string{"leader lease acquired", "leader lease lost", "renewal failed: " + errDown.Error()} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("a's log lacks %q:\n%s", want, logs.String())
		}
	}
}

// A holder that finds the lease renewed as a new tenure (it expired in
// between: someone may have held it) stops its work and starts again.
func TestExpiredHolderStartsAgain(t *testing.T) {
	st, clk := openStore(t)
	w := newWork(t)
	start(t, st, w, "a", quiet())
	waitUntil(t, "a leads", func() bool { on, _, _ := w.state("a"); return on })
	clk.advance(time.Hour)
	waitUntil(t, "a's work started again", func() bool { on, runs, _ := w.state("a"); return on && runs == 2 })
	l, err := st.Lease(context.Background(), "background")
	if err != nil || l.Token != 2 {
		t.Fatalf("lease: %+v %v", l, err)
	}
}

// Work that returns by itself gives the lease up, and Run returns.
func TestWorkReturnsEarly(t *testing.T) {
	st, _ := openStore(t)
	e, err := leader.New(st, leader.Config{Name: "background", Holder: "a", TTL: time.Hour, Every: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	e.Run(context.Background(), func(context.Context) { ran = true })
	if !ran || e.Leading() {
		t.Fatalf("ran %v, leading %v", ran, e.Leading())
	}
	if held, _, err := st.AcquireLease(context.Background(), "background", "b", time.Hour); err != nil || !held {
		t.Fatalf("after the work returned, b's acquire: %v %v", held, err)
	}
}

func TestConfigRefused(t *testing.T) {
	st, _ := openStore(t)
	for _, c := range []leader.Config{
		{Holder: "a"},
		{Name: "background"},
		{Name: "background", Holder: "a", TTL: time.Millisecond},
		{Name: "background", Holder: "a", TTL: 3 * time.Second, Every: 2 * time.Second},
		{Name: "background", Holder: "a", TTL: -time.Second},
	} {
		if _, err := leader.New(st, c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := leader.New(nil, leader.Config{Name: "background", Holder: "a"}); err == nil {
		t.Error("no store: no error")
	}
	e, err := leader.New(st, leader.Config{Name: "background", Holder: leader.NewHolderID()})
	if err != nil || e.Leading() {
		t.Fatalf("defaults: %v", err)
	}
}

func TestHolderIDs(t *testing.T) {
	a, b := leader.NewHolderID(), leader.NewHolderID()
	host, _ := os.Hostname()
	if a == b || !strings.HasPrefix(a, host+"-") {
		t.Fatalf("holder ids %q %q", a, b)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
