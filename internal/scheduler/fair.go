package scheduler

import (
	"cmp"
	"slices"

	"github.com/kilnci/kiln/internal/store"
)

// FairShare is the scheduling policy across projects (store.Claim.Order):
// weighted fair share. The project running the fewest jobs for its weight
// goes first; among equals (say, agents that run one job at a time, so
// that nothing runs at each claim), the one served least recently for its
// weight (never served first; idle time times weight), then the one whose
// oldest job was queued first. A project with 10,000 queued jobs
// therefore never makes another project's build wait behind them: the
// other, running less or idle longer, is served at the next claim. Caps on
// running jobs are the store's to enforce (a project's own, or
// Config.ProjectMaxRunning).
func FairShare(loads []store.ProjectLoad) {
	slices.SortFunc(loads, func(a, b store.ProjectLoad) int {
		// running/weight compared without division.
		if c := cmp.Compare(a.Running*b.Weight, b.Running*a.Weight); c != 0 {
			return c
		}
		if a.Claimed != b.Claimed {
			if !a.Claimed {
				return -1
			}
			return 1
		}
		// Idle longer for its weight first (Idle is at most a day, so
		// the product cannot overflow).
		if c := cmp.Compare(int64(b.Idle)*int64(b.Weight), int64(a.Idle)*int64(a.Weight)); c != 0 {
			return c
		}
		return cmp.Compare(a.Oldest, b.Oldest)
	})
}
