//go:build goexperiment.simd && amd64

package cpu

import (
	"math"
	"simd/archsimd"
)

var simdVec = vecKernels{
	dot:      dotSIMD,
	axpy:     axpySIMD,
	expSum:   expSumSIMD,
	swiglu:   swigluSIMD,
	sumSq:    sumSqSIMD,
	scaleMul: scaleMulSIMD,
	add:      addSIMD,

	attnScores: attnScoresSIMD,
	attnValues: attnValuesSIMD,
	attnGroup:  attnGroupSIMD,
}

func init() {
	if archsimd.X86.AVX512() {
		simdVecKernels = &simdVec
		vec = &simdVec
	}
}

func dotSIMD(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	var a0, a1 f32x16
	i := 0
	for ; i+32 <= n; i += 32 {
		a0 = ldx(a, i).MulAdd(ldx(b, i), a0)
		a1 = ldx(a, i+16).MulAdd(ldx(b, i+16), a1)
	}
	for ; i+16 <= n; i += 16 {
		a0 = ldx(a, i).MulAdd(ldx(b, i), a0)
	}
	s := ret(hsum16v(a0.Add(a1)))
	for ; i < n; i++ {
		s += a[i] * b[i]
	}
	return s
}

func axpySIMD(dst []float32, alpha float32, x []float32) {
	n := len(dst)
	x = x[:n]
	va := bcast(alpha)
	i := 0
	for ; i+16 <= n; i += 16 {
		va.MulAdd(ldx(x, i), ldx(dst, i)).Store((*[16]float32)(dst[i : i+16]))
	}
	if i < n { // the tail: multiply, then add, as the scalar twin
		va.Mul(archsimd.LoadFloat32x16SlicePart(x[i:])).Add(archsimd.LoadFloat32x16SlicePart(dst[i:])).StoreSlicePart(dst[i:])
	}
	archsimd.ClearAVXUpperBits()
}

// expV is expf on 16 lanes: the same range reduction (rounding n to even
// instead of half up, which keeps r within ±ln2/2) and polynomial, with
// fused multiply-adds; 0 below −87.34, +Inf above 88.37.
func expV(x f32x16) f32x16 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693145751953125
		ln2lo = 1.42860682030941723212e-6
	)
	lo := x.Less(bcast(-87.33654))
	hi := x.Greater(bcast(88.37626))
	x = x.Max(bcast(-87.33654)).Min(bcast(88.37626))
	n := x.Mul(bcast(log2e)).RoundToEvenScaled(0)
	r := n.MulAdd(bcast(-ln2hi), x)
	r = n.MulAdd(bcast(-ln2lo), r)
	p := bcast(1.0/720).MulAdd(r, bcast(1.0/120))
	p = p.MulAdd(r, bcast(1.0/24))
	p = p.MulAdd(r, bcast(1.0/6))
	p = p.MulAdd(r, bcast(0.5))
	p = p.MulAdd(r, bcast(1))
	p = p.MulAdd(r, bcast(1))
	e := n.ConvertToInt32().Add(archsimd.BroadcastInt32x16(127)).ShiftLeft(cnt32(23)).AsFloat32x16()
	p = p.Mul(e)
	var z f32x16
	p = z.Merge(p, lo)
	return bcast(float32(math.Inf(1))).Merge(p, hi)
}

func expSumSIMD(x []float32, m float32) float32 {
	n := len(x)
	vm := bcast(m)
	var acc f32x16
	i := 0
	for ; i+16 <= n; i += 16 {
		e := expV(ldx(x, i).Sub(vm))
		e.Store((*[16]float32)(x[i : i+16]))
		acc = acc.Add(e)
	}
	if i < n { // the tail, padded with −Inf (exp = 0)
		live := archsimd.Mask32x16FromBits(0xffff >> (16 - (n - i)))
		t := archsimd.LoadFloat32x16SlicePart(x[i:]).Merge(bcast(float32(math.Inf(-1))), live)
		e := expV(t.Sub(vm))
		e.StoreSlicePart(x[i:])
		acc = acc.Add(e)
	}
	return hsum16(acc)
}

