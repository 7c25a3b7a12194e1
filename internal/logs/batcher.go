package logs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
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
	// MaxPendingBytes bounds the queued lines' encoded size the same way
	// (a flood of long lines fills memory long before MaxPending lines).
	MaxPendingBytes = 256 << 20
)

// MaxBatchBytes is the most a batch's lines may take, JSON-encoded, when
// the server accepts requests of up to maxRequest bytes: room is left for
// the request's envelope. A batch is cut by bytes as well as by lines.
func MaxBatchBytes(maxRequest int) int { return maxRequest - 64<<10 }

// Default per-job limits on a job's step output (Kiln's own lines are not
// counted and never dropped by them). Past either, the job's further output
// is dropped, with one "[kiln]" line when the limit is hit and one with the
// count at the end.
const (
	DefaultMaxJobBytes = 256 << 20
	DefaultMaxJobLines = 2000000
)

// ErrRefused is what a send function wraps when the server refused a batch
// for good (too large, or invalid) rather than failed to take it: the
// Batcher splits such a batch and sends the halves, down to single lines; a
// single line refused is replaced by a "[kiln]" marker line with its Seq,
// so nothing is lost without a trace.
var ErrRefused = errors.New("logs: batch refused")

// Options are a Batcher's limits. Zero values take the defaults.
type Options struct {
	// MaxBatchBytes bounds one batch's lines, JSON-encoded (see
	// MaxBatchBytes); default: MaxBatchBytes(8 MiB).
	MaxBatchBytes int
	// MaxJobBytes and MaxJobLines bound the job's step output: its lines'
	// text bytes (each counted with its newline) and their number. A
	// negative value means no limit.
	MaxJobBytes int64
	MaxJobLines int64
}

// Dropped counts the lines a Batcher did not deliver as written, by cause.
type Dropped struct {
	Flood     int64 // dropped from a full queue while sends failed or lagged
	Refused   int64 // refused by the server one by one (replaced by markers)
	OverLimit int64 // over the job's log limits
}

// refusalMarker starts the line that takes the place of a line the server
// refused.
const refusalMarker = "[kiln] a log line was refused by the server:"

func isRefusalMarker(text string) bool {
	return len(text) >= len(refusalMarker) && text[:len(refusalMarker)] == refusalMarker
}

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
	batchLines      int
	batchBytes      int
	interval        time.Duration
	maxPending      int
	maxPendingBytes int
	minBackoff      time.Duration
	maxBackoff      time.Duration
	maxJobBytes     int64 // <0: none
	maxJobLines     int64

	ctx    context.Context // passed to send; canceled when Close gives up
	cancel context.CancelFunc
	wake   chan struct{} // poked when the sender may have something to do
	done   chan struct{} // closed when the sender goroutine returns

	mu         sync.Mutex
	seq        int64    // the last Seq given out
	queue      []queued // numbered, not yet taken by the sender
	queueBytes int      // their encoded size
	dropped    int      // >0: queue[0] is the marker line for this many dropped lines
	jobBytes   int64    // step output so far (text bytes plus newlines)
	jobLines   int64
	overBytes  int64 // step output dropped over the job's limits
	stats      Dropped
	inflight   int // lines taken by the sender, not yet delivered
	closing    bool
	stopped    bool  // the sender has returned or is about to: Add discards
	lastErr    error // the last send error, nil after a successful send
}

// queued is a numbered line and its encoded size.
type queued struct {
	Line
	size int
}

// NewBatcher returns a Batcher that delivers lines through send. send gets
// at most BatchLines lines and opts.MaxBatchBytes encoded bytes, in Seq
// order, and must honour ctx. Call Close to deliver what is pending and
// stop the Batcher.
func NewBatcher(send func(ctx context.Context, lines []Line) error, opts Options) *Batcher {
	return newBatcherOpts(send, opts, BatchLines, FlushInterval, MaxPending, minBackoff, maxBackoff)
}

func newBatcher(send func(context.Context, []Line) error, batchLines int, interval time.Duration, maxPending int, minBackoff, maxBackoff time.Duration) *Batcher {
	return newBatcherOpts(send, Options{}, batchLines, interval, maxPending, minBackoff, maxBackoff)
}

func newBatcherOpts(send func(context.Context, []Line) error, opts Options, batchLines int, interval time.Duration, maxPending int, minBackoff, maxBackoff time.Duration) *Batcher {
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = MaxBatchBytes(8 << 20)
	}
	if opts.MaxJobBytes == 0 {
		opts.MaxJobBytes = DefaultMaxJobBytes
	}
	if opts.MaxJobLines == 0 {
		opts.MaxJobLines = DefaultMaxJobLines
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Batcher{
		send:            send,
		batchLines:      batchLines,
		batchBytes:      opts.MaxBatchBytes,
		interval:        interval,
		maxPending:      max(maxPending, 2), // room for the marker and one line
		maxPendingBytes: max(MaxPendingBytes, 2*opts.MaxBatchBytes),
		minBackoff:      minBackoff,
		maxBackoff:      maxBackoff,
		maxJobBytes:     opts.MaxJobBytes,
		maxJobLines:     opts.MaxJobLines,
		ctx:             ctx,
		cancel:          cancel,
		wake:            make(chan struct{}, 1),
		done:            make(chan struct{}),
	}
	go b.run()
	return b
}

