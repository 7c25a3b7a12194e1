package scheduler

import (
	"cmp"
	"slices"

	"github.com/kilnci/kiln/internal/store"
)

// FairShare is the scheduling policy across projects (store.Claim.Order):
// weighted fair share of the running jobs. The project running the fewest
// jobs for its weight goes first; among equals, the one whose oldest job
// was queued first. A project with 10,000 queued jobs therefore never makes
// another project's build wait behind them: that project, running less,
// is served at the next claim. Caps on running jobs are the store's to
// enforce (a project's own, or Config.ProjectMaxRunning).
func FairShare(loads []store.ProjectLoad) {
	slices.SortFunc(loads, func(a, b store.ProjectLoad) int {
		// running/weight compared without division.
		if c := cmp.Compare(a.Running*b.Weight, b.Running*a.Weight); c != 0 {
			return c
		}
		return cmp.Compare(a.Oldest, b.Oldest)
	})
}
