//go:build goexperiment.simd && amd64

package cpu

import (
	"simd/archsimd"
	"unsafe"

	"greta/quant"
)

// The AVX-512 twins of matmul_q15.go (installed by matmul_simd.go's init).

// quantizeK15SIMD is quantizeK15Generic with vectors; it writes the same
// bytes.
func quantizeK15SIMD(dst []actK15, x []float32, k4 bool) {
	am := absMask()
	c127 := archsimd.BroadcastInt32x16(127)
	c7 := cnt32(7)
	for i := range len(x) / quant.QK_K {
		xb := x[i*quant.QK_K : (i+1)*quant.QK_K]
		a := &dst[i]
		var vmax f32x16
		for j := 0; j < 256; j += 16 {
			vmax = vmax.Max(ldx(xb, j).AsInt32x16().And(am).AsFloat32x16())
		}
		amax := hmax16(vmax)
		if amax != amax {
			quantizeK15Generic(dst[i:i+1], xb, k4)
			continue
		}
		a.d = amax / q15Max
		var id float32
		if amax != 0 {
			id = q15Max / amax
		}
		vid := bcast(id)
		for j := 0; j < 256; j += 16 {
			q := ldx(xb, j).Mul(vid).RoundToEvenScaled(0).ConvertToInt32()
			p := j
			if k4 {
				p = int(k4Pos[j])
			}
			q.ShiftRight(c7).SaturateToInt8().Store((*[16]int8)(a.hi[p : p+16]))
			q.And(c127).SaturateToInt8().Store((*[16]int8)(a.lo[p : p+16]))
			// Σq of each run of 16 (≤ 16·16383), kept in ms16 as an int32
			// until the scalar code below: a local array would be zeroed
			// with legacy SSE.
			*(*int32)(unsafe.Pointer(&a.ms16[j/16])) = hsumI(q)
		}
		archsimd.ClearAVXUpperBits()
		// The sums and their pairs are exact in float32 (< 2^24).
		s16 := (*[16]int32)(unsafe.Pointer(&a.ms16))
		for j := range 8 {
			a.ms[j] = a.d * float32(s16[2*j]+s16[2*j+1])
		}
		for j := range 16 {
			a.ms16[j] = a.d * float32(s16[j])
		}
	}
	archsimd.ClearAVXUpperBits() // (for an x of no blocks)
}

func ld15(p *[256]int8, off int) archsimd.Int8x64 {
	return archsimd.LoadInt8x64((*[64]int8)(p[off : off+64]))
}

func dotQ4_KQ15SIMD(row []byte, a []actK15) float32 {
	var facc f32x16
	var macc f32x8
	m15 := archsimd.BroadcastUint8x64(15)
	c4 := cnt16(4)
	for i := range a {
		b := row[i*144 : i*144+144]
		ab := &a[i]
		sc, m := scalesK4(b[quant.Q4_KOffScales:])
		var z archsimd.Uint64x2
		scv := z.SetElem(0, sc).Broadcast1To8().AsUint8x64()
		A := ld64u8(b, quant.Q4_KOffQs)
		B := ld64u8(b, quant.Q4_KOffQs+64)
		w := A.And(m15)
		s := scv.PermuteOrZeroGrouped(k4ScaleIdx[0]).AsInt16x32()
		ph := w.DotProductPairsSaturated(ld15(&ab.hi, 0)).DotProductPairs(s)
		pl := w.DotProductPairsSaturated(ld15(&ab.lo, 0)).DotProductPairs(s)
		w = A.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15)
		s = scv.PermuteOrZeroGrouped(k4ScaleIdx[1]).AsInt16x32()
		ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 64)).DotProductPairs(s))
		pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 64)).DotProductPairs(s))
		w = B.And(m15)
		s = scv.PermuteOrZeroGrouped(k4ScaleIdx[2]).AsInt16x32()
		ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 128)).DotProductPairs(s))
		pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 128)).DotProductPairs(s))
		w = B.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15)
		s = scv.PermuteOrZeroGrouped(k4ScaleIdx[3]).AsInt16x32()
		ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 192)).DotProductPairs(s))
		pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 192)).DotProductPairs(s))
		d := f16v(b, 0).Mul(bcastp(&ab.d))
		facc = ph.ConvertToFloat32().MulAdd(d.Mul(bcast(128)), facc)
		facc = pl.ConvertToFloat32().MulAdd(d, facc)
		macc = scalesF32(m).Mul(f16v8(b, 2)).MulAdd(archsimd.LoadFloat32x8(&ab.ms), macc)
	}
	return ret(hsum16v(facc).Sub(hsum8v(macc)))
}

