package trace

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
)

// WriteHTML writes one self-contained page (inline SVG, no external
// assets): a heatmap of log10 rel err over layers × points, one panel per
// step.
func (r *Report) WriteHTML(w io.Writer, titleA, titleB string) error {
	steps := map[int][]Entry{}
	var order []int
	for _, e := range r.Entries {
		if _, ok := steps[e.Step]; !ok {
			order = append(order, e.Step)
		}
		steps[e.Step] = append(steps[e.Step], e)
	}
	sort.Ints(order)
	fmt.Fprintf(w, `<!DOCTYPE html><html><head><meta charset="utf-8"><title>greta trace diff</title>
<style>body{font:13px sans-serif;margin:20px}h2{font-size:15px;margin:18px 0 4px}.v{font-size:14px;margin:8px 0}</style></head><body>
<h1 style="font-size:18px">greta trace diff</h1><div>A: %s<br>B (reference): %s<br>tolerance %.0e</div><div class="v">%s</div>
`, html.EscapeString(titleA), html.EscapeString(titleB), r.Tol, html.EscapeString(r.FirstLine()))
	// Colour scale: log10 err from −8 (green) through log10 tol (yellow) to 0 (red).
	lt := math.Log10(r.Tol)
	colour := func(e float64) string {
		if math.IsNaN(e) || math.IsInf(e, 0) {
			return "#7a0000"
		}
		l := math.Log10(math.Max(e, 1e-12))
		var h float64
		if l <= lt {
			h = 120 - 60*math.Max(0, (l+8)/(lt+8))
		} else {
			h = 60 - 60*math.Min(1, (l-lt)/(-lt))
		}
		return fmt.Sprintf("hsl(%.0f,75%%,50%%)", h)
	}
	const cw, ch, left, top = 64, 16, 50, 70
	for _, s := range order {
		es := steps[s]
		var points []string
		var layers []int
		seenP, seenL := map[string]bool{}, map[int]bool{}
		for _, e := range es {
			if !seenP[e.Point] {
				seenP[e.Point] = true
				points = append(points, e.Point)
			}
			if !seenL[e.Layer] {
				seenL[e.Layer] = true
				layers = append(layers, e.Layer)
			}
		}
		sort.Slice(points, func(i, j int) bool { return pointRank(points[i]) < pointRank(points[j]) })
		sort.Slice(layers, func(i, j int) bool { return Key{Layer: layers[i]}.less(Key{Layer: layers[j]}) })
		row := map[int]int{}
		for i, l := range layers {
			row[l] = i
		}
		col := map[string]int{}
		for i, p := range points {
			col[p] = i
		}
		wd, ht := left+cw*len(points)+10, top+ch*len(layers)+10
		fmt.Fprintf(w, "<h2>step %d</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-size=\"11\">\n", s, wd, ht)
		for i, p := range points {
			x := left + cw*i + cw/2
			fmt.Fprintf(w, "<text x=\"%d\" y=\"%d\" transform=\"rotate(-35 %d %d)\">%s</text>\n", x, top-6, x, top-6, html.EscapeString(p))
		}
		for i, l := range layers {
			name := fmt.Sprint(l)
			if l < 0 {
				name = "out"
			}
			fmt.Fprintf(w, "<text x=\"4\" y=\"%d\">%s</text>\n", top+ch*i+12, name)
		}
		for _, e := range es {
			x, y := left+cw*col[e.Point], top+ch*row[e.Layer]
			fmt.Fprintf(w, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"#fff\"><title>layer %d %s: rel err %.2e (%d values)</title></rect>\n",
				x, y, cw, ch, colour(e.RelErr), e.Layer, e.Point, e.RelErr, e.N)
			fmt.Fprintf(w, "<text x=\"%d\" y=\"%d\" font-size=\"9\" fill=\"#000\">%.0e</text>\n", x+6, y+12, e.RelErr)
		}
		fmt.Fprintln(w, "</svg>")
	}
	_, err := fmt.Fprintln(w, "</body></html>")
	return err
}
