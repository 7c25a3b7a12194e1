package logs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeServer stores lines idempotently by Seq, as the real server does by
// (job, attempt, seq), and can fail sends, before or after storing.
type fakeServer struct {
	mu       sync.Mutex
	stored   map[int64]Line
	order    []int64 // Seq in the order first stored
	batches  [][]Line
	calls    int
	failures func(call int) (before, after bool) // nil: never fail
	sent     chan []Line                         // if set, every call's batch is sent here
}

var errSend = errors.New("send failed")

func newFakeServer() *fakeServer { return &fakeServer{stored: make(map[int64]Line)} }

func (s *fakeServer) send(ctx context.Context, lines []Line) error {
	s.mu.Lock()
	s.calls++
	call := s.calls
	var before, after bool
	if s.failures != nil {
		before, after = s.failures(call)
	}
	if !before {
		s.batches = append(s.batches, lines)
		for _, l := range lines {
			if _, dup := s.stored[l.Seq]; !dup {
				s.stored[l.Seq] = l
				s.order = append(s.order, l.Seq)
			}
		}
	}
	s.mu.Unlock()
	if s.sent != nil {
		s.sent <- lines
	}
	if before || after {
		return fmt.Errorf("call %d: %w", call, errSend)
	}
	return nil
}

func (s *fakeServer) snapshot() (map[int64]Line, []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored, append([]int64(nil), s.order...)
}

// hour is an interval long enough that only batch size or Close sends.
const hour = time.Hour

func TestBatcherBatchesBySize(t *testing.T) {
	srv := newFakeServer()
	srv.sent = make(chan []Line, 10)
	b := newBatcher(srv.send, 3, hour, 100, time.Millisecond, time.Millisecond)
	for i := 1; i <= 7; i++ {
		b.Add(i%2, fmt.Sprintf("line %d", i))
	}
	for _, want := range [][]int64{{1, 2, 3}, {4, 5, 6}} {
		got := <-srv.sent
		checkSeqs(t, got, want)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := <-srv.sent
	checkSeqs(t, last, []int64{7})
	if l := last[0]; l.Step != 1 || l.Text != "line 7" || l.Time.IsZero() {
		t.Errorf("line 7 = %+v", l)
	}
	if got := b.LastSeq(); got != 7 {
		t.Errorf("LastSeq = %d", got)
	}
}

func TestBatcherFlushesAfterInterval(t *testing.T) {
	srv := newFakeServer()
	srv.sent = make(chan []Line, 10)
	b := newBatcher(srv.send, 500, time.Millisecond, 100, time.Millisecond, time.Millisecond)
	defer b.Close(context.Background())
	b.Add(0, "alone")
	// No Close: the interval alone must send it.
	checkSeqs(t, <-srv.sent, []int64{1})
	b.Add(0, "later")
	checkSeqs(t, <-srv.sent, []int64{2})
}

func checkSeqs(t *testing.T, lines []Line, want []int64) {
	t.Helper()
	var got []int64
	for _, l := range lines {
		got = append(got, l.Seq)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batch seqs %v, want %v", got, want)
	}
}

// checkDelivered checks that the server holds exactly Seq 1..n, stored in
// order, with the texts text(seq).
func checkDelivered(t *testing.T, srv *fakeServer, n int64, text func(Line) bool) {
	t.Helper()
	stored, order := srv.snapshot()
	if int64(len(stored)) != n {
		t.Fatalf("server holds %d lines, want %d", len(stored), n)
	}
	for i, seq := range order {
		if seq != int64(i+1) {
			t.Fatalf("stored order %v..., want 1..%d", order[:min(i+3, len(order))], n)
		}
		if !text(stored[seq]) {
			t.Fatalf("line %d = %+v", seq, stored[seq])
		}
	}
}

func TestBatcherRetriesDeliverEveryLineOnceInOrder(t *testing.T) {
	srv := newFakeServer()
	// Calls 1-3 fail outright; then every third call fails after the server
	// stored the batch (a lost response), every fifth before.
	srv.failures = func(call int) (before, after bool) {
		return call <= 3 || call%5 == 0, call > 3 && call%3 == 0
	}
	b := newBatcher(srv.send, 7, time.Millisecond, 100000, time.Microsecond, 10*time.Microsecond)
	const n = 1000
	for i := 1; i <= n; i++ {
		b.Add(0, fmt.Sprint(i))
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, srv, n, func(l Line) bool { return l.Text == fmt.Sprint(l.Seq) })
	// Retries resend the same batch: same Seq, same text.
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, batch := range srv.batches {
		for _, l := range batch {
			if l != srv.stored[l.Seq] {
				t.Fatalf("line %d sent as %+v and as %+v", l.Seq, l, srv.stored[l.Seq])
			}
		}
	}
	if srv.calls <= n/7 {
		t.Errorf("%d calls: the failures did not happen", srv.calls)
	}
}

func TestBatcherConcurrentAdd(t *testing.T) {
	srv := newFakeServer()
	srv.failures = func(call int) (bool, bool) { return call%4 == 0, false }
	b := newBatcher(srv.send, 50, time.Millisecond, 100000, time.Microsecond, time.Microsecond)
	const writers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				b.Add(w, fmt.Sprintf("%d/%d", w, i))
			}
		})
	}
	wg.Wait()
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := b.LastSeq(); got != writers*each {
		t.Errorf("LastSeq = %d", got)
	}
	checkDelivered(t, srv, writers*each, func(Line) bool { return true })
	// Each writer's lines keep their order.
	stored, _ := srv.snapshot()
	next := make([]int, writers)
	for seq := int64(1); seq <= writers*each; seq++ {
		l := stored[seq]
		if want := fmt.Sprintf("%d/%d", l.Step, next[l.Step]); l.Text != want {
			t.Fatalf("seq %d: %q, want %q", seq, l.Text, want)
		}
		next[l.Step]++
	}
}