func swigluSIMD(g, u []float32) {
	n := len(g)
	u = u[:n]
	one := bcast(1)
	var z f32x16
	i := 0
	for ; i+16 <= n; i += 16 {
		v := ldx(g, i)
		e := expV(z.Sub(v))
		v.Div(one.Add(e)).Mul(ldx(u, i)).Store((*[16]float32)(g[i : i+16]))
	}
	if i < n { // the tail, through the same vector code
		v := archsimd.LoadFloat32x16SlicePart(g[i:])
		e := expV(z.Sub(v))
		v.Div(one.Add(e)).Mul(archsimd.LoadFloat32x16SlicePart(u[i:])).StoreSlicePart(g[i:])
	}
	archsimd.ClearAVXUpperBits()
}

func sumSqSIMD(x []float32) float64 {
	n := len(x)
	var a0, a1 archsimd.Float64x8
	i := 0
	for ; i+16 <= n; i += 16 {
		v := ldx(x, i)
		l := v.GetLo().ConvertToFloat64()
		h := v.GetHi().ConvertToFloat64()
		a0 = l.MulAdd(l, a0)
		a1 = h.MulAdd(h, a1)
	}
	// ((t0+t1) + (t2+t3)) + ((t4+t5) + (t6+t7)) over the lanes t of a0+a1.
	t := a0.Add(a1)
	p := t.GetLo().AddPairsGrouped(t.GetHi()) // t0+t1, t4+t5, t2+t3, t6+t7
	q := p.GetLo().Add(p.GetHi())
	s := ret64(q.AddPairs(q))
	for ; i < n; i++ {
		s += float64(x[i]) * float64(x[i])
	}
	return s
}

// ret64 is ret for a float64.
func ret64(v archsimd.Float64x2) float64 {
	b, _ := clearUpper(v.AsUint64x2().GetElem(0), 0)
	return math.Float64frombits(b)
}

func scaleMulSIMD(out, x []float32, s float32, w []float32) {
	n := len(out)
	x, w = x[:n], w[:n]
	vs := bcast(s)
	i := 0
	for ; i+16 <= n; i += 16 {
		ldx(x, i).Mul(vs).Mul(ldx(w, i)).Store((*[16]float32)(out[i : i+16]))
	}
	if i < n {
		archsimd.LoadFloat32x16SlicePart(x[i:]).Mul(vs).Mul(archsimd.LoadFloat32x16SlicePart(w[i:])).StoreSlicePart(out[i:])
	}
	archsimd.ClearAVXUpperBits()
}

func addSIMD(dst, x []float32) {
	n := len(dst)
	x = x[:n]
	i := 0
	for ; i+16 <= n; i += 16 {
		ldx(dst, i).Add(ldx(x, i)).Store((*[16]float32)(dst[i : i+16]))
	}
	if i < n {
		archsimd.LoadFloat32x16SlicePart(dst[i:]).Add(archsimd.LoadFloat32x16SlicePart(x[i:])).StoreSlicePart(dst[i:])
	}
	archsimd.ClearAVXUpperBits()
}

func attnScoresSIMD(s, q, kt []float32, scale float32) {
	hd := len(q)
	nb := len(s) / 16
	vs := bcast(scale)
	b := 0
	for ; b+4 <= nb; b += 4 {
		k0 := kt[(b+0)*hd*16 : (b+1)*hd*16]
		k1 := kt[(b+1)*hd*16 : (b+2)*hd*16]
		k2 := kt[(b+2)*hd*16 : (b+3)*hd*16]
		k3 := kt[(b+3)*hd*16 : (b+4)*hd*16]
		var a0, a1, a2, a3 f32x16
		for d := range q {
			vq := bcastp(&q[d])
			a0 = ldx(k0, d*16).MulAdd(vq, a0)
			a1 = ldx(k1, d*16).MulAdd(vq, a1)
			a2 = ldx(k2, d*16).MulAdd(vq, a2)
			a3 = ldx(k3, d*16).MulAdd(vq, a3)
		}
		a0.Mul(vs).Store((*[16]float32)(s[b*16:]))
		a1.Mul(vs).Store((*[16]float32)(s[b*16+16:]))
		a2.Mul(vs).Store((*[16]float32)(s[b*16+32:]))
		a3.Mul(vs).Store((*[16]float32)(s[b*16+48:]))
	}
	for ; b < nb; b++ {
		k := kt[b*hd*16 : (b+1)*hd*16]
		var a0, a1, a2, a3 f32x16
		d := 0
		for ; d+4 <= hd; d += 4 {
			a0 = ldx(k, d*16).MulAdd(bcastp(&q[d]), a0)
			a1 = ldx(k, d*16+16).MulAdd(bcastp(&q[d+1]), a1)
			a2 = ldx(k, d*16+32).MulAdd(bcastp(&q[d+2]), a2)
			a3 = ldx(k, d*16+48).MulAdd(bcastp(&q[d+3]), a3)
		}
		for ; d < hd; d++ {
			a0 = ldx(k, d*16).MulAdd(bcastp(&q[d]), a0)
		}
		a0.Add(a1).Add(a2.Add(a3)).Mul(vs).Store((*[16]float32)(s[b*16:]))
	}
	archsimd.ClearAVXUpperBits()
}

