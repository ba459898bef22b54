package cuda

import (
	"encoding/binary"
	"fmt"
	"math"

	"greta/ml"
)

// The ops and parameters that the model families beyond llama need
// (model/llama/family.go), lowered to the kernels at the end of
// kernels/ops.cu:
//
//   - RMSNorm over segments (the per-head norms of q and k): rmsnorm_seg,
//     one launch for each of q and k;
//   - RMSNormAdd (Gemma's post-norms): rmsnorm_seg with add;
//   - AddBias: add_bias, Qwen2's three biases in one launch;
//   - Scale: scale_cap;
//   - GeGLU: the gate and up products as one two-weight MatMul (with the
//     RMSNorm before it fused, as GateUp's), then gelu_mul;
//   - NEOX rope: rope_neox and rope_kv_neox, never folded into attn_dec
//     (whose rope is the normal mode);
//   - attention with a window or a softcap: attn_window, after rope_kv (or
//     kv_store) has stored k and v.
//
// None of these changes what the llama family launches.

// familyKernels are the kernels of kernels/ops.cu that only these ops
// launch.
var familyKernels = []string{"rmsnorm_seg", "add_bias", "scale_cap", "gelu_mul", "rope_neox", "rope_kv_neox", "attn_window"}

const (
	opNormSeg opKind = 64 + iota // rmsnorm_seg: x → y[0] by w[0], fam.seg, fam.add
	opBias                       // add_bias: y[:nw] += w[:nw]
	opScale                      // scale_cap: x *= eps, softcap fam.cap
	opGeluMul                    // gelu_mul: y[0] = gelu(y[0]) ⊙ x
	opAttnWin                    // attn_window (attn: window, softcap)
)

// famArgs holds the family ops' own values (part of an op's signature).
type famArgs struct {
	seg int
	add bool
	cap float32
}

func (f famArgs) appendSig(s []byte) []byte {
	v := uint64(f.seg) << 32
	if f.add {
		v |= 1 << 31
	}
	return binary.LittleEndian.AppendUint64(s, v|uint64(math.Float32bits(f.cap)>>1))
}

// famState is the backend's scratch for the family ops: GeGLU's up
// product.
type famState struct {
	up *Tensor
}

// normSeg queues RMSNorm of every seg-long segment of x's rows (seg <
// cols: per head), or RMSNormAdd (add, seg = cols).
func (b *Backend) normSeg(d, xs *Tensor, w *Weight, eps float32, add bool) {
	seg := w.cols * w.rows
	if seg < 1 || xs.cols%seg != 0 || d.cols != xs.cols || d.capRows < xs.rows || (add && d.rows != xs.rows) {
		shapeErr("RMSNorm shapes: w %v, x [%d,%d], dst [%d,%d]", w.shape, xs.cols, xs.rows, d.cols, d.rows)
	}
	b.push(op{kind: opNormSeg, rows: xs.rows, x: xs, y: [3]*Tensor{d}, w: [3]*Weight{w}, nw: 1, eps: eps, fam: famArgs{seg: seg, add: add}})
}

func (b *Backend) RMSNormAdd(resid, x ml.Tensor, w ml.Weight, eps float32) {
	b.normSeg(resid.(*Tensor), x.(*Tensor), w.(*Weight), eps, true)
}

// AddBias queues x += b; up to three in a row on tensors of the same rows
// (q, k and v) share one launch.
func (b *Backend) AddBias(x ml.Tensor, bias ml.Weight) {
	xs, w := x.(*Tensor), bias.(*Weight)
	if w.rows != 1 || w.cols != xs.cols {
		shapeErr("AddBias shapes: b %v, x [%d,%d]", w.shape, xs.cols, xs.rows)
	}
	if l := b.last(); b.Fuse && l != nil && l.kind == opBias && l.nw < 3 && l.rows == xs.rows {
		l.y[l.nw], l.w[l.nw] = xs, w
		l.nw++
		return
	}
	b.push(op{kind: opBias, rows: xs.rows, y: [3]*Tensor{xs}, w: [3]*Weight{w}, nw: 1})
}

func (b *Backend) Scale(x ml.Tensor, s, softcap float32) {
	xs := x.(*Tensor)
	b.push(op{kind: opScale, rows: xs.rows, x: xs, eps: s, fam: famArgs{cap: softcap}})
}

// GeGLU queues the gate and up products as one MatMul of two weights (the
// up product into the backend's scratch tensor), then gelu_mul.
func (b *Backend) GeGLU(dst, x ml.Tensor, gate, up ml.Weight) {
	d, xs, g, u := dst.(*Tensor), x.(*Tensor), gate.(*Weight), up.(*Weight)
	b.checkMatMul(d, xs, g)
	if u.cols != g.cols || u.rows != g.rows {
		shapeErr("GeGLU: gate %s [%d,%d] and up %s [%d,%d] differ", g.name, g.cols, g.rows, u.name, u.cols, u.rows)
	}
	if t := b.fam.up; t == nil || t.cols != d.cols || t.capRows < d.capRows {
		b.fam.up = b.NewTensor(d.cols, d.capRows).(*Tensor)
	}
	ut := b.fam.up
	ut.SetRows(d.rows)
	if g.kfmt == u.kfmt {
		o := op{kind: opMatMul, rows: xs.rows, x: xs, y: [3]*Tensor{d, ut}, w: [3]*Weight{g, u}, nw: 2}
		b.fuseNorm(&o)
		b.push(o)
	} else {
		b.MatMul(d, xs, g)
		b.MatMul(ut, xs, u)
	}
	b.push(op{kind: opGeluMul, rows: d.rows, x: ut, y: [3]*Tensor{d}})
}

