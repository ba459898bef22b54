//go:build goexperiment.simd && amd64

package cpu

import (
	"simd/archsimd"
	"unsafe"

	"greta/gguf"
	"greta/quant"
)

// The AVX-512 twins of matmul_repack.go (installed by matmul_simd.go's
// init).

// natScaleIdx: byte shuffles turning eight scale bytes (repeated in every
// 128-bit lane) into the int16 scale vector k of a natural-order Q4_K/Q5_K
// block: lanes 0-15 sub-block 2k, lanes 16-31 sub-block 2k+1.
var natScaleIdx [4]archsimd.Int8x64 // set by init, on CPUs with AVX-512 only

func makeNatScaleIdx() (r [4]archsimd.Int8x64) {
	for k := range 4 {
		var b [64]int8
		for lane := range 32 {
			b[2*lane] = int8(2*k + lane/16)
			b[2*lane+1] = -1
		}
		r[k] = archsimd.LoadInt8x64(&b)
	}
	return r
}

func repackSIMD(t gguf.Type, dst []rpK, row []byte) {
	switch t {
	case gguf.Q4_K, gguf.Q5_K:
		repackK4SIMD(t, dst, row)
	case gguf.Q6_K:
		repackQ6SIMD(dst, row)
	}
}

func repackK4SIMD(t gguf.Type, dst []rpK, row []byte) {
	ts, offS, offQ := 144, quant.Q4_KOffScales, quant.Q4_KOffQs
	if t == gguf.Q5_K {
		ts, offS, offQ = 176, quant.Q5_KOffScales, quant.Q5_KOffQs
	}
	dup := archsimd.LoadUint32x16(&dupIdx)
	for i := range dst {
		b := row[i*ts : (i+1)*ts]
		r := &dst[i]
		setF16(&r.d, b, 0)
		sc, m := scalesK4(b[offS:])
		var z archsimd.Uint64x2
		scv := z.SetElem(0, sc).Broadcast1To8().AsUint8x64()
		for k := range 4 {
			scv.PermuteOrZeroGrouped(natScaleIdx[k]).Store((*[64]uint8)(unsafe.Pointer(&r.sc[32*k])))
		}
		var c f32x16
		c.SetLo(scalesF32(m).Mul(f16v8(b, 2))).Permute(dup).Store(&r.corr)
		unpackK45SIMD(&r.q, b, offQ, t == gguf.Q5_K)
	}
	archsimd.ClearAVXUpperBits()
}

// dupIdx doubles each of the first eight lanes: corr[2j] = corr[2j+1] =
// the min correction of sub-block j.
var dupIdx = [16]uint32{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7}

func repackQ6SIMD(dst []rpK, row []byte) {
	m15 := archsimd.BroadcastUint8x32(15)
	m3 := archsimd.BroadcastUint8x32(3)
	m12 := archsimd.BroadcastUint8x32(12)
	m48 := archsimd.BroadcastUint8x32(48)
	c2, c4 := cnt16y(2), cnt16y(4)
	for i := range dst {
		b := row[i*210 : (i+1)*210]
		r := &dst[i]
		setF16(&r.d, b, quant.Q6_KOffD)
		s8 := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[quant.Q6_KOffScales])))
		S := s8.ExtendToInt16()
		s8.ExtendToInt32().ConvertToFloat32().Mul(f16v(b, quant.Q6_KOffD).Mul(bcast(32))).Store(&r.corr)
		for h := range 2 {
			for k := range 4 {
				S.Permute(q6ScaleIdx[h][k]).Store((*[16]int16)(r.sc[16*(4*h+k) : 16*(4*h+k)+16]))
			}
			ql0 := ld32u8(b, quant.Q6_KOffQl+64*h)
			ql1 := ld32u8(b, quant.Q6_KOffQl+64*h+32)
			qh := ld32u8(b, quant.Q6_KOffQh+32*h)
			ql0.And(m15).Or(qh.And(m3).AsUint16x16().ShiftLeft(c4).AsUint8x32()).Store((*[32]uint8)(r.q[128*h : 128*h+32]))
			ql1.And(m15).Or(qh.And(m12).AsUint16x16().ShiftLeft(c2).AsUint8x32()).Store((*[32]uint8)(r.q[128*h+32 : 128*h+64]))
			ql0.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15).Or(qh.And(m48)).Store((*[32]uint8)(r.q[128*h+64 : 128*h+96]))
			ql1.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15).Or(qh.AsUint16x16().ShiftRight(c2).AsUint8x32().And(m48)).Store((*[32]uint8)(r.q[128*h+96 : 128*h+128]))
		}
	}
	archsimd.ClearAVXUpperBits()
}

func ldsc(r *rpK, k int) archsimd.Int16x32 {
	return archsimd.LoadInt16x32((*[32]int16)(r.sc[32*k : 32*k+32]))
}