func attnValuesSIMD(out, w []float32, inv float32, v []float32, stride int) {
	hd := len(out)
	if hd%16 != 0 {
		attnValuesGeneric(out, w, inv, v, stride)
		return
	}
	vi := bcast(inv)
	c := 0
	for ; c+64 <= hd; c += 64 {
		var a0, a1, a2, a3 f32x16
		for p := range w {
			vw := bcastp(&w[p])
			o := p*stride + c
			a0 = ldx(v, o).MulAdd(vw, a0)
			a1 = ldx(v, o+16).MulAdd(vw, a1)
			a2 = ldx(v, o+32).MulAdd(vw, a2)
			a3 = ldx(v, o+48).MulAdd(vw, a3)
		}
		a0.Mul(vi).Store((*[16]float32)(out[c:]))
		a1.Mul(vi).Store((*[16]float32)(out[c+16:]))
		a2.Mul(vi).Store((*[16]float32)(out[c+32:]))
		a3.Mul(vi).Store((*[16]float32)(out[c+48:]))
	}
	for ; c < hd; c += 16 {
		var a0 f32x16
		for p := range w {
			a0 = ldx(v, p*stride+c).MulAdd(bcastp(&w[p]), a0)
		}
		a0.Mul(vi).Store((*[16]float32)(out[c:]))
	}
	archsimd.ClearAVXUpperBits()
}

// attnGroupSIMD is attnGroupGeneric with vectors; for head size 64 and 8k
// query heads per KV head, the assembly kernels (attention_simd.go) take
// the heads 8 at a time for the scores and 4 at a time for the values, so
// that each key or value vector is loaded once for all of them. As there,
// the values are summed page by page in logical order.
func attnGroupSIMD(out, q, kc, vc []float32, kp, vp []int, stride, n, hd int, scale float32, mask attnMask, scores []float32) {
	nh := len(q) / hd
	if hd == 64 && nh%8 == 0 {
		attnGroup64(out, q, kc, vc, kp, vp, stride, n, scale, mask, scores)
		return
	}
	n16 := (n + 15) / 16 * 16
	np := n16 / 16
	for h := range nh {
		for j := range np {
			attnScoresSIMD(scores[h*n16+16*j:h*n16+16*j+16], q[h*hd:(h+1)*hd], kc[kp[j]:kp[j]+16*hd], scale)
		}
	}
	if mask.active() {
		archsimd.ClearAVXUpperBits()
		for h := range nh {
			mask.apply(scores[h*n16 : h*n16+n])
		}
	}
	for h := range nh {
		s := scores[h*n16 : h*n16+n]
		maxS := maxSIMD(s)
		sum := expSumSIMD(s, maxS)
		inv := 1 / sum
		for i := range s {
			s[i] *= inv
		}
	}
	part := scores[nh*n16 : nh*n16+hd] // scratch past the scores (attnScratch)
	for h := range nh {
		o := out[h*hd : (h+1)*hd]
		attnValuesSIMD(o, scores[h*n16:h*n16+min(16, n)], 1, vc[vp[0]:], stride)
		for j := 1; j < np; j++ {
			m := min(16, n-16*j)
			attnValuesSIMD(part, scores[h*n16+16*j:h*n16+16*j+m], 1, vc[vp[j]:], stride)
			addSIMD(o, part)
		}
	}
}

func maxSIMD(s []float32) float32 {
	m := float32(math.Inf(-1))
	i := 0
	if len(s) >= 16 {
		vm := ldx(s, 0)
		for i = 16; i+16 <= len(s); i += 16 {
			vm = vm.Max(ldx(s, i))
		}
		m = hmax16(vm)
	}
	for ; i < len(s); i++ {
		m = max(m, s[i])
	}
	return m
}