// ropeName is the rope kernel for r's mode.
func ropeName(base string, r *ropeDev) string {
	if r.neox {
		return base + "_neox"
	}
	return base
}

// attnWindow queues attention through a window or with a softcap: the KV
// store by the rope just before (rope_kv) or by kv_store, then
// attn_window. Its shapes were checked by Attention.
func (b *Backend) attnWindow(d, qs, ks, vs *Tensor, c *KVCache, layer int, a *ml.Attn) {
	if a.HeadDim > 256 {
		shapeErr("Attention: a window or softcap with head size %d (at most 256)", a.HeadDim)
	}
	stored := false
	if l := b.last(); b.Fuse && l != nil && l.kind == opRope && l.nrope == 2 && l.rx[0] == qs && l.rx[1] == ks && l.rows == qs.rows &&
		l.cache == nil && l.rope.headDim == a.HeadDim {
		l.v, l.cache, l.layer = vs, c, layer
		stored = true
	}
	b.push(op{kind: opAttnWin, rows: qs.rows, y: [3]*Tensor{d}, q: qs, k: ks, v: vs, cache: c, layer: layer, attn: *a, stored: stored,
		fam: famArgs{seg: a.Window, cap: float32(a.Softcap)}})
}

// lowerFamily launches the family ops.
func (b *Backend) lowerFamily(o *op) {
	switch o.kind {
	case opNormSeg:
		w, x, d := o.w[0], o.x, o.y[0]
		seg := o.fam.seg
		threads := min(1024, max(32, ceilDiv(seg, 32)*32))
		add := 0
		what := "rmsnorm " + w.name
		if o.fam.add {
			add, what = 1, "rmsnorm and residual add "+w.name
		}
		b.launch("rmsnorm_seg", [3]int{o.rows * (x.cols / seg), 1, 1}, threads, 0,
			args{}.p(x.ptr).p(w.ptr).p(d.ptr).i(o.rows).i(x.cols).i(seg).f(float64(o.eps)).i(add), what)

	case opBias:
		var a args
		total := 0
		for i := 0; i < 3; i++ {
			if i < o.nw {
				a = a.p(o.y[i].ptr)
			} else {
				a = a.p(0)
			}
		}
		for i := 0; i < 3; i++ {
			if i < o.nw {
				a = a.p(o.w[i].ptr)
			} else {
				a = a.p(0)
			}
		}
		for i := 0; i < 3; i++ {
			if i < o.nw {
				a = a.i(o.y[i].cols)
				total += o.y[i].cols
			} else {
				a = a.i(0)
			}
		}
		b.launch("add_bias", [3]int{ceilDiv(total, eltThreads), min(o.rows, maxGridY), 1}, eltThreads, 0,
			a.i(o.nw).i(o.rows), "bias "+o.w[0].name)

	case opScale:
		n := o.rows * o.x.cols
		b.launch("scale_cap", [3]int{ceilDiv(n, eltThreads), 1, 1}, eltThreads, 0,
			args{}.p(o.x.ptr).i(n).f(float64(o.eps)).f(float64(o.fam.cap)), "scale")

	case opGeluMul:
		d := o.y[0]
		n := o.rows * d.cols
		b.launch("gelu_mul", [3]int{ceilDiv(n, eltThreads), 1, 1}, eltThreads, 0,
			args{}.p(d.ptr).p(o.x.ptr).p(d.ptr).i(n), "geglu")

	case opAttnWin:
		a, c := o.attn, o.cache
		kc, vc := c.layer(o.layer)
		what := fmt.Sprintf("layer %d (window %d, softcap %g)", o.layer, a.Window, a.Softcap)
		b.layerHint = fmt.Sprint(o.layer)
		if !o.stored {
			b.launch("kv_store", [3]int{ceilDiv(c.kvDim, 256), min(o.rows, maxGridY), 1}, 256, 0,
				args{}.p(o.k.ptr).p(o.v.ptr).p(kc).p(vc).i(o.rows).i(c.kvDim).i(b.batSeqs).p(b.batPtr()).i(c.kv32()), what)
		}
		b.launch("attn_window", [3]int{o.rows, a.NHeads, 1}, 128, 0,
			args{}.p(o.q.ptr).p(kc).p(vc).p(o.y[0].ptr).p(b.batPtr()).i(o.rows).i(b.batSeqs).i(a.NHeads).i(a.NKVHeads).i(a.HeadDim).
				f(a.Scale).f(a.Softcap).i(a.Window).i(c.kv32()), what)

	default:
		panic(fmt.Sprintf("cuda: op kind %d has no lowering", o.kind))
	}
}