func TestBatcherCloseWithCanceledContext(t *testing.T) {
	failed := make(chan struct{}, 100)
	send := func(ctx context.Context, lines []Line) error {
		select {
		case failed <- struct{}{}:
		default:
		}
		return errSend
	}
	b := newBatcher(send, 500, time.Millisecond, 100, time.Microsecond, time.Millisecond)
	b.Add(-1, "setup")
	b.Add(0, "never delivered")
	<-failed // at least one send failed

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.Close(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errSend) {
		t.Fatalf("Close = %v, want both context.Canceled and the send error", err)
	}
	// Closed: a second Close says the same, Add is discarded.
	b.Add(0, "after close")
	if err2 := b.Close(context.Background()); err2 == nil || !errors.Is(err2, errSend) {
		t.Errorf("second Close = %v", err2)
	}
	if got := b.LastSeq(); got != 2 {
		t.Errorf("LastSeq = %d after Add on a closed Batcher", got)
	}
}

func TestBatcherCloseAbortsBlockedSend(t *testing.T) {
	started := make(chan struct{})
	send := func(ctx context.Context, lines []Line) error {
		close(started)
		<-ctx.Done() // a send that hangs until it is given up
		return ctx.Err()
	}
	b := newBatcher(send, 500, time.Millisecond, 100, time.Millisecond, time.Millisecond)
	b.Add(0, "stuck")
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v", err)
	}
}

func TestBatcherCloseSucceedsAfterFailures(t *testing.T) {
	srv := newFakeServer()
	srv.failures = func(call int) (bool, bool) { return call <= 5, false }
	b := newBatcher(srv.send, 500, hour, 100, time.Microsecond, time.Microsecond)
	b.Add(0, "a")
	b.Add(0, "b")
	if err := b.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v after the sends recovered", err)
	}
	checkDelivered(t, srv, 2, func(Line) bool { return true })
}

func TestBatcherOverflowLeavesAGap(t *testing.T) {
	release := make(chan struct{})
	inSend := make(chan struct{})
	srv := newFakeServer()
	var once sync.Once
	send := func(ctx context.Context, lines []Line) error {
		once.Do(func() { // hold the first send until the queue overflowed
			close(inSend)
			<-release
		})
		return srv.send(ctx, lines)
	}
	// interval 0: line 1 is sent (and held) at once.
	b := newBatcher(send, 5, 0, 10, time.Millisecond, time.Millisecond)
	b.Add(0, "1")
	<-inSend
	for i := 2; i <= 26; i++ {
		b.Add(0, fmt.Sprint(i))
	}
	close(release)
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// 25 lines (2..26) met a queue of 10: the 16 oldest (2..17) are dropped,
	// the marker takes Seq 17, and 18..26 follow.
	stored, order := srv.snapshot()
	want := []int64{1, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("server got seqs %v, want %v", order, want)
	}
	if m := stored[17]; m.Text != "[kiln] 16 log lines dropped" || m.Step != -1 {
		t.Errorf("marker = %+v", m)
	}
	for _, seq := range want[2:] {
		if stored[seq].Text != fmt.Sprint(seq) {
			t.Errorf("line %d = %+v", seq, stored[seq])
		}
	}
	if got := b.LastSeq(); got != 26 {
		t.Errorf("LastSeq = %d", got)
	}
}

func TestBatcherOverflowTwiceMakesTwoMarkers(t *testing.T) {
	srv := newFakeServer()
	gate := make(chan struct{})
	held := make(chan struct{}, 10)
	send := func(ctx context.Context, lines []Line) error {
		held <- struct{}{}
		<-gate // each send waits for the test
		return srv.send(ctx, lines)
	}
	b := newBatcher(send, 100, 0, 4, time.Millisecond, time.Millisecond)
	b.Add(0, "1")
	<-held // [1] in flight
	for i := 2; i <= 8; i++ {
		b.Add(0, fmt.Sprint(i)) // queue of 4: 2..5 drop 2..5 → [M5 6 7 8]
	}
	gate <- struct{}{} // deliver [1]; the sender takes [M5 6 7 8]
	<-held
	for i := 9; i <= 14; i++ {
		b.Add(0, fmt.Sprint(i)) // a fresh marker: [M11 12 13 14]
	}
	close(gate)
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	stored, order := srv.snapshot()
	if want := "[1 5 6 7 8 11 12 13 14]"; fmt.Sprint(order) != want {
		t.Fatalf("server got seqs %v, want %s", order, want)
	}
	if stored[5].Text != "[kiln] 4 log lines dropped" || stored[11].Text != "[kiln] 3 log lines dropped" {
		t.Errorf("markers %q, %q", stored[5].Text, stored[11].Text)
	}
}
