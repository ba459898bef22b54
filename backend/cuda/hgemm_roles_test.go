package cuda

import (
	"slices"
	"testing"
)

// TestPromptRuns: the runs of prompt rows of a batch (no GPU needed).
func TestPromptRuns(t *testing.T) {
	for _, c := range []struct {
		gen  string // g: generated row, p: prompt row
		want [][2]int
	}{
		{"gggg", nil},
		{"pppp", [][2]int{{0, 4}}},
		{"gppgpg", [][2]int{{1, 3}, {4, 5}}},
		{"pgp", [][2]int{{0, 1}, {2, 3}}},
	} {
		got := promptRuns(func(i int) bool { return c.gen[i] == 'g' }, len(c.gen))
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: runs %v, want %v", c.gen, got, c.want)
		}
	}
}

// TestOpParts: an op over a batch of mixed roles is lowered as its runs,
// each a view of the op's rows (x, outputs, residual, the folded norm's
// input), in order and covering every row once.
func TestOpParts(t *testing.T) {
	ten := func(p devPtr, cols, rows int) *Tensor { return &Tensor{ptr: p, cols: cols, rows: rows, capRows: rows} }
	o := &op{kind: opMatMul, rows: 7, x: ten(1000, 8, 7), nw: 2, resid: ten(5000, 4, 7), normX: ten(9000, 8, 7),
		hruns: [][2]int{{1, 3}, {5, 6}}}
	o.y[0], o.y[1] = ten(2000, 4, 7), ten(3000, 2, 7)
	type part struct {
		r0, n  int
		prompt bool
	}
	var got []part
	next := 0
	o.parts(func(s *op, prompt bool) {
		r0 := int(s.x.ptr-1000) / (4 * 8)
		if r0 != next {
			t.Fatalf("a part starts at row %d, want %d", r0, next)
		}
		next = r0 + s.rows
		if s.hruns != nil || s.x.rows != s.rows || s.y[0].ptr != 2000+devPtr(4*4*r0) || s.y[1].ptr != 3000+devPtr(4*2*r0) ||
			s.resid.ptr != 5000+devPtr(4*4*r0) || s.normX.ptr != 9000+devPtr(4*8*r0) || s.y[2] != nil {
			t.Fatalf("part at row %d: wrong views %+v", r0, s)
		}
		got = append(got, part{r0, s.rows, prompt})
	})
	want := []part{{0, 1, false}, {1, 2, true}, {3, 2, false}, {5, 1, true}, {6, 1, false}}
	if !slices.Equal(got, want) {
		t.Fatalf("parts %v, want %v", got, want)
	}
}

// TestOpRuns: which products take the prompt rows' GEMM: the layers'
// products over the batch's rows with every weight in an f16-able format;
// not the output projection after the head's Gather, not F32 or BF16
// weights, not with GRETA_CUDA_HGEMM=0 (no GPU needed).
func TestOpRuns(t *testing.T) {
	runs := [][2]int{{0, 3}}
	b := &Backend{HGemm: true, hruns: runs, batRows: 3}
	q4, f32 := &Weight{kfmt: "q4_k", cols: 4096}, &Weight{kfmt: "f32", cols: 4096}
	mm := func(rows int, ws ...*Weight) *op {
		o := &op{kind: opMatMul, rows: rows, nw: len(ws)}
		copy(o.w[:], ws)
		return o
	}
	if got := b.opRuns(mm(3, q4, q4)); !slices.Equal(got, runs) {
		t.Errorf("a layer's product: %v", got)
	}
	if b.opRuns(mm(3, q4, f32)) != nil || b.opRuns(mm(2, q4)) != nil {
		t.Error("an F32 weight or other rows than the batch's took the prompt GEMM")
	}
	b.pastHead = true
	if b.opRuns(mm(3, q4)) != nil {
		t.Error("the output projection took the prompt GEMM")
	}
	b.pastHead, b.HGemm = false, false
	if b.opRuns(mm(3, q4)) != nil {
		t.Error("GRETA_CUDA_HGEMM=0 still took the prompt GEMM")
	}
}
