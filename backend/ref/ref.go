// Package ref is the float64 oracle backend (--device ref): plain, obviously
// correct, float64 throughout, dequantizing weights row by row as it goes,
// and slow. Every other backend is tested against it.
package ref

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"greta/gguf"
	"greta/ml"
	"greta/quant"
)

// Backend is the float64 oracle.
type Backend struct {
	batch *ml.Batch // the rows of the current ops (Begin)
}

// New returns the oracle backend.
func New() *Backend { return &Backend{} }

func (*Backend) Name() string   { return "ref" }
func (*Backend) Device() string { return "cpu (float64 oracle)" }
func (*Backend) DType() string  { return "f64" }
func (*Backend) Close() error   { return nil }

// Tensor is rows × cols float64 values, row-major.
type Tensor struct {
	cols, rows, capRows int
	d                   []float64
}

func (t *Tensor) Cols() int { return t.cols }
func (t *Tensor) Rows() int { return t.rows }
func (t *Tensor) SetRows(n int) {
	if n < 1 || n > t.capRows {
		panic(fmt.Sprintf("ref: SetRows(%d) outside 1..%d", n, t.capRows))
	}
	t.rows = n
}
func (t *Tensor) row(i int) []float64 { return t.d[i*t.cols : (i+1)*t.cols] }

// Weight keeps the file's raw blocks.
type Weight struct {
	typ   gguf.Type
	shape []int64
	data  []byte
}

func (w *Weight) Type() gguf.Type { return w.typ }
func (w *Weight) Shape() []int64  { return w.shape }

// rowF64 dequantizes row r of w.
func (w *Weight) rowF64(r int, buf []float32, out []float64) {
	cols := int(w.shape[0])
	rb := w.typ.RowBytes(cols)
	if err := quant.Dequantize(w.typ, buf[:cols], w.data[r*rb:(r+1)*rb]); err != nil {
		panic(err)
	}
	for i, x := range buf[:cols] {
		out[i] = float64(x)
	}
}

func (*Backend) LoadWeight(w ml.WeightData) (ml.Weight, error) {
	if !quant.Supported(w.Type) {
		return nil, fmt.Errorf("type %s is not supported", w.Type)
	}
	return &Weight{typ: w.Type, shape: w.Shape, data: w.Data}, nil
}

func (*Backend) NewTensor(cols, rows int) ml.Tensor {
	return &Tensor{cols: cols, rows: rows, capRows: rows, d: make([]float64, cols*rows)}
}

// KVCache holds keys and values per layer in pages of float64:
// k, v [layer][page][slot][kvDim].
type KVCache struct {
	spec ml.KVSpec
	k, v [][]float64
}

func (c *KVCache) Spec() ml.KVSpec { return c.spec }

// at returns the offset of position slot of page in a layer's keys or values.
func (c *KVCache) at(page, slot int) int { return (page*ml.PageSize + slot) * c.spec.KVDim }

func (*Backend) NewKVCache(spec ml.KVSpec) (ml.KVCache, error) {
	if spec.Layers < 1 || spec.KVDim < 1 || spec.Pages < 1 {
		return nil, fmt.Errorf("KV cache: %d layers × %d pages × %d values", spec.Layers, spec.Pages, spec.KVDim)
	}
	if spec.DType != "" && spec.DType != "f64" && spec.DType != "f32" && spec.DType != "f16" {
		return nil, fmt.Errorf("KV cache type %q: expected f16 or f32", spec.DType)
	}
	spec.DType = "f64" // the oracle holds float64 whatever is asked
	c := &KVCache{spec: spec, k: make([][]float64, spec.Layers), v: make([][]float64, spec.Layers)}
	for l := range c.k {
		c.k[l] = make([]float64, spec.Tokens()*spec.KVDim)
		c.v[l] = make([]float64, spec.Tokens()*spec.KVDim)
	}
	return c, nil
}

func (b *Backend) Begin(batch *ml.Batch) { b.batch = batch }

func (*Backend) Embed(dst ml.Tensor, table ml.Weight, tokens []int32) {
	d, w := dst.(*Tensor), table.(*Weight)
	buf := make([]float32, w.shape[0])
	for i, tok := range tokens {
		w.rowF64(int(tok), buf, d.row(i))
	}
}

