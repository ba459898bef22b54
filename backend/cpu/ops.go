package cpu

import (
	"fmt"
	"math"

	"greta/ml"
	"greta/quant"
)

func (b *Backend) Embed(dst ml.Tensor, table ml.Weight, tokens []int32) {
	d, w := dst.(*Tensor), table.(*Weight)
	if !(d.rows == len(tokens) && d.cols == w.m.Cols) {
		panic("cpu: " + fmt.Sprintf("Embed: %d tokens into [%d,%d]", len(tokens), d.cols, d.rows))
	}
	rb := w.m.Type.RowBytes(w.m.Cols)
	for i, t := range tokens {
		if err := quant.Dequantize(w.m.Type, d.row(i), w.m.Data[int(t)*rb:(int(t)+1)*rb]); err != nil {
			panic(err)
		}
	}
}

// normTask is RMSNorm over rows.
type normTask struct {
	d, x *Tensor
	w    []float32
	eps  float32
}

func (t *normTask) Do(_, lo, hi int) {
	for r := lo; r < hi; r++ {
		in, out := t.x.row(r), t.d.row(r)
		ss := vec.sumSq(in) // as ggml: the sum of squares in double
		scale := float32(1 / math.Sqrt(ss/float64(len(in))+float64(t.eps)))
		vec.scaleMul(out, in, scale, t.w)
	}
}

func (b *Backend) RMSNorm(dst, x ml.Tensor, w ml.Weight, eps float32) {
	d, xs, ww := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	if !(d.rows == xs.rows && d.cols == xs.cols && len(ww.vec) == xs.cols) {
		panic("cpu: " + fmt.Sprintf("RMSNorm shapes"))
	}
	b.norm = normTask{d: d, x: xs, w: ww.vec, eps: eps}
	b.pool.Run(xs.rows, &b.norm)
}

// ropeTask rotates adjacent pairs (ggml's normal mode) of every head.
type ropeTask struct {
	x   *Tensor
	pos []int32
	r   *ml.Rope
}

func (t *ropeTask) Do(_, lo, hi int) {
	hd := t.r.HeadDim
	for r := lo; r < hi; r++ {
		p := float64(t.pos[r]) * t.r.PosScale
		row := t.x.row(r)
		for i, f := range t.r.Freqs {
			s, c := math.Sincos(p * f)
			sin, cos := float32(s), float32(c)
			for h := 2 * i; h+1 < len(row); h += hd {
				a, b := row[h], row[h+1]
				row[h] = a*cos - b*sin
				row[h+1] = a*sin + b*cos
			}
		}
	}
}

func (b *Backend) Rope(x ml.Tensor, r *ml.Rope) {
	xs := x.(*Tensor)
	if b.batch == nil || b.batch.Rows() != xs.rows {
		panic("cpu: Rope without a batch of its rows")
	}
	if !(xs.cols%r.HeadDim == 0) {
		panic("cpu: " + fmt.Sprintf("Rope: %d columns, head dim %d", xs.cols, r.HeadDim))
	}
	b.rope = ropeTask{x: xs, pos: b.batch.Pos, r: r}
	b.pool.Run(xs.rows, &b.rope)
}

// swigluTask writes g = silu(g)·u over element ranges.
type swigluTask struct{ g, u []float32 }

func (t *swigluTask) Do(_, lo, hi int) {
	vec.swiglu(t.g[lo:hi], t.u[lo:hi])
}