func ldq(r *rpK, k int) archsimd.Uint8x64 {
	return archsimd.LoadUint8x64((*[64]uint8)(r.q[64*k : 64*k+64]))
}

func dotRpKSIMD(rp []rpK, a []actK) float32 {
	var facc, cacc f32x16
	a = a[:len(rp)]
	for i := range rp {
		r, ab := &rp[i], &a[i]
		p0 := ldq(r, 0).DotProductPairsSaturated(ldact(ab, 0)).DotProductPairs(ldsc(r, 0))
		p1 := ldq(r, 1).DotProductPairsSaturated(ldact(ab, 64)).DotProductPairs(ldsc(r, 1))
		p2 := ldq(r, 2).DotProductPairsSaturated(ldact(ab, 128)).DotProductPairs(ldsc(r, 2))
		p3 := ldq(r, 3).DotProductPairsSaturated(ldact(ab, 192)).DotProductPairs(ldsc(r, 3))
		facc = p0.Add(p1).Add(p2.Add(p3)).ConvertToFloat32().MulAdd(bcastp(&r.d).Mul(bcastp(&ab.d)), facc)
		cacc = archsimd.LoadFloat32x16(&r.corr).MulAdd(archsimd.LoadFloat32x16(&ab.ms16), cacc)
	}
	return ret(hsum16v(facc).Sub(hsum16v(cacc)))
}

// dotRpK2SIMD is dotRpKSIMD for two vectors at once, sharing the loads of
// the weights and scales.
func dotRpK2SIMD(rp []rpK, a, b []actK) (float32, float32) {
	var fa, fb, ca, cb f32x16
	a = a[:len(rp)]
	b = b[:len(rp)]
	for i := range rp {
		r, x, y := &rp[i], &a[i], &b[i]
		w0, s0 := ldq(r, 0), ldsc(r, 0)
		pa := w0.DotProductPairsSaturated(ldact(x, 0)).DotProductPairs(s0)
		pb := w0.DotProductPairsSaturated(ldact(y, 0)).DotProductPairs(s0)
		w1, s1 := ldq(r, 1), ldsc(r, 1)
		pa = pa.Add(w1.DotProductPairsSaturated(ldact(x, 64)).DotProductPairs(s1))
		pb = pb.Add(w1.DotProductPairsSaturated(ldact(y, 64)).DotProductPairs(s1))
		w2, s2 := ldq(r, 2), ldsc(r, 2)
		pa = pa.Add(w2.DotProductPairsSaturated(ldact(x, 128)).DotProductPairs(s2))
		pb = pb.Add(w2.DotProductPairsSaturated(ldact(y, 128)).DotProductPairs(s2))
		w3, s3 := ldq(r, 3), ldsc(r, 3)
		pa = pa.Add(w3.DotProductPairsSaturated(ldact(x, 192)).DotProductPairs(s3))
		pb = pb.Add(w3.DotProductPairsSaturated(ldact(y, 192)).DotProductPairs(s3))
		rd := bcastp(&r.d)
		fa = pa.ConvertToFloat32().MulAdd(rd.Mul(bcastp(&x.d)), fa)
		fb = pb.ConvertToFloat32().MulAdd(rd.Mul(bcastp(&y.d)), fb)
		corr := archsimd.LoadFloat32x16(&r.corr)
		ca = corr.MulAdd(archsimd.LoadFloat32x16(&x.ms16), ca)
		cb = corr.MulAdd(archsimd.LoadFloat32x16(&y.ms16), cb)
	}
	return ret2(hsum16v(fa).Sub(hsum16v(ca)), hsum16v(fb).Sub(hsum16v(cb)))
}

// unpackK45SIMD is unpackK45 with 32-byte vectors.
func unpackK45SIMD(q *[256]uint8, b []byte, offQ int, q5 bool) {
	m15 := archsimd.BroadcastUint8x32(15)
	b1 := archsimd.BroadcastUint8x32(1)
	c4 := cnt16y(4)
	var qh archsimd.Uint8x32
	if q5 {
		qh = ld32u8(b, quant.Q5_KOffQh)
	}
	for g := range 4 {
		v := ld32u8(b, offQ+32*g)
		lo := v.And(m15)
		hi := v.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15)
		if q5 {
			// Bits 2g and 2g+1 of each qh byte, moved to bit 4.
			g2 := cnt16y(uint16(2 * g))
			lo = lo.Or(qh.AsUint16x16().ShiftRight(g2).AsUint8x32().And(b1).AsUint16x16().ShiftLeft(c4).AsUint8x32())
			hi = hi.Or(qh.AsUint16x16().ShiftRight(g2.Add(cnt16y(1))).AsUint8x32().And(b1).AsUint16x16().ShiftLeft(c4).AsUint8x32())
		}
		lo.Store((*[32]uint8)(q[64*g : 64*g+32]))
		hi.Store((*[32]uint8)(q[64*g+32 : 64*g+64]))
	}
	archsimd.ClearAVXUpperBits()
}
