package web

import (
	"strings"
	"testing"
)

func TestChartsEscapeAndWriteTheirFigures(t *testing.T) {
	svg := string(StackedBars("builds <per> day", []Bar{{Label: "12-01", Parts: []int{3, 1}}, {Label: "<b>", Parts: []int{0, 0}}},
		[]Series{{Name: "success", Class: "ok"}, {Name: "failure", Class: "bad"}}))
	for _, want := range []string{`aria-label="builds &lt;per&gt; day"`, `>4</text>`, `>&lt;b&gt;</text>`, `<title>success: 3</title>`, `<title>failure: 1</title>`} {
		if !strings.Contains(svg, want) {
			t.Errorf("stacked bars lack %q:\n%s", want, svg)
		}
	}
	if strings.Contains(svg, "<b>") {
		t.Error("a label went into the SVG unescaped")
	}
	svg = string(Ranges("durations", []Range{{Label: "web / <test>", Low: 10, High: 30, Text: "p50 10s · p95 30s"}}))
	for _, want := range []string{`web / &lt;test&gt;`, `p50 10s · p95 30s`} {
		if !strings.Contains(svg, want) {
			t.Errorf("ranges lack %q:\n%s", want, svg)
		}
	}
	if got := string(StackedBars("empty", nil, nil)); !strings.HasPrefix(got, "<svg") {
		t.Errorf("no bars: %q", got)
	}
}
