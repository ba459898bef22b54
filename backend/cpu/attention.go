package cpu

import (
	"fmt"
	"math"

	"greta/ml"
)

// KVCache holds keys and values per layer, for ctx positions rounded up to
// a multiple of 16:
//
//   - keys transposed in blocks of 16 positions, per KV head:
//     k[layer][((head·nblk + p/16)·headDim + d)·16 + p%16], so that the
//     scores of one query against 16 positions are 16 lanes of one vector
//     (one multiply-add per dimension, no horizontal sums);
//   - values as rows: v[layer][p·kvDim + c].
//
// The head size is only known to Attention, which computes the key layout
// from it; the cache is kvDim·ctx16 floats either way.
type KVCache struct {
	ctx, ctx16, kvDim int
	k, v              [][]float32
}

func (c *KVCache) Context() int { return c.ctx }

func (b *Backend) NewKVCache(layers, ctx, kvDim int) (ml.KVCache, error) {
	ctx16 := (ctx + 15) / 16 * 16
	c := &KVCache{ctx: ctx, ctx16: ctx16, kvDim: kvDim, k: make([][]float32, layers), v: make([][]float32, layers)}
	for l := range c.k {
		c.k[l] = make([]float32, ctx16*kvDim)
		c.v[l] = make([]float32, ctx16*kvDim)
	}
	return c, nil
}

// plantedBugLayer, when ≥ 0, makes attention in that layer read the wrong
// KV head. Only tests set it: it proves that trace diff finds the layer.
var plantedBugLayer = -1

// attnTask computes one (row, KV head) pair per item: causal softmax
// attention over positions 0..pos0+row of every query head that shares the
// KV head, together, so that each key and value is loaded once for all of
// them.
type attnTask struct {
	d, q   *Tensor
	c      *KVCache
	layer  int
	pos0   int
	a      *ml.Attn
	scores [][]float32 // per worker, [group][ctx16]
}

func (t *attnTask) Do(w, lo, hi int) {
	a, hd := t.a, t.a.HeadDim
	group := a.NHeads / a.NKVHeads
	nblk := t.c.ctx16 / 16
	kc, vc := t.c.k[t.layer], t.c.v[t.layer]
	scale := float32(a.Scale)
	for item := lo; item < hi; item++ {
		r, g := item/a.NKVHeads, item%a.NKVHeads
		n := t.pos0 + r + 1
		kvh := g
		if t.layer == plantedBugLayer {
			kvh = (kvh + 1) % a.NKVHeads
		}
		n16 := (n + 15) / 16 * 16
		q := t.q.row(r)[g*group*hd : (g+1)*group*hd]
		out := t.d.row(r)[g*group*hd : (g+1)*group*hd]
		kt := kc[kvh*nblk*hd*16 : (kvh*nblk+n16/16)*hd*16]
		vec.attnGroup(out, q, kt, vc[kvh*hd:], t.c.kvDim, n, hd, scale, t.scores[w])
	}
}

func (b *Backend) Attention(dst, q, k, v ml.Tensor, cache ml.KVCache, layer, pos0 int, a *ml.Attn) {
	d, qs, ks, vs, c := dst.(*Tensor), q.(*Tensor), k.(*Tensor), v.(*Tensor), cache.(*KVCache)
	if !(pos0+qs.rows <= c.ctx) {
		panic("cpu: " + fmt.Sprintf("Attention: positions %d..%d past the context %d", pos0, pos0+qs.rows, c.ctx))
	}
	if !(ks.cols == c.kvDim && vs.cols == c.kvDim && qs.cols == a.NHeads*a.HeadDim && d.cols == qs.cols && a.NKVHeads*a.HeadDim == c.kvDim) {
		panic("cpu: " + fmt.Sprintf("Attention shapes"))
	}
	hd, nblk := a.HeadDim, c.ctx16/16
	kc := c.k[layer]
	for r := range ks.rows {
		p := pos0 + r
		row := ks.row(r)
		for g := range a.NKVHeads {
			kt := kc[((g*nblk+p/16)*hd)*16+p%16:]
			for i, x := range row[g*hd : (g+1)*hd] {
				kt[i*16] = x
			}
		}
	}
	copy(c.v[layer][pos0*c.kvDim:], vs.data())
	t := &b.attn
	if need := a.NHeads / a.NKVHeads * c.ctx16; len(t.scores) < b.pool.Threads() || len(t.scores[0]) < need {
		t.scores = make([][]float32, b.pool.Threads())
		for i := range t.scores {
			t.scores[i] = make([]float32, need)
		}
	}
	t.d, t.q, t.c, t.layer, t.pos0, t.a = d, qs, c, layer, pos0, a
	b.pool.Run(qs.rows*a.NKVHeads, t)
}

// attnGroupGeneric computes attention for the len(q)/hd query heads that
// share one KV head, over n positions: out[h] = Σ_p softmax(s_h)[p]·v[p]
// with s_h[p] = scale·q_h·k[p]; kt are the KV head's transposed key blocks
// and v[p·stride:] its value rows; scores is scratch of len(q)/hd·ctx16.
func attnGroupGeneric(out, q, kt, v []float32, stride, n, hd int, scale float32, scores []float32) {
	n16 := (n + 15) / 16 * 16
	for h := range len(q) / hd {
		s := scores[h*n16 : (h+1)*n16]
		attnScoresGeneric(s, q[h*hd:(h+1)*hd], kt, scale)
		maxS := float32(math.Inf(-1))
		for _, x := range s[:n] {
			maxS = max(maxS, x)
		}
		sum := expSumGeneric(s[:n], maxS)
		attnValuesGeneric(out[h*hd:(h+1)*hd], s[:n], 1/sum, v, stride)
	}
}

// attnScoresGeneric sets s[p] = scale·Σ_d q[d]·k[p][d] for the len(s)
// positions (a multiple of 16) of the transposed key blocks kt.
func attnScoresGeneric(s, q, kt []float32, scale float32) {
	hd := len(q)
	for b := 0; b < len(s)/16; b++ {
		blk := kt[b*hd*16 : (b+1)*hd*16]
		var acc [16]float32
		for d, qd := range q {
			row := blk[d*16 : d*16+16]
			for l := range acc {
				acc[l] += qd * row[l]
			}
		}
		for l := range acc {
			s[b*16+l] = acc[l] * scale
		}
	}
}

// attnValuesGeneric sets out = inv·Σ_p w[p]·v[p·stride : p·stride+len(out)].
func attnValuesGeneric(out, w []float32, inv float32, v []float32, stride int) {
	clear(out)
	for p, wp := range w {
		axpy(out, wp*inv, v[p*stride:p*stride+len(out)])
	}
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