func dotQ5_KQ15SIMD(row []byte, a []actK15) float32 {
	var facc f32x16
	var macc f32x8
	m15 := archsimd.BroadcastUint8x64(15)
	b1 := archsimd.BroadcastUint8x64(1)
	b2 := archsimd.BroadcastUint8x64(2)
	c2, c3, c4, c6 := cnt16y(2), cnt16(3), cnt16(4), cnt16y(6)
	for i := range a {
		b := row[i*176 : i*176+176]
		ab := &a[i]
		sc, m := scalesK4(b[quant.Q5_KOffScales:])
		var z archsimd.Uint64x2
		scv := z.SetElem(0, sc).Broadcast1To8().AsUint8x64()
		qh := ld32u8(b, quant.Q5_KOffQh).AsUint16x16()
		var hA, hB archsimd.Uint8x64
		hA = hA.SetLo(qh.AsUint8x32()).SetHi(qh.ShiftRight(c2).AsUint8x32())
		hB = hB.SetLo(qh.ShiftRight(c4.GetLo()).AsUint8x32()).SetHi(qh.ShiftRight(c6).AsUint8x32())
		A := ld64u8(b, quant.Q5_KOffQs)
		B := ld64u8(b, quant.Q5_KOffQs+64)
		w := A.And(m15).Or(hA.And(b1).AsUint16x32().ShiftLeft(c4).AsUint8x64())
		s := scv.PermuteOrZeroGrouped(k4ScaleIdx[0]).AsInt16x32()
		ph := w.DotProductPairsSaturated(ld15(&ab.hi, 0)).DotProductPairs(s)
		pl := w.DotProductPairsSaturated(ld15(&ab.lo, 0)).DotProductPairs(s)
		w = A.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15).Or(hA.And(b2).AsUint16x32().ShiftLeft(c3).AsUint8x64())
		s = scv.PermuteOrZeroGrouped(k4ScaleIdx[1]).AsInt16x32()
		ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 64)).DotProductPairs(s))
		pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 64)).DotProductPairs(s))
		w = B.And(m15).Or(hB.And(b1).AsUint16x32().ShiftLeft(c4).AsUint8x64())
		s = scv.PermuteOrZeroGrouped(k4ScaleIdx[2]).AsInt16x32()
		ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 128)).DotProductPairs(s))
		pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 128)).DotProductPairs(s))
		w = B.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15).Or(hB.And(b2).AsUint16x32().ShiftLeft(c3).AsUint8x64())
		s = scv.PermuteOrZeroGrouped(k4ScaleIdx[3]).AsInt16x32()
		ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 192)).DotProductPairs(s))
		pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 192)).DotProductPairs(s))
		d := f16v(b, 0).Mul(bcastp(&ab.d))
		facc = ph.ConvertToFloat32().MulAdd(d.Mul(bcast(128)), facc)
		facc = pl.ConvertToFloat32().MulAdd(d, facc)
		macc = scalesF32(m).Mul(f16v8(b, 2)).MulAdd(archsimd.LoadFloat32x8(&ab.ms), macc)
	}
	return ret(hsum16v(facc).Sub(hsum8v(macc)))
}

func ld15y(p *[256]int8, off int) archsimd.Int8x32 {
	return archsimd.LoadInt8x32((*[32]int8)(p[off : off+32]))
}

