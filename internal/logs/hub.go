package logs

import "sync"

// SubscriberBuffer is how many lines a subscriber may fall behind before
// the Hub drops it.
const SubscriberBuffer = 1024

// Hub fans live log lines out to subscribers, per job. It is the server's
// in-memory live stream only: lines are stored durably elsewhere, and a
// subscriber whose channel closes re-reads from the store.
//
// To miss nothing, a reader subscribes first, then reads the stored lines
// and the job's state, then follows the channel, skipping Seq numbers it
// has already seen. The server stores lines before publishing them and
// records a job's end before calling Close, so a job that ended before
// Subscribe is seen as ended in the store.
//
// All methods are safe for concurrent use.
type Hub struct {
	mu   sync.Mutex
	subs map[int64]map[*subscriber]struct{}
}

type subscriber struct {
	ch chan Line
}

// NewHub returns an empty Hub.
func NewHub() *Hub {
	return &Hub{subs: make(map[int64]map[*subscriber]struct{})}
}

// Publish sends lines to the job's current subscribers. It never blocks: a
// subscriber whose buffer (SubscriberBuffer lines) is full is dropped, its
// channel closed.
func (h *Hub) Publish(jobID int64, lines []Line) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[jobID] {
	send:
		for _, l := range lines {
			select {
			case s.ch <- l:
			default:
				h.remove(jobID, s)
				break send
			}
		}
	}
}

// Subscribe returns a channel of the job's lines published after the call,
// and a func that ends the subscription (closing the channel; calling it
// again does nothing). The channel is also closed when the subscriber falls
// behind or the job's stream is closed.
func (h *Hub) Subscribe(jobID int64) (<-chan Line, func()) {
	s := &subscriber{ch: make(chan Line, SubscriberBuffer)}
	h.mu.Lock()
	set := h.subs[jobID]
	if set == nil {
		set = make(map[*subscriber]struct{})
		h.subs[jobID] = set
	}
	set[s] = struct{}{}
	h.mu.Unlock()

	cancel := func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.remove(jobID, s)
	}
	return s.ch, cancel
}

// Close ends the job's stream: every subscriber's channel is closed.
func (h *Hub) Close(jobID int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[jobID] {
		close(s.ch)
	}
	delete(h.subs, jobID)
}

// remove closes s's channel if s is still subscribed. Called with h.mu held.
func (h *Hub) remove(jobID int64, s *subscriber) {
	set := h.subs[jobID]
	if _, ok := set[s]; !ok {
		return
	}
	close(s.ch)
	delete(set, s)
	if len(set) == 0 {
		delete(h.subs, jobID)
	}
}
