package web

import (
	"fmt"
	"html"
	"html/template"
	"strings"
)

// The insights page's charts: SVG drawn on the server, every figure
// written on the chart itself (readable without hovering) and each
// chart's numbers in a table beside it. Labels are escaped; the rest is
// numbers.

// Bar is one bar of a stacked chart: its label and its parts' values,
// in the order of the chart's series.
type Bar struct {
	Label string
	Parts []int
}

// Series names a stacked chart's parts and their CSS classes.
type Series struct {
	Name, Class string
}

// StackedBars draws bars (one per label, left to right) of series
// stacked bottom-up, each bar's total written above it; a legend below.
func StackedBars(title string, bars []Bar, series []Series) template.HTML {
	const h, top, bottom, left = 160.0, 18.0, 34.0, 8.0
	w := max(560.0, float64(len(bars))*26+2*left)
	step := (w - 2*left) / float64(max(1, len(bars)))
	peak := 1
	for _, b := range bars {
		t := 0
		for _, v := range b.Parts {
			t += v
		}
		peak = max(peak, t)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, w, h+bottom+16, html.EscapeString(title))
	scale := (h - top) / float64(peak)
	for i, b := range bars {
		x := left + float64(i)*step + step*0.15
		bw := step * 0.7
		y := h
		total := 0
		for j, v := range b.Parts {
			if v == 0 || j >= len(series) {
				continue
			}
			bh := float64(v) * scale
			y -= bh
			fmt.Fprintf(&sb, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d</title></rect>`,
				html.EscapeString(series[j].Class), x, y, bw, bh, html.EscapeString(series[j].Name), v)
			total += v
		}
		if total > 0 {
			fmt.Fprintf(&sb, `<text class="val" x="%.1f" y="%.1f">%d</text>`, x+bw/2, y-4, total)
		}
		if len(bars) <= 10 || i%3 == 0 || i == len(bars)-1 {
			fmt.Fprintf(&sb, `<text class="lab" x="%.1f" y="%.1f">%s</text>`, x+bw/2, h+14, html.EscapeString(b.Label))
		}
	}
	x := left
	for _, s := range series {
		fmt.Fprintf(&sb, `<rect class="%s" x="%.1f" y="%.1f" width="10" height="10"/><text class="leg" x="%.1f" y="%.1f">%s</text>`,
			html.EscapeString(s.Class), x, h+bottom-6, x+14, h+bottom+3, html.EscapeString(s.Name))
		x += 14 + 8*float64(len(s.Name)) + 16
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

// Range is one row of a ranges chart: a label, a low and a high value
// (p50 and p95, say), and how to write them.
type Range struct {
	Label     string
	Low, High float64
	Text      string
}

// Ranges draws one horizontal row per range: a bar to Low, a lighter one
// on to High, the text written at its end.
func Ranges(title string, rows []Range) template.HTML {
	const w, rowH, labelW, textW = 640.0, 22.0, 200.0, 130.0
	peak := 0.0
	for _, r := range rows {
		peak = max(peak, r.High, r.Low)
	}
	if peak == 0 {
		peak = 1
	}
	span := w - labelW - textW
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, w, rowH*float64(len(rows))+4, html.EscapeString(title))
	for i, r := range rows {
		y := float64(i)*rowH + 4
		label := r.Label
		if len(label) > 28 {
			label = label[:27] + "…"
		}
		fmt.Fprintf(&sb, `<text class="rlab" x="%.1f" y="%.1f">%s</text>`, labelW-6, y+12, html.EscapeString(label))
		fmt.Fprintf(&sb, `<rect class="hi" x="%.1f" y="%.1f" width="%.1f" height="14"/>`, labelW, y+1, span*r.High/peak)
		fmt.Fprintf(&sb, `<rect class="lo" x="%.1f" y="%.1f" width="%.1f" height="14"/>`, labelW, y+1, span*r.Low/peak)
		fmt.Fprintf(&sb, `<text class="rval" x="%.1f" y="%.1f">%s</text>`, labelW+span*max(r.High, r.Low)/peak+6, y+12, html.EscapeString(r.Text))
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}
