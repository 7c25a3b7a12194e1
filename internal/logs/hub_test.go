package logs

import (
	"fmt"
	"sync"
	"testing"
)

func lines(from, to int64) []Line {
	var ls []Line
	for s := from; s <= to; s++ {
		ls = append(ls, Line{Seq: s, Text: fmt.Sprint(s)})
	}
	return ls
}

// receive reads n lines from ch, failing if it closes first.
func receive(t *testing.T, ch <-chan Line, n int) []Line {
	t.Helper()
	var got []Line
	for range n {
		l, ok := <-ch
		if !ok {
			t.Fatalf("channel closed after %d lines, want %d", len(got), n)
		}
		got = append(got, l)
	}
	return got
}

// closedAfter reads ch until it closes and returns how many lines it had.
func closedAfter(t *testing.T, ch <-chan Line) int {
	t.Helper()
	n := 0
	for range ch {
		n++
	}
	return n
}

func TestHubPublishSubscribe(t *testing.T) {
	h := NewHub()
	h.Publish(1, lines(1, 2)) // nobody listens: gone
	a, cancelA := h.Subscribe(1)
	defer cancelA()
	b, cancelB := h.Subscribe(1)
	defer cancelB()
	other, cancelOther := h.Subscribe(2)
	defer cancelOther()

	h.Publish(1, lines(3, 5))
	h.Publish(2, lines(1, 1))
	for _, ch := range []<-chan Line{a, b} {
		if got := receive(t, ch, 3); fmt.Sprint(got[0].Seq, got[2].Seq) != "3 5" {
			t.Errorf("got %v", got)
		}
	}
	if got := receive(t, other, 1); got[0].Seq != 1 {
		t.Errorf("job 2 got %v", got)
	}
	select {
	case l := <-a:
		t.Errorf("unexpected line %v", l)
	default:
	}
}

func TestHubCancel(t *testing.T) {
	h := NewHub()
	ch, cancel := h.Subscribe(7)
	h.Publish(7, lines(1, 2))
	cancel()
	cancel() // idempotent
	if n := closedAfter(t, ch); n != 2 {
		t.Errorf("%d buffered lines before close, want 2", n)
	}
	h.Publish(7, lines(3, 3)) // no subscriber left: no panic
}

func TestHubDropsSlowSubscriber(t *testing.T) {
	h := NewHub()
	slow, cancelSlow := h.Subscribe(1)
	defer cancelSlow()
	fast, cancelFast := h.Subscribe(1)
	defer cancelFast()

	h.Publish(1, lines(1, SubscriberBuffer)) // both buffers full
	receive(t, fast, SubscriberBuffer)       // the fast one keeps up
	h.Publish(1, lines(SubscriberBuffer+1, SubscriberBuffer+1))

	// Publish returned although slow's buffer was full; slow was dropped
	// with what it had buffered, fast is still live.
	if n := closedAfter(t, slow); n != SubscriberBuffer {
		t.Errorf("slow subscriber had %d lines, want %d", n, SubscriberBuffer)
	}
	if got := receive(t, fast, 1); got[0].Seq != SubscriberBuffer+1 {
		t.Errorf("fast got %v", got)
	}
	h.Publish(1, lines(SubscriberBuffer+2, SubscriberBuffer+2))
	if got := receive(t, fast, 1); got[0].Seq != SubscriberBuffer+2 {
		t.Errorf("fast got %v", got)
	}
	cancelSlow() // after the drop: harmless
}

func TestHubCloseEndsStream(t *testing.T) {
	h := NewHub()
	a, cancelA := h.Subscribe(1)
	b, _ := h.Subscribe(1)
	other, cancelOther := h.Subscribe(2)
	defer cancelOther()
	h.Publish(1, lines(1, 1))
	h.Close(1)
	if n := closedAfter(t, a); n != 1 {
		t.Errorf("a had %d lines", n)
	}
	if n := closedAfter(t, b); n != 1 { // buffered lines come before the close
		t.Errorf("b had %d lines", n)
	}
	cancelA() // after Close: harmless
	h.Close(1)
	h.Publish(1, lines(2, 2))

	h.Publish(2, lines(1, 1)) // other jobs are untouched
	if got := receive(t, other, 1); got[0].Seq != 1 {
		t.Errorf("job 2 got %v", got)
	}

	// A new subscription (a retry of the job) is a new stream.
	c, cancelC := h.Subscribe(1)
	defer cancelC()
	h.Publish(1, lines(1, 1))
	receive(t, c, 1)
}

func TestHubConcurrent(t *testing.T) {
	h := NewHub()
	var wg sync.WaitGroup
	for job := range int64(4) {
		// Subscribe before the job's stream can end, as the doc says.
		for range 3 {
			ch, cancel := h.Subscribe(job)
			wg.Go(func() {
				defer cancel()
				last := int64(-1)
				for l := range ch {
					if l.Seq <= last {
						t.Errorf("job %d: seq %d after %d", job, l.Seq, last)
					}
					last = l.Seq
				}
			})
		}
		wg.Go(func() {
			for i := range int64(2000) {
				h.Publish(job, lines(i, i))
			}
			h.Close(job)
		})
	}
	wg.Wait()
}
