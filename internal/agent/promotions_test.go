package agent

import (
	"context"
	"testing"
)

func TestPromotionsWaitForThoseUnderWay(t *testing.T) {
	var p promotions
	ctx := context.Background()
	if d := p.wait(ctx, "app", "/cache"); d != 0 {
		t.Fatalf("waited %s with nothing under way", d)
	}
	done1 := p.begin("app", "/cache")
	done2 := p.begin("app", "/cache")
	other := p.begin("app", "/other")
	defer other()

	waited := make(chan struct{})
	go func() { p.wait(ctx, "app", "/cache"); close(waited) }()
	done1()
	select {
	case <-waited:
		t.Fatal("wait returned while a promotion was still under way")
	default:
	}
	done2()
	<-waited // returns once both are over; another path does not matter
	done2()  // a second call is harmless

	// A promotion that starts after the wait began is not waited for.
	p.mu.Lock()
	n := len(p.pending)
	p.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d keys pending, want 1 (the other path)", n)
	}

	// The job's context ends the wait.
	done3 := p.begin("app", "/cache")
	defer done3()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p.wait(cctx, "app", "/cache")
}
