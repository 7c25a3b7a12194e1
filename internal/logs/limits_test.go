package logs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// encodedSize is an upper bound of a line's JSON size, for any text.
func TestEncodedSizeBoundsJSON(t *testing.T) {
	for _, text := range []string{"", "plain", `"\<>&`, "\x00\x01\x1f\x7f", "\u2028\u2029", "\xff\xfe", "héllo ✓ 🎉", strings.Repeat("<", 1000)} {
		data, err := json.Marshal(Line{Seq: 1 << 62, Step: 1 << 30, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodedSize(text); got < len(data) {
			t.Errorf("encodedSize(%q) = %d, JSON is %d bytes", text, got, len(data))
		}
	}
}

// refusingServer refuses (with ErrRefused) any batch over maxBytes of JSON
// and any line containing "poison"; it stores the rest.
type refusingServer struct {
	mu       sync.Mutex
	maxBytes int
	stored   map[int64]Line
	calls    int
}

func (s *refusingServer) send(ctx context.Context, lines []Line) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	data, _ := json.Marshal(lines)
	if len(data) > s.maxBytes {
		return fmt.Errorf("413: %w", ErrRefused)
	}
	for _, l := range lines {
		if strings.Contains(l.Text, "poison") {
			return fmt.Errorf("400: %w", ErrRefused)
		}
	}
	for _, l := range lines {
		s.stored[l.Seq] = l
	}
	return nil
}

// Batches are cut by encoded bytes: every send fits, none is refused.
func TestBatcherCutsBatchesByBytes(t *testing.T) {
	srv := &refusingServer{maxBytes: 10 << 10, stored: map[int64]Line{}}
	b := newBatcherOpts(srv.send, Options{MaxBatchBytes: 10 << 10}, 500, hour, 1000, 1, 1)
	for i := range 100 {
		b.Add(0, fmt.Sprintf("%d %s", i, strings.Repeat("<", 300)))
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(srv.stored) != 100 || b.DroppedLines() != (Dropped{}) {
		t.Fatalf("stored %d, dropped %+v", len(srv.stored), b.DroppedLines())
	}
}

// A refused batch is split until the halves are taken; a line refused on
// its own leaves a marker line with its seq, and is counted.
func TestBatcherSplitsRefusedBatches(t *testing.T) {
	srv := &refusingServer{maxBytes: 1 << 30, stored: map[int64]Line{}}
	b := newBatcher(srv.send, 500, hour, 1000, 1, 1)
	for i := 1; i <= 40; i++ {
		text := fmt.Sprintf("line %d", i)
		if i == 17 {
			text = "poison"
		}
		b.Add(0, text)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(srv.stored) != 40 {
		t.Fatalf("stored %d lines, want 40 (39 and a marker)", len(srv.stored))
	}
	for i := int64(1); i <= 40; i++ {
		l := srv.stored[i]
		if i == 17 {
			if l.Step != -1 || !strings.HasPrefix(l.Text, refusalMarker) {
				t.Fatalf("seq 17: %+v", l)
			}
			continue
		}
		if l.Text != fmt.Sprintf("line %d", i) {
			t.Fatalf("seq %d: %+v", i, l)
		}
	}
	if d := b.DroppedLines(); d.Refused != 1 {
		t.Fatalf("dropped %+v", d)
	}
}

// A marker refused too is given up on, counted once: Close does not hang.
func TestBatcherGivesUpOnARefusedMarker(t *testing.T) {
	b := newBatcher(func(context.Context, []Line) error { return ErrRefused }, 500, hour, 1000, 1, 1)
	b.Add(0, "a")
	b.Add(0, "b")
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := b.DroppedLines(); d.Refused != 2 {
		t.Fatalf("dropped %+v", d)
	}
}

// Past the job's limits, step output is dropped: one [kiln] line when the
// limit is hit, one with the count at the end; Kiln's own lines still go.
func TestBatcherJobLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"lines", Options{MaxJobLines: 5, MaxJobBytes: -1}},
		{"bytes", Options{MaxJobBytes: 5 * 7, MaxJobLines: -1}}, // "line N\n" is 7 bytes
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer()
			b := newBatcherOpts(srv.send, tc.opts, 500, hour, 1000, 1, 1)
			for i := 1; i <= 9; i++ {
				b.Add(0, fmt.Sprintf("line %d", i))
			}
			b.Add(-1, "[kiln] step 2/2: more")
			b.Add(1, "line X")
			if err := b.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			stored, order := srv.snapshot()
			var texts []string
			for _, s := range order {
				texts = append(texts, stored[s].Text)
			}
			got := strings.Join(texts, "\n")
			want := "line 1\nline 2\nline 3\nline 4\nline 5\n" +
				"[kiln] log limit reached (" + b.limitsText() + "); further output of this job is dropped\n" +
				"[kiln] step 2/2: more\n" +
				"[kiln] 5 lines (35 bytes) of output dropped over the job's log limit"
			if got != want {
				t.Fatalf("log:\n%s\nwant:\n%s", got, want)
			}
			if d := b.DroppedLines(); d.OverLimit != 5 {
				t.Fatalf("dropped %+v", d)
			}
		})
	}
}

// A flood of long lines is bounded by bytes too, with the marker.
func TestBatcherPendingBytesBound(t *testing.T) {
	block := make(chan struct{})
	b := newBatcher(func(ctx context.Context, _ []Line) error {
		select {
		case <-block:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, 500, 0, 1<<30, 1, 1)
	b.mu.Lock()
	b.maxPendingBytes = 1 << 20
	b.mu.Unlock()
	long := strings.Repeat("x", 60<<10)
	for range 100 {
		b.Add(0, long)
	}
	b.mu.Lock()
	qb, dropped := b.queueBytes, b.stats.Flood
	b.mu.Unlock()
	close(block)
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if qb > 1<<20 || dropped == 0 {
		t.Fatalf("queued %d bytes (bound 1 MiB), dropped %d", qb, dropped)
	}
}