// encodedSize is an upper bound of a line's size in a JSON batch: its text
// escaped as encoding/json escapes it, plus the other fields.
func encodedSize(text string) int {
	n := 128 // {"seq":…,"step":…,"time":"…","text":""}, with room to spare
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6 // \ufffd
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// Add numbers a line of step's output (-1 for Kiln's own lines) and queues
// it. Lines added after Close has returned are discarded. A step's line
// past the job's log limits is dropped (and counted); the first one dropped
// leaves a "[kiln]" line in its place.
func (b *Batcher) Add(step int, text string) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	if step >= 0 {
		size := int64(len(text)) + 1
		over := b.maxJobBytes >= 0 && b.jobBytes+size > b.maxJobBytes ||
			b.maxJobLines >= 0 && b.jobLines+1 > b.maxJobLines
		if over {
			if b.stats.OverLimit == 0 {
				b.add(-1, now, fmt.Sprintf("[kiln] log limit reached (%s); further output of this job is dropped", b.limitsText()))
			}
			b.stats.OverLimit++
			b.overBytes += size
			return
		}
		b.jobBytes += size
		b.jobLines++
	}
	b.add(step, now, text)
}

// limitsText describes the job's log limits. Called with b.mu held.
func (b *Batcher) limitsText() string {
	var bytes, lines = "no byte limit", "no line limit"
	if b.maxJobBytes >= 0 {
		bytes = fmt.Sprintf("%d bytes", b.maxJobBytes)
	}
	if b.maxJobLines >= 0 {
		lines = fmt.Sprintf("%d lines", b.maxJobLines)
	}
	return "at most " + bytes + " and " + lines + " per job: agent flags -job-log-max-bytes, -job-log-max-lines"
}

// add queues a line. Called with b.mu held.
func (b *Batcher) add(step int, now time.Time, text string) {
	size := encodedSize(text)
	for len(b.queue) > 0 && (len(b.queue) >= b.maxPending || b.queueBytes+size > b.maxPendingBytes) {
		if len(b.queue) == 1 && b.dropped > 0 {
			break // only the marker is left
		}
		b.dropOldest()
	}
	b.seq++
	b.queue = append(b.queue, queued{Line{Seq: b.seq, Step: step, Time: now, Text: text}, size})
	b.queueBytes += size
	if n := len(b.queue); n == 1 || n == b.batchLines || b.queueBytes >= b.batchBytes && b.queueBytes-size < b.batchBytes {
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
	n = min(n, len(b.queue)-first)
	for _, q := range b.queue[:first+n] {
		b.queueBytes -= q.size
	}
	last := b.queue[first+n-1]
	b.dropped += n
	b.stats.Flood += int64(n)
	if first == 1 {
		b.stats.Flood-- // the marker itself moved, it was not a line
	}
	b.queue = b.queue[first+n-1:]
	text := fmt.Sprintf("[kiln] %d log lines dropped", b.dropped)
	b.queue[0] = queued{Line{Seq: last.Seq, Step: -1, Time: last.Time, Text: text}, encodedSize(text)}
	b.queueBytes += b.queue[0].size
}

// DroppedLines returns how many lines were not delivered as written so
// far, by cause.
func (b *Batcher) DroppedLines() Dropped {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
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
	if b.stats.OverLimit > 0 && !b.closing && !b.stopped {
		b.add(-1, time.Now(), fmt.Sprintf("[kiln] %d lines (%d bytes) of output dropped over the job's log limit", b.stats.OverLimit, b.overBytes))
	}
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
			if n >= b.batchLines || b.queueBytes >= b.batchBytes || b.closing || wait <= 0 {
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

// take moves up to batchLines lines, and batchBytes encoded bytes (but at
// least one line), from the queue into a new batch (the send function may
// keep it). Called with b.mu held.
func (b *Batcher) take() []Line {
	n, size := 0, 0
	for n < len(b.queue) && n < b.batchLines && (n == 0 || size+b.queue[n].size <= b.batchBytes) {
		size += b.queue[n].size
		n++
	}
	batch := make([]Line, n)
	for i, q := range b.queue[:n] {
		batch[i] = q.Line
	}
	b.inflight = n
	b.queueBytes -= size
	b.queue = b.queue[n:]
	b.dropped = 0 // the marker, if any, is in this batch
	if len(b.queue) == 0 {
		b.queue = nil // let the array go
	}
	return batch
}

// deliver sends batch until it succeeds (true) or the Batcher gives up. A
// batch refused for good is split in two, each half delivered in turn; a
// single line refused is replaced by a marker (same Seq), and a refused
// marker is counted and given up on.
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
			b.inflight -= len(batch)
			b.lastErr = nil
			b.mu.Unlock()
			return true
		}
		if errors.Is(err, ErrRefused) && b.ctx.Err() == nil {
			b.mu.Unlock()
			if len(batch) > 1 {
				h := len(batch) / 2
				return b.deliver(batch[:h]) && b.deliver(batch[h:])
			}
			l := batch[0]
			if l.Step == -1 && len(l.Text) < 512 && isRefusalMarker(l.Text) {
				b.mu.Lock()
				b.inflight-- // the line it stands for is counted already
				b.mu.Unlock()
				return true
			}
			b.mu.Lock()
			b.stats.Refused++
			b.mu.Unlock()
			batch = []Line{{Seq: l.Seq, Step: -1, Time: l.Time, Text: fmt.Sprintf("%s %d bytes (step %d): %v", refusalMarker, len(l.Text), l.Step, err)}}
			if len(batch[0].Text) > 500 {
				batch[0].Text = batch[0].Text[:500]
			}
			continue
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
