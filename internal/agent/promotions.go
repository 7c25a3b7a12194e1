package agent

import (
	"context"
	"sync"
	"time"
)

// promotions tracks the sticky volumes whose promotion is still under way
// on this agent. A successful job reports its result first and keeps its
// writes after (promotion is off the job's critical path), so the next job
// of the project may be claimed before its predecessor's writes are in the
// volume: it waits for them here, briefly, rather than start from the
// generation before.
type promotions struct {
	mu      sync.Mutex
	pending map[string][]chan struct{} // project\x00path → one per promotion under way
}

// maxPromotionWait bounds how long a job waits for a predecessor's
// promotion before it takes the volume as it is.
const maxPromotionWait = 2 * time.Minute

func promotionKey(project, path string) string { return project + "\x00" + path }

// begin records a promotion of (project, path) under way; call the
// returned func when it is over, whatever its outcome.
func (p *promotions) begin(project, path string) (done func()) {
	ch := make(chan struct{})
	k := promotionKey(project, path)
	p.mu.Lock()
	if p.pending == nil {
		p.pending = map[string][]chan struct{}{}
	}
	p.pending[k] = append(p.pending[k], ch)
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			list := p.pending[k]
			for i, c := range list {
				if c == ch {
					list = append(list[:i], list[i+1:]...)
					break
				}
			}
			if len(list) == 0 {
				delete(p.pending, k)
			} else {
				p.pending[k] = list
			}
			p.mu.Unlock()
			close(ch)
		})
	}
}

// wait waits until the promotions of (project, path) under way when it was
// called are over, ctx ends, or maxPromotionWait passes. It returns how
// long it waited.
func (p *promotions) wait(ctx context.Context, project, path string) time.Duration {
	p.mu.Lock()
	list := append([]chan struct{}(nil), p.pending[promotionKey(project, path)]...)
	p.mu.Unlock()
	if len(list) == 0 {
		return 0
	}
	t0 := time.Now()
	timer := time.NewTimer(maxPromotionWait)
	defer timer.Stop()
	for _, ch := range list {
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Since(t0)
		case <-timer.C:
			return time.Since(t0)
		}
	}
	return time.Since(t0)
}
