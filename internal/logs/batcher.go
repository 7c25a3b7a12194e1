package logs

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Batching limits. The linger is short on purpose: one goroutine sends
// batches one at a time, so lines printed while a send is in flight queue
// up and go together in the next batch anyway. Batching comes from load,
// and an idle job's first line is not held back (it is on the critical path
// of "push to first output line").
const (
	BatchLines    = 500                   // a batch is sent as soon as this many lines are pending
	FlushInterval = 10 * time.Millisecond // ... or this long after the oldest pending line was added
	MaxPending    = 100000                // lines queued while sends fail; beyond, the oldest are dropped
)

// Backoff between retries of a failed send.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Batcher numbers lines and sends them in batches through a send function
// (the agent's HTTP call to the server).
//
// One goroutine sends, one batch at a time, in order. A batch goes out when
// BatchLines lines are pending, or FlushInterval after the oldest pending
// line was added, or at Close. A failed send is retried with the same lines
// (same Seq) after a capped exponential backoff, for as long as it takes:
// the server stores lines idempotently by Seq, so a batch that was stored
// but whose response was lost is not duplicated. Meanwhile Add keeps
// queueing; past MaxPending queued lines the oldest are dropped and one line
// "[kiln] N log lines dropped" takes the Seq of the last of them, so the
// server sees the gap (the others' Seq are never sent) and the reason.
//
// Add is safe for concurrent use and never waits for the network.
type Batcher struct {
	send func(ctx context.Context, lines []Line) error

	// Tunables, fixed after construction (tests shorten them).
	batchLines int
	interval   time.Duration
	maxPending int
	minBackoff time.Duration
	maxBackoff time.Duration

	ctx    context.Context // passed to send; canceled when Close gives up
	cancel context.CancelFunc
	wake   chan struct{} // poked when the sender may have something to do
	done   chan struct{} // closed when the sender goroutine returns

	mu       sync.Mutex
	seq      int64  // the last Seq given out
	queue    []Line // numbered, not yet taken by the sender
	dropped  int    // >0: queue[0] is the marker line for this many dropped lines
	inflight int    // lines taken by the sender, not yet delivered
	closing  bool
	stopped  bool  // the sender has returned or is about to: Add discards
	lastErr  error // the last send error, nil after a successful send
}

// NewBatcher returns a Batcher that delivers lines through send. send gets
// at most BatchLines lines, in Seq order, and must honour ctx. Call Close
// to deliver what is pending and stop the Batcher.
func NewBatcher(send func(ctx context.Context, lines []Line) error) *Batcher {
	return newBatcher(send, BatchLines, FlushInterval, MaxPending, minBackoff, maxBackoff)
}

func newBatcher(send func(context.Context, []Line) error, batchLines int, interval time.Duration, maxPending int, minBackoff, maxBackoff time.Duration) *Batcher {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Batcher{
		send:       send,
		batchLines: batchLines,
		interval:   interval,
		maxPending: max(maxPending, 2), // room for the marker and one line
		minBackoff: minBackoff,
		maxBackoff: maxBackoff,
		ctx:        ctx,
		cancel:     cancel,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	go b.run()
	return b
}

// Add numbers a line of step's output (-1 for Kiln's own lines) and queues
// it. Lines added after Close has returned are discarded.
func (b *Batcher) Add(step int, text string) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	if len(b.queue) >= b.maxPending {
		b.dropOldest()
	}
	b.seq++
	b.queue = append(b.queue, Line{Seq: b.seq, Step: step, Time: now, Text: text})
	if n := len(b.queue); n == 1 || n == b.batchLines {
		b.poke()
	}
}

// dropOldest makes room for one line in a full queue: it drops the oldest
// real lines and puts (or moves) the marker line in their place, with the
// Seq of the last line dropped. Reslicing from the front keeps this O(1).
func (b *Batcher) dropOldest() {
	first, n := 0, 2 // drop two lines: one makes room for the marker
	if b.dropped > 0 {
		first, n = 1, 1 // queue[0] is the marker already; it moves
	}
	last := b.queue[first+n-1]
	b.dropped += n
	b.queue = b.queue[first+n-1:]
	b.queue[0] = Line{
		Seq:  last.Seq,
		Step: -1,
		Time: last.Time,
		Text: fmt.Sprintf("[kiln] %d log lines dropped", b.dropped),
	}
}

// LastSeq returns the Seq of the last line added, 0 if none.
func (b *Batcher) LastSeq() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seq
}

// Close sends every pending line, retrying failed sends until ctx ends, and
// stops the Batcher. It returns nil if every line was delivered; otherwise
// an error that wraps ctx's error and the last send error. Close may be
// called more than once.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	b.poke()
	b.mu.Unlock()

	select {
	case <-b.done:
	case <-ctx.Done():
		b.cancel() // aborts a send in progress and the retries
		<-b.done
	}
	b.cancel()

	b.mu.Lock()
	defer b.mu.Unlock()
	undelivered := b.inflight + len(b.queue)
	if undelivered == 0 {
		return nil
	}
	cause := ctx.Err()
	if cause == nil {
		cause = context.Canceled // an earlier Close gave up
	}
	if b.lastErr != nil {
		return fmt.Errorf("logs: %d lines not delivered: %w: last send error: %w", undelivered, cause, b.lastErr)
	}
	return fmt.Errorf("logs: %d lines not delivered: %w", undelivered, cause)
}

// poke wakes the sender without blocking. Called with b.mu held.
func (b *Batcher) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// run is the sender goroutine.
func (b *Batcher) run() {
	defer close(b.done)
	defer func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
	}()
	for {
		batch, ok := b.next()
		if !ok || !b.deliver(batch) {
			return
		}
	}
}

// next waits until a batch is due and takes it from the queue. It returns
// false when the Batcher is closing with nothing left, or gave up.
func (b *Batcher) next() ([]Line, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var timeout <-chan time.Time
		b.mu.Lock()
		n := len(b.queue)
		if n == 0 && b.closing {
			b.stopped = true // under the same lock, so no Add slips in after
			b.mu.Unlock()
			return nil, false
		}
		if n > 0 {
			wait := time.Until(b.queue[0].Time.Add(b.interval))
			if n >= b.batchLines || b.closing || wait <= 0 {
				batch := b.take()
				b.mu.Unlock()
				return batch, true
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timeout = timer.C
		}
		b.mu.Unlock()

		select {
		case <-b.wake:
		case <-timeout:
		case <-b.ctx.Done():
			return nil, false
		}
	}
}

// take moves up to batchLines lines from the queue into a new batch (the
// send function may keep it). Called with b.mu held.
func (b *Batcher) take() []Line {
	n := min(len(b.queue), b.batchLines)
	batch := append([]Line(nil), b.queue[:n]...)
	b.inflight = n
	b.queue = b.queue[n:]
	b.dropped = 0 // the marker, if any, is in this batch
	if len(b.queue) == 0 {
		b.queue = nil // let the array go
	}
	return batch
}

// deliver sends batch until it succeeds (true) or the Batcher gives up.
func (b *Batcher) deliver(batch []Line) bool {
	backoff := b.minBackoff
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		err := b.send(b.ctx, batch)
		b.mu.Lock()
		if err == nil {
			b.inflight = 0
			b.lastErr = nil
			b.mu.Unlock()
			return true
		}
		// An error caused by giving up says less than the one before it.
		if b.ctx.Err() == nil || b.lastErr == nil {
			b.lastErr = err
		}
		b.mu.Unlock()

		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-timer.C:
		case <-b.ctx.Done():
			return false
		}
		backoff = min(2*backoff, b.maxBackoff)
	}
}
