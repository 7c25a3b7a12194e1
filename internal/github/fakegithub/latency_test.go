package fakegithub

import (
	"net/http"
	"testing"
	"time"
)

// SetLatency delays the endpoints it names, and only those; 0 removes it.
// (Only a lower bound is checked: a busy machine makes calls slower, never
// faster.)
func TestSetLatency(t *testing.T) {
	s := newTestServer(t)
	sha := "0123456789012345678901234567890123456789"
	status := map[string]any{"state": "pending", "context": "kiln"}

	s.SetLatency(EndpointCreateStatus, 50*time.Millisecond)
	t0 := time.Now()
	if code, _, body := call(t, s, "POST", "repos/acme/app/statuses/"+sha, status); code != http.StatusCreated {
		t.Fatalf("create status: HTTP %d %s", code, body)
	}
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Fatalf("a delayed status answered after %s", d)
	}

	// An hour's latency on statuses leaves other endpoints alone: this
	// call would hang otherwise.
	s.SetLatency(EndpointCreateStatus, time.Hour)
	if code, _, body := call(t, s, "GET", "repos/acme/app/actions/runners", nil); code != http.StatusOK {
		t.Fatalf("list runners: HTTP %d %s", code, body)
	}
	s.SetLatency(EndpointCreateStatus, 0)
	if code, _, body := call(t, s, "POST", "repos/acme/app/statuses/"+sha, status); code != http.StatusCreated {
		t.Fatalf("create status after the latency's removal: HTTP %d %s", code, body)
	}
	if got := len(s.Statuses()); got != 2 {
		t.Fatalf("%d statuses recorded, want 2", got)
	}
}

func TestSetLatencyBadPattern(t *testing.T) {
	s := newTestServer(t)
	defer func() {
		if recover() == nil {
			t.Fatal("a bad pattern: no panic")
		}
	}()
	s.SetLatency("[", time.Second)
}
