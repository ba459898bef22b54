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

// normTask is RMSNorm over rows, each row in segments of len(w) values
// (one segment unless the norm is per head). With add, the normalized row
// goes to tmp and is then added to d (RMSNormAdd).
type normTask struct {
	d, x *Tensor
	w    []float32
	eps  float32
	tmp  []float32 // RMSNormAdd: per row, [cols]
}

func (t *normTask) Do(_, lo, hi int) {
	n := len(t.w)
	for r := lo; r < hi; r++ {
		in, out := t.x.row(r), t.d.row(r)
		if t.tmp != nil {
			out = t.tmp[r*len(in) : (r+1)*len(in)]
		}
		for s := 0; s < len(in); s += n {
			seg := in[s : s+n]
			ss := vec.sumSq(seg) // as ggml: the sum of squares in double
			scale := float32(1 / math.Sqrt(ss/float64(n)+float64(t.eps)))
			vec.scaleMul(out[s:s+n], seg, scale, t.w)
		}
		if t.tmp != nil {
			vec.add(t.d.row(r), out)
		}
	}
}

func (b *Backend) RMSNorm(dst, x ml.Tensor, w ml.Weight, eps float32) {
	d, xs, ww := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	if !(d.rows == xs.rows && d.cols == xs.cols && len(ww.vec) > 0 && xs.cols%len(ww.vec) == 0) {
		panic("cpu: " + fmt.Sprintf("RMSNorm shapes: w [%d], x [%d,%d], dst [%d,%d]", len(ww.vec), xs.cols, xs.rows, d.cols, d.rows))
	}
	b.norm = normTask{d: d, x: xs, w: ww.vec, eps: eps}
	b.pool.Run(xs.rows, &b.norm)
}

func (b *Backend) RMSNormAdd(resid, x ml.Tensor, w ml.Weight, eps float32) {
	d, xs, ww := resid.(*Tensor), x.(*Tensor), w.(*Weight)
	if !(d.rows == xs.rows && d.cols == xs.cols && len(ww.vec) > 0 && xs.cols%len(ww.vec) == 0) {
		panic("cpu: " + fmt.Sprintf("RMSNormAdd shapes: w [%d], x [%d,%d], resid [%d,%d]", len(ww.vec), xs.cols, xs.rows, d.cols, d.rows))
	}
	n := xs.rows * xs.cols
	if cap(b.scratch) < n {
		b.scratch = make([]float32, xs.capRows*xs.cols)
	}
	b.norm = normTask{d: d, x: xs, w: ww.vec, eps: eps, tmp: b.scratch[:n]}
	b.pool.Run(xs.rows, &b.norm)
}

func (b *Backend) AddBias(x ml.Tensor, bias ml.Weight) {
	xs, w := x.(*Tensor), bias.(*Weight)
	if len(w.shape) != 1 || len(w.vec) != xs.cols {
		panic("cpu: " + fmt.Sprintf("AddBias shapes: b %v, x [%d,%d]", w.shape, xs.cols, xs.rows))
	}
	for r := range xs.rows {
		vec.add(xs.row(r), w.vec)
	}
}

func (b *Backend) Scale(x ml.Tensor, s, softcap float32) {
	d := x.(*Tensor).data()
	for i, v := range d {
		v *= s
		if softcap > 0 {
			v = softcap * float32(math.Tanh(float64(v*(1/softcap))))
		}
		d[i] = v
	}
}

// ropeTask rotates the pairs of every head: adjacent values (ggml's
// normal mode) or values i and i+len(Freqs) (NEOX).
type ropeTask struct {
	x   *Tensor
	pos []int32
	r   *ml.Rope
}

func (t *ropeTask) Do(_, lo, hi int) {
	hd := t.r.HeadDim
	d0, d1 := 0, 1 // offsets of pair i's two values from 2i (normal) or i (NEOX)
	step := 2
	if t.r.Neox {
		d1, step = len(t.r.Freqs), 1
	}
	for r := lo; r < hi; r++ {
		p := float64(t.pos[r]) * t.r.PosScale
		row := t.x.row(r)
		for i, f := range t.r.Freqs {
			s, c := math.Sincos(p * f)
			sin, cos := float32(s), float32(c)
			for h := step * i; h+d1 < len(row); h += hd {
				a, b := row[h+d0], row[h+d1]
				row[h+d0] = a*cos - b*sin
				row[h+d1] = a*sin + b*cos
			}
		}
	}
}

func (b *Backend) Rope(x ml.Tensor, r *ml.Rope) {
	xs := x.(*Tensor)
	if b.batch == nil || b.batch.Rows() != xs.rows {
		panic("cpu: Rope without a batch of its rows")
	}
	if !(xs.cols%r.HeadDim == 0 && 2*len(r.Freqs) <= r.HeadDim) {
		panic("cpu: " + fmt.Sprintf("Rope: %d columns, head dim %d, %d pairs", xs.cols, r.HeadDim, len(r.Freqs)))
	}
	b.rope = ropeTask{x: xs, pos: b.batch.Pos, r: r}
	b.pool.Run(xs.rows, &b.rope)
}

// swigluTask writes g = silu(g)·u (or gelu(g)·u) over element ranges.
type swigluTask struct {
	g, u []float32
	gelu bool
}

func (t *swigluTask) Do(_, lo, hi int) {
	if t.gelu {
		geluMul(t.g[lo:hi], t.u[lo:hi])
		return
	}
	vec.swiglu(t.g[lo:hi], t.u[lo:hi])
}

// geluMul sets g[i] = gelu(g[i])·u[i], GELU's tanh approximation computed
// in float64.
func geluMul(g, u []float32) {
	u = u[:len(g)]
	const c = 0.7978845608028654 // sqrt(2/π)
	for i, v := range g {
		x := float64(v)
		g[i] = float32(0.5*x*(1+math.Tanh(c*(x+0.044715*x*x*x)))) * u[i]
	}
}
