// Package stats has the benchmarks' arithmetic on measured durations.
package stats

import (
	"slices"
	"time"
)

// Pct is the p-th percentile of ds by nearest rank: the smallest value
// that at least p% of ds are at or below (0 for none).
func Pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	idx := (len(s)*p + 99) / 100
	return s[max(0, min(idx-1, len(s)-1))]
}

// Ratio is a / b (0 when b is 0).
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
