package cpu

import (
	"fmt"
	"math"

	"greta/ml"
)

// KVCache is a pool of pages of ml.PageSize (16) positions. Per layer and
// page:
//
//   - keys transposed per KV head, 16 positions a block:
//     k[layer][((page·nKV + head)·headDim + d)·16 + slot], so that the
//     scores of one query against a page are 16 lanes of one vector (one
//     multiply-add per dimension, no horizontal sums);
//   - values as rows: v[layer][(page·16 + slot)·kvDim + c].
//
// The head size is only known to Attention, which computes the key layout
// from it; a page is 16·kvDim floats of keys and as many of values either
// way.
type KVCache struct {
	spec ml.KVSpec
	k, v [][]float32
}

func (c *KVCache) Spec() ml.KVSpec { return c.spec }

func (b *Backend) NewKVCache(spec ml.KVSpec) (ml.KVCache, error) {
	if spec.Layers < 1 || spec.KVDim < 1 || spec.Pages < 1 {
		return nil, fmt.Errorf("KV cache: %d layers × %d pages × %d values", spec.Layers, spec.Pages, spec.KVDim)
	}
	switch spec.DType {
	case "", "f32":
		spec.DType = "f32"
	default:
		return nil, fmt.Errorf("KV cache type %q: the cpu backend holds f32", spec.DType)
	}
	n := spec.Pages * ml.PageSize * spec.KVDim
	if n/spec.KVDim/ml.PageSize != spec.Pages || n > math.MaxInt/(8*spec.Layers) {
		return nil, fmt.Errorf("KV cache: %d layers × %d pages × %d values overflows", spec.Layers, spec.Pages, spec.KVDim)
	}
	c := &KVCache{spec: spec, k: make([][]float32, spec.Layers), v: make([][]float32, spec.Layers)}
	for l := range c.k {
		c.k[l] = make([]float32, n)
		c.v[l] = make([]float32, n)
	}
	return c, nil
}

// plantedBugLayer, when ≥ 0, makes attention in that layer read the wrong
// KV head. Only tests set it: it proves that trace diff finds the layer.
var plantedBugLayer = -1

// attnTask computes one (row, KV head) pair per item: causal softmax
// attention over positions 0..Pos[row] of the row's sequence, for every
// query head that shares the KV head, together, so that each key and value
// is loaded once for all of them. The work of a row is the same whatever
// else the batch holds: page by page in logical order (attnGroup).
type attnTask struct {
	d, q   *Tensor
	c      *KVCache
	b      *ml.Batch
	layer  int
	a      *ml.Attn
	scores [][]float32 // per worker, [group][n16]
	pages  [][]int     // per worker, the float offsets of the row's key pages
}

func (t *attnTask) Do(w, lo, hi int) {
	a, hd := t.a, t.a.HeadDim
	group := a.NHeads / a.NKVHeads
	kc, vc := t.c.k[t.layer], t.c.v[t.layer]
	kvDim := t.c.spec.KVDim
	scale := float32(a.Scale)
	for item := lo; item < hi; item++ {
		r, g := item/a.NKVHeads, item%a.NKVHeads
		n := int(t.b.Pos[r]) + 1
		kvh := g
		if t.layer == plantedBugLayer {
			kvh = (kvh + 1) % a.NKVHeads
		}
		// A sliding window starts at the page of position n−Window; the
		// positions before it in that page are masked.
		j0, mask := 0, attnMask{softcap: float32(a.Softcap)}
		if a.Window > 0 && n > a.Window {
			lo := n - a.Window
			j0, mask.skip = lo/ml.PageSize, lo%ml.PageSize
		}
		table := t.b.Pages[t.b.Seq[r]][j0:]
		n -= j0 * ml.PageSize
		np := (n + ml.PageSize - 1) / ml.PageSize
		kp, vp := t.pages[w][:np], t.pages[w][np:2*np]
		for j := range np {
			pg := int(table[j])
			kp[j] = (pg*a.NKVHeads + kvh) * hd * ml.PageSize
			vp[j] = pg*ml.PageSize*kvDim + kvh*hd
		}
		q := t.q.row(r)[g*group*hd : (g+1)*group*hd]
		out := t.d.row(r)[g*group*hd : (g+1)*group*hd]
		vec.attnGroup(out, q, kc, vc, kp, vp, kvDim, n, hd, scale, mask, t.scores[w])
	}
}