func dotQ6_KQ15SIMD(row []byte, a []actK15) float32 {
	var facc, cacc f32x16
	m15 := archsimd.BroadcastUint8x32(15)
	m3 := archsimd.BroadcastUint8x32(3)
	m12 := archsimd.BroadcastUint8x32(12)
	m48 := archsimd.BroadcastUint8x32(48)
	c2, c4 := cnt16y(2), cnt16y(4)
	for i := range a {
		b := row[i*210 : i*210+210]
		ab := &a[i]
		s8 := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[quant.Q6_KOffScales])))
		S := s8.ExtendToInt16()
		d := f16v(b, quant.Q6_KOffD)
		// Weights are q−32: subtract 32·d·Σ sc·(d_a·Σq of each run of 16).
		cacc = s8.ExtendToInt32().ConvertToFloat32().Mul(d.Mul(bcast(32))).MulAdd(archsimd.LoadFloat32x16(&ab.ms16), cacc)
		var ph, pl i32x8
		for h := 0; h < 2; h++ {
			ql0 := ld32u8(b, quant.Q6_KOffQl+64*h)
			ql1 := ld32u8(b, quant.Q6_KOffQl+64*h+32)
			qh := ld32u8(b, quant.Q6_KOffQh+32*h)
			idx := &q6ScaleIdx[h]
			w := ql0.And(m15).Or(qh.And(m3).AsUint16x16().ShiftLeft(c4).AsUint8x32())
			s := S.Permute(idx[0])
			ph = ph.Add(w.DotProductPairsSaturated(ld15y(&ab.hi, 128*h)).DotProductPairs(s))
			pl = pl.Add(w.DotProductPairsSaturated(ld15y(&ab.lo, 128*h)).DotProductPairs(s))
			w = ql1.And(m15).Or(qh.And(m12).AsUint16x16().ShiftLeft(c2).AsUint8x32())
			s = S.Permute(idx[1])
			ph = ph.Add(w.DotProductPairsSaturated(ld15y(&ab.hi, 128*h+32)).DotProductPairs(s))
			pl = pl.Add(w.DotProductPairsSaturated(ld15y(&ab.lo, 128*h+32)).DotProductPairs(s))
			w = ql0.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15).Or(qh.And(m48))
			s = S.Permute(idx[2])
			ph = ph.Add(w.DotProductPairsSaturated(ld15y(&ab.hi, 128*h+64)).DotProductPairs(s))
			pl = pl.Add(w.DotProductPairsSaturated(ld15y(&ab.lo, 128*h+64)).DotProductPairs(s))
			w = ql1.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15).Or(qh.AsUint16x16().ShiftRight(c2).AsUint8x32().And(m48))
			s = S.Permute(idx[3])
			ph = ph.Add(w.DotProductPairsSaturated(ld15y(&ab.hi, 128*h+96)).DotProductPairs(s))
			pl = pl.Add(w.DotProductPairsSaturated(ld15y(&ab.lo, 128*h+96)).DotProductPairs(s))
		}
		dd := d.GetLo().Mul(bcast8p(&ab.d))
		var f f32x16
		f = f.SetLo(ph.ConvertToFloat32().Mul(dd.Mul(archsimd.BroadcastFloat32x8(128)))).SetHi(pl.ConvertToFloat32().Mul(dd))
		facc = facc.Add(f)
	}
	return ret(hsum16v(facc).Sub(hsum16v(cacc)))
}

func dotRpK15SIMD(rp []rpK, a []actK15) float32 {
	var facc, cacc f32x16
	a = a[:len(rp)]
	for i := range rp {
		r, ab := &rp[i], &a[i]
		var ph, pl i32x16
		for k := 0; k < 4; k++ {
			w, s := ldq(r, k), ldsc(r, k)
			ph = ph.Add(w.DotProductPairsSaturated(ld15(&ab.hi, 64*k)).DotProductPairs(s))
			pl = pl.Add(w.DotProductPairsSaturated(ld15(&ab.lo, 64*k)).DotProductPairs(s))
		}
		d := bcastp(&r.d).Mul(bcastp(&ab.d))
		facc = ph.ConvertToFloat32().MulAdd(d.Mul(bcast(128)), facc)
		facc = pl.ConvertToFloat32().MulAdd(d, facc)
		cacc = archsimd.LoadFloat32x16(&r.corr).MulAdd(archsimd.LoadFloat32x16(&ab.ms16), cacc)
	}
	return ret(hsum16v(facc).Sub(hsum16v(cacc)))
}
