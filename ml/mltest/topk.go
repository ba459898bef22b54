// Package mltest holds conformance checks that every backend runs from its
// own tests, so that one body states what an op must do on all of them.
package mltest

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"greta/gguf"
	"greta/ml"
)

// Filler returns a tensor of b and a func that fills it with x (rows of
// cols values) through the interface alone: an F32 table embedded row by
// row, the same op on the same buffers at every call.
func Filler(t testing.TB, b ml.Backend, x []float32, cols, rows int) (ml.Tensor, func()) {
	t.Helper()
	data := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	shape := []int64{int64(cols), int64(rows)}
	if rows == 1 { // a one-row table would be a vector: make it two
		shape[1], data = 2, append(data, data...)
	}
	w, err := b.LoadWeight(ml.WeightData{Name: "topk.input", Type: gguf.F32, Shape: shape, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	dst := b.NewTensor(cols, rows)
	tok := make([]int32, rows)
	for i := range tok {
		tok[i] = int32(i)
	}
	return dst, func() { b.Embed(dst, w, tok) }
}

// TopK checks Backend.TopK against ml.TopKHost a row: rows with heavy ties
// (values on a grid of 1/4, four values, all equal, signed zeros) and
// without, k from 1 to the whole row, rows asked for in any order and more
// than once, and gathered columns (some of them among the selected ones).
// Each request runs three times over the tensor refilled by the same op,
// with as many rows but new rows, k and gather lists, so that a backend
// that replays a recorded step (CUDA graphs) is checked with values that
// changed under the same shape.
// colsList gives the row lengths; a slow backend passes short ones.
func TopK(t *testing.T, b ml.Backend, colsList []int) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, cols := range colsList {
		for _, kind := range []string{"normal", "grid", "four", "equal", "zeros"} {
			const rows = 5
			x := make([]float32, rows*cols)
			for i := range x {
				switch kind {
				case "normal":
					x[i] = float32(r.NormFloat64() * 3)
				case "grid":
					x[i] = float32(math.Round(r.NormFloat64()*4) / 4)
				case "four":
					x[i] = float32(r.IntN(4)) - 1.5
				case "equal":
					x[i] = -1.5
				case "zeros":
					x[i] = float32(math.Copysign(0, float64(r.IntN(2)*2-1)))
					if r.IntN(5) == 0 {
						x[i] = float32(r.NormFloat64())
					}
				}
			}
			var req ml.TopK
			xt, refill := Filler(t, b, x, cols, rows)
			n := 1 + r.IntN(8)
			for rep := range 3 {
				refill()
				req.Rows, req.K, req.Gather = req.Rows[:0], req.K[:0], req.Gather[:0]
				for i := range n {
					k := []int{1, 2, 40, 1000, cols, 1 + r.IntN(cols)}[(i+rep)%6]
					var g []int32
					for range r.IntN(4) * r.IntN(30) {
						g = append(g, int32(r.IntN(cols)))
					}
					req.Rows = append(req.Rows, int32(r.IntN(rows)))
					req.K = append(req.K, int32(min(k, cols)))
					req.Gather = append(req.Gather, g)
				}
				b.TopK(xt, &req)
				if len(req.IDs) != req.Len() || len(req.Vals) != req.Len() {
					t.Fatalf("%s: %d ids and %d values for %d entries", b.Name(), len(req.IDs), len(req.Vals), req.Len())
				}
				e := 0
				for i, row := range req.Rows {
					k := int(req.K[i])
					xr := x[int(row)*cols : int(row+1)*cols]
					wi, wv := make([]int32, k), make([]float32, k)
					ml.TopKHost(xr, k, wi, wv)
					for j := range k {
						gi, gv := req.IDs[e+j], req.Vals[e+j]
						if gi != wi[j] || gv != wv[j] {
							t.Fatalf("%s %s cols %d, request %d row %d (of %d) k %d: entry %d is (%d, %g), want (%d, %g)",
								b.Name(), kind, cols, i, row, n, k, j, gi, gv, wi[j], wv[j])
						}
					}
					e += k
					for j, c := range req.Gathered(i) {
						if req.IDs[e] != c || math.Float32bits(req.Vals[e]) != math.Float32bits(xr[c]) {
							t.Fatalf("%s %s cols %d, request %d row %d: gathered %d is (%d, %g), want (%d, %g)",
								b.Name(), kind, cols, i, row, j, req.IDs[e], req.Vals[e], c, xr[c])
						}
						e++
					}
				}
			}
		}
	}
}
