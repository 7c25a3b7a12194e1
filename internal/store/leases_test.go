package store

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func acquire(t *testing.T, s *Store, name, holder string, ttl time.Duration) (bool, int64) {
	t.Helper()
	held, token, err := s.AcquireLease(ctx, name, holder, ttl)
	if err != nil {
		t.Fatalf("acquire %s for %s: %v", name, holder, err)
	}
	return held, token
}

// A lease is its holder's until it expires or is released; renewing in
// time keeps the token, every new tenure bumps it.
func TestLeaderLease(t *testing.T) {
	s, _ := newStore(t)
	clk := withClock(s)
	const ttl = 15 * time.Second

	if _, err := s.Lease(ctx, "background"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lease before any acquire: %v", err)
	}
	held, tokA := acquire(t, s, "background", "a", ttl)
	if !held || tokA != 1 {
		t.Fatalf("a free lease: held %v token %d", held, tokA)
	}
	if held, _ := acquire(t, s, "background", "b", ttl); held {
		t.Fatal("b took a's live lease")
	}
	// Other names are other leases.
	if held, tok := acquire(t, s, "other", "b", ttl); !held || tok != 1 {
		t.Fatalf("another lease: held %v token %d", held, tok)
	}

	// Renewed in time: a keeps it, and its token, past the first expiry.
	clk.advance(10 * time.Second)
	if held, tok := acquire(t, s, "background", "a", ttl); !held || tok != tokA {
		t.Fatalf("renewal: held %v token %d, want %d", held, tok, tokA)
	}
	clk.advance(10 * time.Second) // 20s after the first acquire, 10s after the renewal
	if held, _ := acquire(t, s, "background", "b", ttl); held {
		t.Fatal("b took a lease a renewed")
	}
	l, err := s.Lease(ctx, "background")
	if err != nil || l.Holder != "a" || !l.ExpiresAt.Equal(clk.now().Add(5*time.Second)) {
		t.Fatalf("lease: %+v, %v", l, err)
	}

	// Expired: b takes it over with a new token; a's renewal now fails.
	clk.advance(5 * time.Second) // exactly at expiry: expired
	held, tokB := acquire(t, s, "background", "b", ttl)
	if !held || tokB != tokA+1 {
		t.Fatalf("takeover: held %v token %d, want %d", held, tokB, tokA+1)
	}
	if held, _ := acquire(t, s, "background", "a", ttl); held {
		t.Fatal("a renewed a lease b took over")
	}
	// a's release of what it no longer holds changes nothing.
	if err := s.ReleaseLease(ctx, "background", "a"); err != nil {
		t.Fatal(err)
	}
	if held, tok := acquire(t, s, "background", "b", ttl); !held || tok != tokB {
		t.Fatalf("b after a's stale release: held %v token %d", held, tok)
	}

	// Released: a takes it at once, with a new token.
	if err := s.ReleaseLease(ctx, "background", "b"); err != nil {
		t.Fatal(err)
	}
	held, tokA2 := acquire(t, s, "background", "a", ttl)
	if !held || tokA2 != tokB+1 {
		t.Fatalf("after release: held %v token %d, want %d", held, tokA2, tokB+1)
	}

	// Its own lease expired and taken again by the same holder is a new
	// tenure: someone else could have held it meanwhile.
	clk.advance(ttl)
	if held, tok := acquire(t, s, "background", "a", ttl); !held || tok != tokA2+1 {
		t.Fatalf("own expired lease: held %v token %d, want %d", held, tok, tokA2+1)
	}

	for _, bad := range []struct {
		name, holder string
		ttl          time.Duration
	}{{"", "a", ttl}, {"x", "", ttl}, {"x", "a", 0}} {
		if _, _, err := s.AcquireLease(ctx, bad.name, bad.holder, bad.ttl); err == nil {
			t.Errorf("acquire %+v: no error", bad)
		}
	}
}

// Holders racing for a free lease, or for an expired one: exactly one
// gets it.
func TestLeaderLeaseRace(t *testing.T) {
	s, _ := newStore(t)
	clk := withClock(s)
	for round := range 6 {
		name := "race" + string(rune('a'+round/2))
		if round%2 == 1 { // the lease the last round's winner holds, expired
			clk.advance(time.Minute)
		}
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		for i := range 8 {
			holder := string(rune('p' + i))
			wg.Go(func() {
				held, _, err := s.AcquireLease(ctx, name, holder, time.Minute)
				if err != nil {
					t.Error(err)
				}
				if held {
					mu.Lock()
					winners = append(winners, holder)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%s: winners %v", name, winners)
		}
	}
}
