package trace

import (
	"fmt"
	"io"
	"math"
	"sort"
)

// Key names one record: (step, layer, point).
type Key struct {
	Step  int
	Layer int
	Point string
}

// Entry is the comparison of one record present in both traces.
type Entry struct {
	Key
	RelErr float64 // ‖a−b‖/‖b‖ over the values both hold (and the sum, for sparse records)
	N      int     // values compared
	// Shapes is set when the records' shapes disagree (RelErr is then +Inf):
	// "[64 3] vs [32 3]".
	Shapes string
}

// Report is a whole comparison.
type Report struct {
	Tol     float64
	Entries []Entry // in computation order: step, layer, point
	First   *Entry  // the first entry past Tol, or nil
	OnlyA   int     // records in A alone
	OnlyB   int
}

func pointRank(p string) int {
	for i, q := range Points {
		if q == p {
			return i
		}
	}
	for i, q := range GlobalPoints {
		if q == p {
			return len(Points) + i
		}
	}
	return len(Points) + len(GlobalPoints)
}

// less orders keys as the forward pass computes them; global points
// (layer −1) come after every layer of their step.
func (k Key) less(o Key) bool {
	if k.Step != o.Step {
		return k.Step < o.Step
	}
	kl, ol := k.Layer, o.Layer
	if kl < 0 {
		kl = math.MaxInt
	}
	if ol < 0 {
		ol = math.MaxInt
	}
	if kl != ol {
		return kl < ol
	}
	return pointRank(k.Point) < pointRank(o.Point)
}

// Diff compares a with b (the reference) record by record.
func Diff(a, b *Trace, tol float64) *Report {
	index := func(t *Trace) map[Key]*Record {
		m := map[Key]*Record{}
		for _, r := range t.Records {
			m[Key{r.Step, r.Layer, r.Point}] = r
		}
		return m
	}
	ia, ib := index(a), index(b)
	rep := &Report{Tol: tol}
	for k, ra := range ia {
		rb, ok := ib[k]
		if !ok {
			rep.OnlyA++
			continue
		}
		if shapesDiffer(ra, rb) {
			rep.Entries = append(rep.Entries, Entry{Key: k, RelErr: math.Inf(1), Shapes: fmt.Sprintf("%v vs %v", ra.Shape, rb.Shape)})
			continue
		}
		e, n := compare(ra, rb)
		rep.Entries = append(rep.Entries, Entry{Key: k, RelErr: e, N: n})
	}
	for k := range ib {
		if _, ok := ia[k]; !ok {
			rep.OnlyB++
		}
	}
	sort.Slice(rep.Entries, func(i, j int) bool { return rep.Entries[i].Key.less(rep.Entries[j].Key) })
	for i := range rep.Entries {
		if e := &rep.Entries[i]; !(e.RelErr <= tol) { // NaN counts as past
			rep.First = e
			break
		}
	}
	return rep
}

// shapesDiffer reports records that cannot be the same tensor: the row
// widths differ, or two dense records differ in rows. (A sparse llama.cpp
// record may hold fewer rows than GRETA's, e.g. the logits of the last
// token only; rows are then matched by position.)
func shapesDiffer(a, b *Record) bool {
	if len(a.Shape) != 2 || len(b.Shape) != 2 {
		return true
	}
	if a.Shape[0] != b.Shape[0] {
		return true
	}
	return a.Index == nil && b.Index == nil && a.Shape[1] != b.Shape[1]
}

// rowValues returns a row's values by column.
func rowValues(r *Record, row int) map[int]float64 {
	m := make(map[int]float64, len(r.Values[row]))
	for i, v := range r.Values[row] {
		c := i
		if r.Index != nil {
			c = r.Index[row][i]
		}
		m[c] = float64(v)
	}
	return m
}

// compare returns ‖a−b‖/‖b‖ over the values a and b both hold, matching
// rows by position and columns by index.
func compare(a, b *Record) (float64, int) {
	if a.Index == nil && b.Index == nil && a.Hash != "" && a.Hash == b.Hash {
		return 0, len(a.Values) * len(firstRow(a))
	}
	if a.Index == nil && b.Index == nil && (a.Stats.NaN != b.Stats.NaN || a.Stats.Inf != b.Stats.Inf) {
		return math.Inf(1), 0
	}
	rowOf := func(r *Record) map[int]int {
		m := map[int]int{}
		for i, p := range r.Pos {
			if i < len(r.Values) {
				m[p] = i
			}
		}
		return m
	}
	ra, rb := rowOf(a), rowOf(b)
	slack := max(a.Quantum, b.Quantum) / 2 // printing resolution
	var num, den float64
	n := 0
	for pos, i := range ra {
		j, ok := rb[pos]
		if !ok {
			continue
		}
		va, vb := rowValues(a, i), rowValues(b, j)
		for c, x := range va {
			y, ok := vb[c]
			if !ok {
				continue
			}
			if math.IsNaN(x) != math.IsNaN(y) || math.IsInf(x, 0) != math.IsInf(y, 0) {
				return math.Inf(1), n
			}
			if math.IsNaN(x) || math.IsInf(x, 0) {
				continue
			}
			d := max(0, math.Abs(x-y)-slack)
			num += d * d
			den += y * y
			n++
		}
	}
	if n == 0 {
		return math.NaN(), 0
	}
	err := math.Sqrt(num)
	if den > 0 {
		err /= math.Sqrt(den)
	}
	// A sparse side carries the tensor's sum: compare it with the dense
	// side's as a shift of the mean, relative to the rms. This catches an
	// offset that the edge values alone could miss.
	if sa, sb, d, ok := sums(a, b); ok {
		err = math.Max(err, math.Abs(sa-sb)/d)
	}
	return err, n
}

