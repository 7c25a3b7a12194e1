package stats

import (
	"testing"
	"time"
)

func TestPct(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * time.Millisecond // unsorted
	}
	for _, c := range []struct {
		ds   []time.Duration
		p    int
		want time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{7}, 99, 7},
		{[]time.Duration{3, 1, 2}, 50, 2},
		{[]time.Duration{3, 1, 2}, 0, 1},
		{[]time.Duration{3, 1, 2}, 100, 3},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond},
		{hundred, 100, 100 * time.Millisecond},
	} {
		if got := Pct(c.ds, c.p); got != c.want {
			t.Errorf("Pct(%v, %d) = %v, want %v", c.ds, c.p, got, c.want)
		}
	}
	if hundred[0] != 100*time.Millisecond {
		t.Error("Pct sorted its argument")
	}
}

func TestRatio(t *testing.T) {
	if Ratio(3, 2) != 1.5 || Ratio(1, 0) != 0 {
		t.Error(Ratio(3, 2), Ratio(1, 0))
	}
}