func (*Backend) RMSNorm(dst, x ml.Tensor, w ml.Weight, eps float32) {
	d, xs := dst.(*Tensor), x.(*Tensor)
	ww := w.(*Weight)
	n := int(ww.shape[0])
	if xs.cols%n != 0 || d.cols != xs.cols {
		panic(fmt.Sprintf("ref: RMSNorm shapes: w [%d], x [%d,%d], dst [%d,%d]", n, xs.cols, xs.rows, d.cols, d.rows))
	}
	g := make([]float64, n)
	ww.rowF64(0, make([]float32, n), g)
	for r := 0; r < xs.rows; r++ {
		for s := 0; s < xs.cols; s += n {
			in, out := xs.row(r)[s:s+n], d.row(r)[s:s+n]
			var ss float64
			for _, v := range in {
				ss += v * v
			}
			scale := 1 / math.Sqrt(ss/float64(n)+float64(eps))
			for i, v := range in {
				out[i] = v * scale * g[i]
			}
		}
	}
}

func (b *Backend) RMSNormAdd(resid, x ml.Tensor, w ml.Weight, eps float32) {
	rs, xs := resid.(*Tensor), x.(*Tensor)
	t := &Tensor{cols: xs.cols, rows: xs.rows, capRows: xs.rows, d: make([]float64, xs.cols*xs.rows)}
	b.RMSNorm(t, x, w, eps)
	for i, v := range t.d {
		rs.d[i] += v
	}
}

func (*Backend) AddBias(x ml.Tensor, bias ml.Weight) {
	xs, w := x.(*Tensor), bias.(*Weight)
	if int(w.shape[0]) != xs.cols || len(w.shape) != 1 {
		panic(fmt.Sprintf("ref: AddBias shapes: b %v, x [%d,%d]", w.shape, xs.cols, xs.rows))
	}
	g := make([]float64, xs.cols)
	w.rowF64(0, make([]float32, xs.cols), g)
	for r := 0; r < xs.rows; r++ {
		for i, v := range g {
			xs.row(r)[i] += v
		}
	}
}

func (*Backend) Scale(x ml.Tensor, s, softcap float32) {
	xs := x.(*Tensor)
	for i, v := range xs.d[:xs.rows*xs.cols] {
		v *= float64(s)
		if softcap > 0 {
			v = float64(softcap) * math.Tanh(v/float64(softcap))
		}
		xs.d[i] = v
	}
}

// MatMul dequantizes each weight row once and dots it with every row of x,
// in parallel over weight rows.
func (*Backend) MatMul(dst, x ml.Tensor, w ml.Weight) {
	d, xs, ww := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	cols, rows := int(ww.shape[0]), int(ww.shape[1])
	if xs.cols != cols || d.cols != rows || d.rows != xs.rows {
		panic(fmt.Sprintf("ref: MatMul shapes: W [%d,%d], x [%d,%d], dst [%d,%d]", cols, rows, xs.cols, xs.rows, d.cols, d.rows))
	}
	parallel(rows, func(lo, hi int) {
		buf := make([]float32, cols)
		wr := make([]float64, cols)
		for r := lo; r < hi; r++ {
			ww.rowF64(r, buf, wr)
			for i := 0; i < xs.rows; i++ {
				var s float64
				for j, v := range xs.row(i) {
					s += wr[j] * v
				}
				d.d[i*rows+r] = s
			}
		}
	})
}

func (b *Backend) MatMulAdd(dst, resid, x ml.Tensor, w ml.Weight) {
	b.MatMul(dst, x, w)
	d, rs := dst.(*Tensor), resid.(*Tensor)
	for i := range d.d[:d.rows*d.cols] {
		rs.d[i] += d.d[i]
	}
}

func (b *Backend) GateUp(dst, x ml.Tensor, gate, up ml.Weight) {
	b.glu(dst, x, gate, up, func(g float64) float64 { return g / (1 + math.Exp(-g)) })
}

func (b *Backend) GeGLU(dst, x ml.Tensor, gate, up ml.Weight) { b.glu(dst, x, gate, up, GELU) }