func firstRow(r *Record) []Float {
	if len(r.Values) == 0 {
		return nil
	}
	return r.Values[0]
}

func sums(a, b *Record) (sa, sb, scale float64, ok bool) {
	dense, sparse := a, b
	if a.Index != nil {
		dense, sparse = b, a
	}
	if dense.Index != nil || sparse.Index == nil || len(sparse.Sums) == 0 {
		return 0, 0, 0, false
	}
	if dense.Shape[1] != sparse.Shape[1] || dense.Shape[0] != sparse.Shape[0] {
		return 0, 0, 0, false // e.g. llama.cpp kept only the last row
	}
	n := float64(dense.Shape[0] * dense.Shape[1])
	scale = dense.Stats.RMS * n
	if scale == 0 {
		return 0, 0, 0, false
	}
	sd := dense.Stats.Mean * n
	if dense == a {
		return sd, sparse.Sums[0], scale, true
	}
	return sparse.Sums[0], sd, scale, true
}

// FirstLine is the one-line verdict.
func (r *Report) FirstLine() string {
	if len(r.Entries) == 0 {
		return "no records in common: nothing compared"
	}
	if r.First == nil {
		worst := 0.0
		for _, e := range r.Entries {
			worst = math.Max(worst, e.RelErr)
		}
		return fmt.Sprintf("no divergence at tol %.0e: %d records agree (worst rel err %.1e)", r.Tol, len(r.Entries), worst)
	}
	e := r.First
	where := fmt.Sprintf("layer %d", e.Layer)
	if e.Layer < 0 {
		where = "output"
	}
	if e.Shapes != "" {
		return fmt.Sprintf("first divergence: step %d, %s, point %s, shapes differ: %s", e.Step, where, e.Point, e.Shapes)
	}
	return fmt.Sprintf("first divergence: step %d, %s, point %s, rel err %.1e", e.Step, where, e.Point, e.RelErr)
}

// WriteTable writes the verdict and a layers × points table of the first
// diverging step (or of step 0).
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintln(w, r.FirstLine())
	if len(r.Entries) == 0 {
		return
	}
	step := r.Entries[0].Step
	if r.First != nil {
		step = r.First.Step
	}
	var points []string
	seenP := map[string]bool{}
	var layers []int
	seenL := map[int]bool{}
	cell := map[[2]any]float64{}
	for _, e := range r.Entries {
		if e.Step != step {
			continue
		}
		if !seenP[e.Point] {
			seenP[e.Point] = true
			points = append(points, e.Point)
		}
		if !seenL[e.Layer] {
			seenL[e.Layer] = true
			layers = append(layers, e.Layer)
		}
		cell[[2]any{e.Layer, e.Point}] = e.RelErr
	}
	sort.Slice(points, func(i, j int) bool { return pointRank(points[i]) < pointRank(points[j]) })
	sort.Slice(layers, func(i, j int) bool { return Key{Layer: layers[i]}.less(Key{Layer: layers[j]}) })
	fmt.Fprintf(w, "\nrel err at step %d (! = past tol %.0e)\n%-6s", step, r.Tol, "layer")
	for _, p := range points {
		fmt.Fprintf(w, " %9s", p)
	}
	fmt.Fprintln(w)
	for _, l := range layers {
		name := fmt.Sprint(l)
		if l < 0 {
			name = "out"
		}
		fmt.Fprintf(w, "%-6s", name)
		for _, p := range points {
			e, ok := cell[[2]any{l, p}]
			switch {
			case !ok:
				fmt.Fprintf(w, " %9s", ".")
			case !(e <= r.Tol):
				fmt.Fprintf(w, " %8.1e!", e)
			default:
				fmt.Fprintf(w, " %9.1e", e)
			}
		}
		fmt.Fprintln(w)
	}
	steps := map[int]bool{}
	for _, e := range r.Entries {
		steps[e.Step] = true
	}
	fmt.Fprintf(w, "\n%d records compared over %d steps; %d only in A, %d only in B\n", len(r.Entries), len(steps), r.OnlyA, r.OnlyB)
}
