package api

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

var updateViews = flag.Bool("update-views", false, "rewrite testdata/views.golden from the view types")

// The view types are the REST API's contract: their JSON field names are
// pinned in testdata/views.golden, so a change to one (a store column
// renamed, a field dropped) shows up here as an API change, to be made on
// purpose (go test -run TestViewsArePinned -update-views).
func TestViewsArePinned(t *testing.T) {
	var b strings.Builder
	for _, v := range []any{BuildView{}, PullRequestView{}, JobView{}, StepView{}, PoolView{}, TokenView{}, RegistryView{}, AgentView{}, RunnerView{}, CacheEntryView{},
		InsightsView{}, BuildCountsView{}, InsightsDayView{}, PercentilesView{}, JobInsightsView{}, CacheInsightsView{}, SlowRunView{}, FlakyJobView{}} {
		typ := reflect.TypeOf(v)
		fmt.Fprintf(&b, "%s:", typ.Name())
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Errorf("%s.%s has no JSON name: a view's every field is part of the API", typ.Name(), f.Name)
			}
			fmt.Fprintf(&b, " %s", name)
		}
		b.WriteString("\n")
	}
	const golden = "testdata/views.golden"
	if *updateViews {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("the API's view types changed:\n got %s\nwant %s(if on purpose: go test ./internal/api -run TestViewsArePinned -update-views)", got, want)
	}
}