// GELU is the tanh approximation of GELU, as ggml_gelu and PyTorch's
// gelu(approximate="tanh") compute it.
func GELU(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

func (b *Backend) glu(dst, x ml.Tensor, gate, up ml.Weight, act func(float64) float64) {
	d := dst.(*Tensor)
	u := &Tensor{cols: d.cols, rows: d.rows, capRows: d.rows, d: make([]float64, d.cols*d.rows)}
	b.MatMul(d, x, gate)
	b.MatMul(u, x, up)
	for i, g := range d.d[:d.rows*d.cols] {
		d.d[i] = act(g) * u.d[i]
	}
}

func (b *Backend) Rope(x ml.Tensor, rp *ml.Rope) {
	xs := x.(*Tensor)
	half := len(rp.Freqs)
	for r := 0; r < xs.rows; r++ {
		p := float64(b.batch.Pos[r]) * rp.PosScale
		row := xs.row(r)
		for h := 0; h+rp.HeadDim <= xs.cols; h += rp.HeadDim {
			for i, f := range rp.Freqs {
				sin, cos := math.Sincos(p * f)
				i0, i1 := h+2*i, h+2*i+1
				if rp.Neox {
					i0, i1 = h+i, h+i+half
				}
				a, b := row[i0], row[i1]
				row[i0] = a*cos - b*sin
				row[i1] = a*sin + b*cos
			}
		}
	}
}

func (b *Backend) Attention(dst, q, k, v ml.Tensor, cache ml.KVCache, layer int, a *ml.Attn) {
	d, qs, ks, vs, c := dst.(*Tensor), q.(*Tensor), k.(*Tensor), v.(*Tensor), cache.(*KVCache)
	bt := b.batch
	hd := a.HeadDim
	for r := 0; r < ks.rows; r++ {
		page, slot := bt.Page(r)
		copy(c.k[layer][c.at(page, slot):], ks.row(r))
		copy(c.v[layer][c.at(page, slot):], vs.row(r))
	}
	group := a.NHeads / a.NKVHeads
	// at returns the cache offset of position t of row r's sequence.
	at := func(r, t int) int {
		return c.at(int(bt.Pages[bt.Seq[r]][t/ml.PageSize]), t%ml.PageSize)
	}
	var scores []float64
	for r := 0; r < qs.rows; r++ {
		n := int(bt.Pos[r]) + 1 // causal: positions 0..Pos[r] of its sequence
		lo := 0
		if a.Window > 0 {
			lo = max(0, n-a.Window) // the sliding window: the last Window positions
		}
		if len(scores) < n {
			scores = make([]float64, n)
		}
		for h := 0; h < a.NHeads; h++ {
			qh := qs.row(r)[h*hd : (h+1)*hd]
			kvOff := (h / group) * hd
			maxS := math.Inf(-1)
			for t := lo; t < n; t++ {
				kt := c.k[layer][at(r, t)+kvOff:][:hd]
				var s float64
				for i := range qh {
					s += qh[i] * kt[i]
				}
				s *= a.Scale
				if a.Softcap > 0 {
					s = a.Softcap * math.Tanh(s/a.Softcap)
				}
				scores[t] = s
				maxS = math.Max(maxS, scores[t])
			}
			var sum float64
			for t := lo; t < n; t++ {
				scores[t] = math.Exp(scores[t] - maxS)
				sum += scores[t]
			}
			out := d.row(r)[h*hd : (h+1)*hd]
			clear(out)
			for t := lo; t < n; t++ {
				vt := c.v[layer][at(r, t)+kvOff:][:hd]
				p := scores[t] / sum
				for i := range out {
					out[i] += p * vt[i]
				}
			}
		}
	}
}

func (*Backend) Gather(dst, src ml.Tensor, rows []int32) {
	d, s := dst.(*Tensor), src.(*Tensor)
	for i, r := range rows {
		copy(d.row(i), s.row(int(r)))
	}
}

func (*Backend) Argmax(x ml.Tensor, dst []int32) {
	xs := x.(*Tensor)
	for r := 0; r < xs.rows; r++ {
		best := 0
		row := xs.row(r)
		for i, v := range row {
			if v > row[best] {
				best = i
			}
		}
		dst[r] = int32(best)
	}
}

// TopK ranks the rows' values rounded to float32, as the other backends
// hold them.
func (*Backend) TopK(x ml.Tensor, t *ml.TopK) {
	xs := x.(*Tensor)
	row := make([]float32, xs.cols)
	ml.TopKRows(t, xs.Rows(), xs.cols, func(r int) []float32 {
		for i, v := range xs.row(r) {
			row[i] = float32(v)
		}
		return row
	})
}

func (*Backend) Read(x ml.Tensor, dst []float32) {
	xs := x.(*Tensor)
	for i, v := range xs.d[:xs.rows*xs.cols] {
		dst[i] = float32(v)
	}
}

// parallel splits [0, n) over the CPUs. Each part is independent, so the
// result does not depend on the split.
func parallel(n int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/64))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}
