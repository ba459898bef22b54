package cpu

import (
	"fmt"
	"math"

	"greta/ml"
)

// KVCache holds keys and values per layer: [context][kvDim] float32.
type KVCache struct {
	ctx, kvDim int
	k, v       [][]float32
}

func (c *KVCache) Context() int { return c.ctx }

// plantedBugLayer, when ≥ 0, makes attention in that layer read the wrong
// KV head. Only tests set it: it proves that trace diff finds the layer.
var plantedBugLayer = -1

// attnTask computes one (row, head) pair per item: causal softmax attention
// of the row's query head over positions 0..pos0+row of its KV head.
type attnTask struct {
	d, q   *Tensor
	c      *KVCache
	layer  int
	pos0   int
	a      *ml.Attn
	scores [][]float32 // per worker, [context]
}

func (t *attnTask) Do(w, lo, hi int) {
	a, hd := t.a, t.a.HeadDim
	group := a.NHeads / a.NKVHeads
	kc, vc := t.c.k[t.layer], t.c.v[t.layer]
	scores := t.scores[w]
	scale := float32(a.Scale)
	for item := lo; item < hi; item++ {
		r, h := item/a.NHeads, item%a.NHeads
		n := t.pos0 + r + 1
		kvh := h / group
		if t.layer == plantedBugLayer {
			kvh = (kvh + 1) % a.NKVHeads
		}
		q := t.q.row(r)[h*hd : (h+1)*hd]
		off := kvh * hd
		maxS := float32(math.Inf(-1))
		for p := 0; p < n; p++ {
			s := vec.dot(q, kc[p*t.c.kvDim+off:p*t.c.kvDim+off+hd]) * scale
			scores[p] = s
			maxS = max(maxS, s)
		}
		sum := vec.expSum(scores[:n], maxS)
		out := t.d.row(r)[h*hd : (h+1)*hd]
		clear(out)
		inv := 1 / sum
		for p := 0; p < n; p++ {
			vec.axpy(out, scores[p]*inv, vc[p*t.c.kvDim+off:p*t.c.kvDim+off+hd])
		}
	}
}

func (b *Backend) Attention(dst, q, k, v ml.Tensor, cache ml.KVCache, layer, pos0 int, a *ml.Attn) {
	d, qs, ks, vs, c := dst.(*Tensor), q.(*Tensor), k.(*Tensor), v.(*Tensor), cache.(*KVCache)
	if !(pos0+qs.rows <= c.ctx) {
		panic("cpu: " + fmt.Sprintf("Attention: positions %d..%d past the context %d", pos0, pos0+qs.rows, c.ctx))
	}
	if !(ks.cols == c.kvDim && vs.cols == c.kvDim && qs.cols == a.NHeads*a.HeadDim && d.cols == qs.cols) {
		panic("cpu: " + fmt.Sprintf("Attention shapes"))
	}
	copy(c.k[layer][pos0*c.kvDim:], ks.data())
	copy(c.v[layer][pos0*c.kvDim:], vs.data())
	t := &b.attn
	if len(t.scores) < b.pool.Threads() || len(t.scores[0]) < c.ctx {
		t.scores = make([][]float32, b.pool.Threads())
		for i := range t.scores {
			t.scores[i] = make([]float32, c.ctx)
		}
	}
	t.d, t.q, t.c, t.layer, t.pos0, t.a = d, qs, c, layer, pos0, a
	b.pool.Run(qs.rows*a.NHeads, t)
}

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpy(dst []float32, alpha float32, x []float32) {
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += alpha * x[i]
	}
}