func (b *Backend) Attention(dst, q, k, v ml.Tensor, cache ml.KVCache, layer int, a *ml.Attn) {
	d, qs, ks, vs, c := dst.(*Tensor), q.(*Tensor), k.(*Tensor), v.(*Tensor), cache.(*KVCache)
	bt := b.batch
	if bt == nil || bt.Rows() != qs.rows {
		panic("cpu: Attention without a batch of its rows")
	}
	if !(ks.cols == c.spec.KVDim && vs.cols == c.spec.KVDim && qs.cols == a.NHeads*a.HeadDim && d.cols == qs.cols && a.NKVHeads*a.HeadDim == c.spec.KVDim) {
		panic("cpu: " + fmt.Sprintf("Attention shapes"))
	}
	hd, kvDim := a.HeadDim, c.spec.KVDim
	kc, vc := c.k[layer], c.v[layer]
	maxN := 0
	for r := range ks.rows {
		pg, slot := bt.Page(r)
		row := ks.row(r)
		for g := range a.NKVHeads {
			kt := kc[((pg*a.NKVHeads+g)*hd)*ml.PageSize+slot:]
			for i, x := range row[g*hd : (g+1)*hd] {
				kt[i*ml.PageSize] = x
			}
		}
		copy(vc[(pg*ml.PageSize+slot)*kvDim:][:kvDim], vs.row(r))
		maxN = max(maxN, int(bt.Pos[r])+1)
	}
	t := &b.attn
	n16 := (maxN + 15) / 16 * 16
	if need := a.NHeads/a.NKVHeads*n16 + attnScratch; len(t.scores) < b.pool.Threads() || len(t.scores[0]) < need || len(t.pages[0]) < 2*n16/16 {
		t.scores = make([][]float32, b.pool.Threads())
		t.pages = make([][]int, b.pool.Threads())
		for i := range t.scores {
			t.scores[i] = make([]float32, need)
			t.pages[i] = make([]int, 2*n16/16)
		}
	}
	t.d, t.q, t.c, t.b, t.layer, t.a = d, qs, c, bt, layer, a
	b.pool.Run(qs.rows*a.NKVHeads, t)
}

// attnMask is what a sliding window and a softcap do to the scores of
// attnGroup: the first skip positions are left out (score −Inf, so their
// weight is exactly 0), and each other score s becomes
// softcap·tanh(s/softcap) when softcap > 0. The zero value changes nothing.
type attnMask struct {
	skip    int
	softcap float32
}

func (m attnMask) active() bool { return m.skip > 0 || m.softcap > 0 }

// apply masks and caps the scores s in place. It is scalar code: the SIMD
// kernels clear the vector registers' upper halves before calling it.
func (m attnMask) apply(s []float32) {
	for i := range m.skip {
		s[i] = float32(math.Inf(-1))
	}
	if c := m.softcap; c > 0 {
		for i, x := range s[m.skip:] {
			s[m.skip+i] = c * float32(math.Tanh(float64(x*(1/c))))
		}
	}
}

// attnGroupGeneric computes attention for the len(q)/hd query heads that
// share one KV head, over n positions held in pages: out[h] =
// Σ_p softmax(s_h)[p]·v[p] with s_h[p] = scale·q_h·k[p], softcapped and
// without the first mask.skip positions. The key block of logical page j
// (16 positions transposed) is kc[kp[j]:], and its value rows are
// vc[vp[j] + slot·stride:]; scores is scratch of len(q)/hd·n16 +
// attnScratch.
// Values are summed page by page in logical order (each page's products
// summed, then added to the total), so the result depends on the positions
// alone, never on where the pages sit in the pool.
func attnGroupGeneric(out, q, kc, vc []float32, kp, vp []int, stride, n, hd int, scale float32, mask attnMask, scores []float32) {
	n16 := (n + 15) / 16 * 16
	part := scores[len(q)/hd*n16 : len(q)/hd*n16+hd] // scratch past the scores (attnScratch)
	for h := range len(q) / hd {
		s := scores[h*n16 : (h+1)*n16]
		for j := range n16 / 16 {
			attnScoresGeneric(s[16*j:16*j+16], q[h*hd:(h+1)*hd], kc[kp[j]:kp[j]+16*hd], scale)
		}
		mask.apply(s[:n])
		maxS := float32(math.Inf(-1))
		for _, x := range s[:n] {
			maxS = max(maxS, x)
		}
		sum := expSumGeneric(s[:n], maxS)
		o := out[h*hd : (h+1)*hd]
		attnValuesGeneric(o, s[:min(16, n)], 1/sum, vc[vp[0]:], stride)
		for j := 1; j < n16/16; j++ {
			m := min(16, n-16*j)
			attnValuesGeneric(part, s[16*j:16*j+m], 1/sum, vc[vp[j]:], stride)
			for i := range o {
				o[i] += part[i]
			}
		}
	}
}

// attnScratch is the scratch attnGroup needs past its scores: the partial
// sums of one page's values for up to 4 heads of up to 128 values, or one
// head of up to 512.
const attnScratch = 512

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
