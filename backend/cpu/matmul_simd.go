//go:build goexperiment.simd && amd64

package cpu

import (
	"encoding/binary"
	"math"
	"simd/archsimd"
	"unsafe"

	"greta/gguf"
	"greta/quant"
)

// The AVX-512 kernels (simd/archsimd). Each mirrors the pure-Go twin of the
// same name in matmul_generic.go: same blocks, same integer sums; only the
// order of float32 additions differs. They need AVX-512 F/CD/BW/DQ/VL
// (archsimd.X86.AVX512) and nothing newer, so Skylake-X and later Intel and
// Zen 4 and later AMD run them.

func init() {
	if !archsimd.X86.AVX512() {
		return
	}
	k := genericKernels
	k.f32[gguf.F32] = dotF32SIMD
	k.f32[gguf.F16] = dotF16SIMD
	k.f32[gguf.BF16] = dotBF16SIMD
	k.f32[gguf.Q8_0] = dotQ8_0F32SIMD
	k.f32[gguf.Q4_0] = dotQ4_0F32SIMD
	k.f32[gguf.Q4_K] = dotQ4_KF32SIMD
	k.f32[gguf.Q5_K] = dotQ5_KF32SIMD
	k.f32[gguf.Q6_K] = dotQ6_KF32SIMD
	k.q832[gguf.Q8_0] = dotQ8_0Q8SIMD
	k.q832[gguf.Q4_0] = dotQ4_0Q8SIMD
	k.q8K[gguf.Q4_K] = dotQ4_KQ8SIMD
	k.q8K[gguf.Q5_K] = dotQ5_KQ8SIMD
	k.q8K[gguf.Q6_K] = dotQ6_KQ8SIMD
	k.repack = repackSIMD
	k.dotRp = dotRpKSIMD
	k.dotRp2 = dotRpK2SIMD
	k.q15K[gguf.Q4_K] = dotQ4_KQ15SIMD
	k.q15K[gguf.Q5_K] = dotQ5_KQ15SIMD
	k.q15K[gguf.Q6_K] = dotQ6_KQ15SIMD
	k.dotRp15 = dotRpK15SIMD
	k.quantizeK15 = quantizeK15SIMD
	k.quantizeK = quantizeKSIMD
	k.quantize32 = quantize32SIMD
	k.sums32 = sums32SIMD
	k0 := k
	simdKernelsNoVNNI = &k0
	installVNNI(&k)
	simdKernels = &k
}

type (
	f32x16 = archsimd.Float32x16
	f32x8  = archsimd.Float32x8
	i32x16 = archsimd.Int32x16
	i32x8  = archsimd.Int32x8
)

func hsum16(v f32x16) float32 { return hsum8(v.GetLo().Add(v.GetHi())) }

func hsum8(v f32x8) float32 {
	s := v.GetLo().Add(v.GetHi())
	s = s.AddPairs(s)
	s = s.AddPairs(s)
	return s.GetElem(0)
}

func bcast(f float32) f32x16 { return archsimd.BroadcastFloat32x16(f) }

// Loads from byte slices at an offset; the caller has bounds-checked the
// enclosing block.
func ld16u8(b []byte, off int) archsimd.Uint8x16 {
	return archsimd.LoadUint8x16((*[16]uint8)(b[off : off+16]))
}
func ld32u8(b []byte, off int) archsimd.Uint8x32 {
	return archsimd.LoadUint8x32((*[32]uint8)(b[off : off+32]))
}
func ld64u8(b []byte, off int) archsimd.Uint8x64 {
	return archsimd.LoadUint8x64((*[64]uint8)(b[off : off+64]))
}
func ldx(x []float32, off int) f32x16 {
	return archsimd.LoadFloat32x16((*[16]float32)(x[off : off+16]))
}

// u8to32 zero-extends 16 bytes to 16 int32 lanes.
func u8to32(b []byte, off int) i32x16 { return ld16u8(b, off).ExtendToUint32().AsInt32x16() }

// ---- float32 activations ----

func dotF32SIMD(row []byte, x, _ []float32) float32 {
	n := len(x)
	if n == 0 {
		return 0
	}
	w := unsafe.Slice((*float32)(unsafe.Pointer(&row[:4*n][0])), n)
	var a0, a1, a2, a3 f32x16
	i := 0
	for ; i+64 <= n; i += 64 {
		a0 = ldx(w, i).MulAdd(ldx(x, i), a0)
		a1 = ldx(w, i+16).MulAdd(ldx(x, i+16), a1)
		a2 = ldx(w, i+32).MulAdd(ldx(x, i+32), a2)
		a3 = ldx(w, i+48).MulAdd(ldx(x, i+48), a3)
	}
	for ; i+16 <= n; i += 16 {
		a0 = ldx(w, i).MulAdd(ldx(x, i), a0)
	}
	s := hsum16(a0.Add(a1).Add(a2.Add(a3)))
	for ; i < n; i++ {
		s += w[i] * x[i]
	}
	return s
}

// f16x16 converts 16 binary16 values at b[off:] exactly: the exponent and
// mantissa bits shifted into float32 position and scaled by 2^112 give every
// finite value (subnormals included); exponent 31 becomes Inf/NaN.
func f16x16(b []byte, off int) f32x16 {
	h := archsimd.LoadUint16x16((*[16]uint16)(unsafe.Pointer(&b[off : off+32][0]))).ExtendToUint32().AsInt32x16()
	em := h.And(archsimd.BroadcastInt32x16(0x7fff)).ShiftAllLeft(13)
	f := em.AsFloat32x16().Mul(bcast(0x1p112))
	inf := em.Or(archsimd.BroadcastInt32x16(0x7f800000)).AsFloat32x16()
	f = inf.Merge(f, em.GreaterEqual(archsimd.BroadcastInt32x16(0x0f800000)))
	sign := h.And(archsimd.BroadcastInt32x16(0x8000)).ShiftAllLeft(16)
	return f.AsInt32x16().Or(sign).AsFloat32x16()
}

func dotF16SIMD(row []byte, x, _ []float32) float32 {
	n := len(x)
	var a0, a1 f32x16
	i := 0
	for ; i+32 <= n; i += 32 {
		a0 = f16x16(row, 2*i).MulAdd(ldx(x, i), a0)
		a1 = f16x16(row, 2*i+32).MulAdd(ldx(x, i+16), a1)
	}
	for ; i+16 <= n; i += 16 {
		a0 = f16x16(row, 2*i).MulAdd(ldx(x, i), a0)
	}
	s := hsum16(a0.Add(a1))
	for ; i < n; i++ {
		s += f16At(row, 2*i) * x[i]
	}
	return s
}

func bf16x16(b []byte, off int) f32x16 {
	h := archsimd.LoadUint16x16((*[16]uint16)(unsafe.Pointer(&b[off : off+32][0]))).ExtendToUint32()
	return h.AsInt32x16().ShiftAllLeft(16).AsFloat32x16()
}

func dotBF16SIMD(row []byte, x, _ []float32) float32 {
	n := len(x)
	var a0, a1 f32x16
	i := 0
	for ; i+32 <= n; i += 32 {
		a0 = bf16x16(row, 2*i).MulAdd(ldx(x, i), a0)
		a1 = bf16x16(row, 2*i+32).MulAdd(ldx(x, i+16), a1)
	}
	for ; i+16 <= n; i += 16 {
		a0 = bf16x16(row, 2*i).MulAdd(ldx(x, i), a0)
	}
	s := hsum16(a0.Add(a1))
	for ; i < n; i++ {
		s += math.Float32frombits(uint32(binary.LittleEndian.Uint16(row[2*i:]))<<16) * x[i]
	}
	return s
}

func dotQ8_0F32SIMD(row []byte, x, _ []float32) float32 {
	var a0, a1 f32x16
	for i := 0; i < len(x)/32; i++ {
		b := row[i*34 : i*34+34]
		q0 := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[2]))).ExtendToInt32().ConvertToFloat32()
		q1 := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[18]))).ExtendToInt32().ConvertToFloat32()
		p := q1.MulAdd(ldx(x, 32*i+16), q0.Mul(ldx(x, 32*i)))
		if i&1 == 0 {
			a0 = p.MulAdd(bcast(f16At(b, 0)), a0)
		} else {
			a1 = p.MulAdd(bcast(f16At(b, 0)), a1)
		}
	}
	return hsum16(a0.Add(a1))
}

func dotQ4_0F32SIMD(row []byte, x, _ []float32) float32 {
	var a0, a1 f32x16
	m15 := archsimd.BroadcastInt32x16(15)
	c8 := archsimd.BroadcastInt32x16(8)
	for i := 0; i < len(x)/32; i++ {
		b := row[i*18 : i*18+18]
		v := u8to32(b, 2)
		lo := v.And(m15).Sub(c8).ConvertToFloat32()
		hi := v.ShiftAllRight(4).Sub(c8).ConvertToFloat32()
		p := hi.MulAdd(ldx(x, 32*i+16), lo.Mul(ldx(x, 32*i)))
		if i&1 == 0 {
			a0 = p.MulAdd(bcast(f16At(b, 0)), a0)
		} else {
			a1 = p.MulAdd(bcast(f16At(b, 0)), a1)
		}
	}
	return hsum16(a0.Add(a1))
}

// scalesF32 returns the eight 6-bit values packed one per byte in v as a
// float32 vector.
func scalesF32(v uint64) f32x8 {
	var z archsimd.Uint64x2
	return z.SetElem(0, v).AsUint8x16().ExtendLo8ToUint32().AsInt32x8().ConvertToFloat32()
}

// q4kGroup accumulates group g of a Q4_K block against x[64g:64g+64]:
// nibbles of qs[32g:32g+32]; low ones (sub-block 2g) into a0 scaled by s0,
// high ones (sub-block 2g+1) into a1 scaled by s1.
func q4kGroup(a0, a1 f32x16, b []byte, off int, xb []float32, s0, s1 float32, m15 i32x16) (f32x16, f32x16) {
	v0 := u8to32(b, off)
	v1 := u8to32(b, off+16)
	l0 := v0.And(m15).ConvertToFloat32()
	l1 := v1.And(m15).ConvertToFloat32()
	h0 := v0.ShiftAllRight(4).ConvertToFloat32()
	h1 := v1.ShiftAllRight(4).ConvertToFloat32()
	pl := l1.MulAdd(ldx(xb, 16), l0.Mul(ldx(xb, 0)))
	ph := h1.MulAdd(ldx(xb, 48), h0.Mul(ldx(xb, 32)))
	return pl.MulAdd(bcast(s0), a0), ph.MulAdd(bcast(s1), a1)
}

func dotQ4_KF32SIMD(row []byte, x, xs []float32) float32 {
	var a0, a1 f32x16
	var macc f32x8
	m15 := archsimd.BroadcastInt32x16(15)
	var s [8]float32
	for i := 0; i < len(x)/256; i++ {
		b := row[i*144 : i*144+144]
		xb := x[i*256 : i*256+256]
		d, dmin := f16At(b, 0), f16At(b, 2)
		sc, m := scalesK4(b[quant.Q4_KOffScales:])
		scalesF32(sc).Mul(archsimd.BroadcastFloat32x8(d)).Store(&s)
		macc = scalesF32(m).Mul(archsimd.BroadcastFloat32x8(dmin)).MulAdd(archsimd.LoadFloat32x8((*[8]float32)(xs[8*i:8*i+8])), macc)
		a0, a1 = q4kGroup(a0, a1, b, 16, xb[0:64], s[0], s[1], m15)
		a0, a1 = q4kGroup(a0, a1, b, 48, xb[64:128], s[2], s[3], m15)
		a0, a1 = q4kGroup(a0, a1, b, 80, xb[128:192], s[4], s[5], m15)
		a0, a1 = q4kGroup(a0, a1, b, 112, xb[192:256], s[6], s[7], m15)
	}
	return hsum16(a0.Add(a1)) - hsum8(macc)
}

// q5kGroup is q4kGroup plus the fifth bits: bit 2g (low) and 2g+1 (high)
// of the qh bytes h0, h1 (zero-extended), moved to bit 4 by shl.
func q5kGroup(a0, a1 f32x16, b []byte, off int, h0, h1 i32x16, g uint, xb []float32, s0, s1 float32, m15, m16 i32x16) (f32x16, f32x16) {
	v0 := u8to32(b, off)
	v1 := u8to32(b, off+16)
	l0 := v0.And(m15).Or(h0.ShiftAllLeft(4).ShiftAllRight(uint64(2 * g)).And(m16)).ConvertToFloat32()
	l1 := v1.And(m15).Or(h1.ShiftAllLeft(4).ShiftAllRight(uint64(2 * g)).And(m16)).ConvertToFloat32()
	u0 := v0.ShiftAllRight(4).Or(h0.ShiftAllLeft(3).ShiftAllRight(uint64(2 * g)).And(m16)).ConvertToFloat32()
	u1 := v1.ShiftAllRight(4).Or(h1.ShiftAllLeft(3).ShiftAllRight(uint64(2 * g)).And(m16)).ConvertToFloat32()
	pl := l1.MulAdd(ldx(xb, 16), l0.Mul(ldx(xb, 0)))
	ph := u1.MulAdd(ldx(xb, 48), u0.Mul(ldx(xb, 32)))
	return pl.MulAdd(bcast(s0), a0), ph.MulAdd(bcast(s1), a1)
}

func dotQ5_KF32SIMD(row []byte, x, xs []float32) float32 {
	var a0, a1 f32x16
	var macc f32x8
	m15 := archsimd.BroadcastInt32x16(15)
	m16 := archsimd.BroadcastInt32x16(16)
	var s [8]float32
	for i := 0; i < len(x)/256; i++ {
		b := row[i*176 : i*176+176]
		xb := x[i*256 : i*256+256]
		d, dmin := f16At(b, 0), f16At(b, 2)
		sc, m := scalesK4(b[quant.Q5_KOffScales:])
		scalesF32(sc).Mul(archsimd.BroadcastFloat32x8(d)).Store(&s)
		macc = scalesF32(m).Mul(archsimd.BroadcastFloat32x8(dmin)).MulAdd(archsimd.LoadFloat32x8((*[8]float32)(xs[8*i:8*i+8])), macc)
		h0 := u8to32(b, quant.Q5_KOffQh)
		h1 := u8to32(b, quant.Q5_KOffQh+16)
		const qs = quant.Q5_KOffQs
		a0, a1 = q5kGroup(a0, a1, b, qs, h0, h1, 0, xb[0:64], s[0], s[1], m15, m16)
		a0, a1 = q5kGroup(a0, a1, b, qs+32, h0, h1, 1, xb[64:128], s[2], s[3], m15, m16)
		a0, a1 = q5kGroup(a0, a1, b, qs+64, h0, h1, 2, xb[128:192], s[4], s[5], m15, m16)
		a0, a1 = q5kGroup(a0, a1, b, qs+96, h0, h1, 3, xb[192:256], s[6], s[7], m15, m16)
	}
	return hsum16(a0.Add(a1)) - hsum8(macc)
}

func dotQ6_KF32SIMD(row []byte, x, _ []float32) float32 {
	var a0, a1, a2, a3 f32x16
	m15 := archsimd.BroadcastInt32x16(15)
	m3 := archsimd.BroadcastInt32x16(3)
	m48 := archsimd.BroadcastInt32x16(0x30)
	c32 := archsimd.BroadcastInt32x16(32)
	for i := 0; i < len(x)/256; i++ {
		b := row[i*210 : i*210+210]
		d := f16At(b, quant.Q6_KOffD)
		sc := b[quant.Q6_KOffScales : quant.Q6_KOffScales+16]
		for h := 0; h < 2; h++ {
			xh := x[256*i+128*h : 256*i+128*h+128]
			for c := 0; c < 2; c++ { // values l = 16c..16c+15 of each quarter: sub-blocks 8h+c+2k
				ql0 := u8to32(b, quant.Q6_KOffQl+64*h+16*c)
				ql1 := u8to32(b, quant.Q6_KOffQl+64*h+32+16*c)
				qh := u8to32(b, quant.Q6_KOffQh+32*h+16*c)
				q1 := ql0.And(m15).Or(qh.And(m3).ShiftAllLeft(4)).Sub(c32).ConvertToFloat32()
				q2 := ql1.And(m15).Or(qh.ShiftAllLeft(2).And(m48)).Sub(c32).ConvertToFloat32()
				q3 := ql0.ShiftAllRight(4).Or(qh.And(m48)).Sub(c32).ConvertToFloat32()
				q4 := ql1.ShiftAllRight(4).Or(qh.ShiftAllRight(2).And(m48)).Sub(c32).ConvertToFloat32()
				is := 8*h + c
				a0 = q1.Mul(ldx(xh, 16*c)).MulAdd(bcast(d*float32(int8(sc[is]))), a0)
				a1 = q2.Mul(ldx(xh, 32+16*c)).MulAdd(bcast(d*float32(int8(sc[is+2]))), a1)
				a2 = q3.Mul(ldx(xh, 64+16*c)).MulAdd(bcast(d*float32(int8(sc[is+4]))), a2)
				a3 = q4.Mul(ldx(xh, 96+16*c)).MulAdd(bcast(d*float32(int8(sc[is+6]))), a3)
			}
		}
	}
	return hsum16(a0.Add(a1).Add(a2.Add(a3)))
}

// ---- 8-bit activations ----

func dotQ8_0Q8SIMD(row []byte, a []act32) float32 {
	var a0, a1 f32x16
	for i := range a {
		b := row[i*34 : i*34+34]
		w := archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[2]))).ExtendToInt16()
		q := archsimd.LoadInt8x32(&a[i].qs).ExtendToInt16()
		p := w.DotProductPairs(q).ConvertToFloat32()
		if i&1 == 0 {
			a0 = p.MulAdd(bcast(f16At(b, 0)*a[i].d), a0)
		} else {
			a1 = p.MulAdd(bcast(f16At(b, 0)*a[i].d), a1)
		}
	}
	return hsum16(a0.Add(a1))
}

func dotQ4_0Q8SIMD(row []byte, a []act32) float32 {
	var acc f32x8
	var corr float32
	m15 := archsimd.BroadcastUint8x16(15)
	ones := archsimd.BroadcastInt16x16(1)
	for i := range a {
		b := row[i*18 : i*18+18]
		v := ld16u8(b, 2)
		var w archsimd.Uint8x32
		w = w.SetLo(v.And(m15)).SetHi(v.AsUint16x8().ShiftAllRight(4).AsUint8x16().And(m15))
		p := w.DotProductPairsSaturated(archsimd.LoadInt8x32(&a[i].qs)).DotProductPairs(ones).ConvertToFloat32()
		s := f16At(b, 0) * a[i].d
		acc = p.MulAdd(archsimd.BroadcastFloat32x8(s), acc)
		corr += s * float32(a[i].sum)
	}
	return hsum8(acc) - 8*corr
}

// k4ScaleIdx are the byte shuffles (within each 128-bit lane) that turn
// eight scale bytes, repeated in every lane, into the int16 scale vectors
// of a Q4_K/Q5_K block in K4 order: vector k multiplies the lanes of
// sub-blocks (0,2), (1,3), (4,6), (5,7) for k = 0..3. Index −1 gives 0, the
// high byte of each int16.
var k4ScaleIdx = func() (r [4]archsimd.Int8x64) {
	subs := [4][2]int8{{0, 2}, {1, 3}, {4, 6}, {5, 7}}
	for k := range 4 {
		var b [64]int8
		for lane := range 32 {
			b[2*lane] = subs[k][lane/16]
			b[2*lane+1] = -1
		}
		r[k] = archsimd.LoadInt8x64(&b)
	}
	return r
}()

func ldact(a *actK, off int) archsimd.Int8x64 {
	return archsimd.LoadInt8x64((*[64]int8)(a.qs[off : off+64]))
}

func dotQ4_KQ8SIMD(row []byte, a []actK) float32 {
	var facc f32x16
	var macc f32x8
	m15 := archsimd.BroadcastUint8x64(15)
	i0, i1, i2, i3 := k4ScaleIdx[0], k4ScaleIdx[1], k4ScaleIdx[2], k4ScaleIdx[3]
	for i := range a {
		b := row[i*144 : i*144+144]
		ab := &a[i]
		sc, m := scalesK4(b[quant.Q4_KOffScales:])
		var z archsimd.Uint64x2
		scv := z.SetElem(0, sc).Broadcast1To8().AsUint8x64()
		A := ld64u8(b, quant.Q4_KOffQs)
		B := ld64u8(b, quant.Q4_KOffQs+64)
		la := A.And(m15)
		ha := A.AsUint16x32().ShiftAllRight(4).AsUint8x64().And(m15)
		lb := B.And(m15)
		hb := B.AsUint16x32().ShiftAllRight(4).AsUint8x64().And(m15)
		p0 := la.DotProductPairsSaturated(ldact(ab, 0)).DotProductPairs(scv.PermuteOrZeroGrouped(i0).AsInt16x32())
		p1 := ha.DotProductPairsSaturated(ldact(ab, 64)).DotProductPairs(scv.PermuteOrZeroGrouped(i1).AsInt16x32())
		p2 := lb.DotProductPairsSaturated(ldact(ab, 128)).DotProductPairs(scv.PermuteOrZeroGrouped(i2).AsInt16x32())
		p3 := hb.DotProductPairsSaturated(ldact(ab, 192)).DotProductPairs(scv.PermuteOrZeroGrouped(i3).AsInt16x32())
		sum := p0.Add(p1).Add(p2.Add(p3))
		facc = sum.ConvertToFloat32().MulAdd(bcast(f16At(b, 0)*ab.d), facc)
		macc = scalesF32(m).Mul(archsimd.BroadcastFloat32x8(f16At(b, 2))).MulAdd(archsimd.LoadFloat32x8(&ab.ms), macc)
	}
	return hsum16(facc) - hsum8(macc)
}

func dotQ5_KQ8SIMD(row []byte, a []actK) float32 {
	var facc f32x16
	var macc f32x8
	m15 := archsimd.BroadcastUint8x64(15)
	b1 := archsimd.BroadcastUint8x64(1)
	b2 := archsimd.BroadcastUint8x64(2)
	i0, i1, i2, i3 := k4ScaleIdx[0], k4ScaleIdx[1], k4ScaleIdx[2], k4ScaleIdx[3]
	for i := range a {
		b := row[i*176 : i*176+176]
		ab := &a[i]
		sc, m := scalesK4(b[quant.Q5_KOffScales:])
		var z archsimd.Uint64x2
		scv := z.SetElem(0, sc).Broadcast1To8().AsUint8x64()
		// qh bit 2g+e is the fifth bit of group g, low (e=0) or high (e=1)
		// nibbles. In K4 order, 64-byte vector A holds groups 0 and 1, B
		// groups 2 and 3: put qh>>0 | qh>>2 (A) and qh>>4 | qh>>6 (B) side by
		// side so that bits 0 and 1 of each byte are the ones needed.
		qh := ld32u8(b, quant.Q5_KOffQh).AsUint16x16()
		var hA, hB archsimd.Uint8x64
		hA = hA.SetLo(qh.AsUint8x32()).SetHi(qh.ShiftAllRight(2).AsUint8x32())
		hB = hB.SetLo(qh.ShiftAllRight(4).AsUint8x32()).SetHi(qh.ShiftAllRight(6).AsUint8x32())
		A := ld64u8(b, quant.Q5_KOffQs)
		B := ld64u8(b, quant.Q5_KOffQs+64)
		la := A.And(m15).Or(hA.And(b1).AsUint16x32().ShiftAllLeft(4).AsUint8x64())
		ha := A.AsUint16x32().ShiftAllRight(4).AsUint8x64().And(m15).Or(hA.And(b2).AsUint16x32().ShiftAllLeft(3).AsUint8x64())
		lb := B.And(m15).Or(hB.And(b1).AsUint16x32().ShiftAllLeft(4).AsUint8x64())
		hb := B.AsUint16x32().ShiftAllRight(4).AsUint8x64().And(m15).Or(hB.And(b2).AsUint16x32().ShiftAllLeft(3).AsUint8x64())
		p0 := la.DotProductPairsSaturated(ldact(ab, 0)).DotProductPairs(scv.PermuteOrZeroGrouped(i0).AsInt16x32())
		p1 := ha.DotProductPairsSaturated(ldact(ab, 64)).DotProductPairs(scv.PermuteOrZeroGrouped(i1).AsInt16x32())
		p2 := lb.DotProductPairsSaturated(ldact(ab, 128)).DotProductPairs(scv.PermuteOrZeroGrouped(i2).AsInt16x32())
		p3 := hb.DotProductPairsSaturated(ldact(ab, 192)).DotProductPairs(scv.PermuteOrZeroGrouped(i3).AsInt16x32())
		sum := p0.Add(p1).Add(p2.Add(p3))
		facc = sum.ConvertToFloat32().MulAdd(bcast(f16At(b, 0)*ab.d), facc)
		macc = scalesF32(m).Mul(archsimd.BroadcastFloat32x8(f16At(b, 2))).MulAdd(archsimd.LoadFloat32x8(&ab.ms), macc)
	}
	return hsum16(facc) - hsum8(macc)
}

// q6ScaleIdx[h][k] picks, from the 16 sign-extended scales of a Q6_K block,
// the int16 scale vector of quarter k of half h: lanes 0-7 scale 8h+2k,
// lanes 8-15 scale 8h+2k+1.
var q6ScaleIdx = func() (r [2][4]archsimd.Uint16x16) {
	for h := range 2 {
		for k := range 4 {
			var b [16]uint16
			for l := range 16 {
				b[l] = uint16(8*h + 2*k + l/8)
			}
			r[h][k] = archsimd.LoadUint16x16(&b)
		}
	}
	return r
}()

func ldact32(a *actK, off int) archsimd.Int8x32 {
	return archsimd.LoadInt8x32((*[32]int8)(a.qs[off : off+32]))
}

func dotQ6_KQ8SIMD(row []byte, a []actK) float32 {
	var facc f32x8
	m15 := archsimd.BroadcastUint8x32(15)
	m3 := archsimd.BroadcastUint8x32(3)
	m12 := archsimd.BroadcastUint8x32(12)
	m48 := archsimd.BroadcastUint8x32(48)
	for i := range a {
		b := row[i*210 : i*210+210]
		ab := &a[i]
		S := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[quant.Q6_KOffScales]))).ExtendToInt16()
		// Weights are q−32: start from −32·Σ sc·(Σa of each 16).
		isum := S.DotProductPairs(archsimd.LoadInt16x16(&ab.bs16)).ShiftAllLeft(5)
		var acc i32x8
		for h := 0; h < 2; h++ {
			ql0 := ld32u8(b, quant.Q6_KOffQl+64*h)
			ql1 := ld32u8(b, quant.Q6_KOffQl+64*h+32)
			qh := ld32u8(b, quant.Q6_KOffQh+32*h)
			q0 := ql0.And(m15).Or(qh.And(m3).AsUint16x16().ShiftAllLeft(4).AsUint8x32())
			q1 := ql1.And(m15).Or(qh.And(m12).AsUint16x16().ShiftAllLeft(2).AsUint8x32())
			q2 := ql0.AsUint16x16().ShiftAllRight(4).AsUint8x32().And(m15).Or(qh.And(m48))
			q3 := ql1.AsUint16x16().ShiftAllRight(4).AsUint8x32().And(m15).Or(qh.AsUint16x16().ShiftAllRight(2).AsUint8x32().And(m48))
			idx := &q6ScaleIdx[h]
			acc = acc.Add(q0.DotProductPairsSaturated(ldact32(ab, 128*h)).DotProductPairs(S.Permute(idx[0])))
			acc = acc.Add(q1.DotProductPairsSaturated(ldact32(ab, 128*h+32)).DotProductPairs(S.Permute(idx[1])))
			acc = acc.Add(q2.DotProductPairsSaturated(ldact32(ab, 128*h+64)).DotProductPairs(S.Permute(idx[2])))
			acc = acc.Add(q3.DotProductPairsSaturated(ldact32(ab, 128*h+96)).DotProductPairs(S.Permute(idx[3])))
		}
		facc = acc.Sub(isum).ConvertToFloat32().MulAdd(archsimd.BroadcastFloat32x8(f16At(b, quant.Q6_KOffD)*ab.d), facc)
	}
	return hsum8(facc)
}

// ---- activation quantizers ----

func absMask() i32x16 { return archsimd.BroadcastInt32x16(0x7fffffff) }

func hmax16(v f32x16) float32 {
	m := v.GetLo().Max(v.GetHi())
	n := m.GetLo().Max(m.GetHi())
	var t [4]float32
	n.Store(&t)
	return max(max(t[0], t[1]), max(t[2], t[3]))
}

// quantizeKSIMD is quantizeKGeneric with vectors; it writes the same bytes.
func quantizeKSIMD(dst []actK, x []float32, k4 bool) {
	am := absMask()
	for i := range len(x) / quant.QK_K {
		xb := x[i*quant.QK_K : (i+1)*quant.QK_K]
		a := &dst[i]
		var vmax f32x16
		for j := 0; j < 256; j += 16 {
			vmax = vmax.Max(ldx(xb, j).AsInt32x16().And(am).AsFloat32x16())
		}
		amax := hmax16(vmax)
		if amax == 0 || amax != amax {
			quantizeKGeneric(dst[i:i+1], xb, k4) // zero (or NaN) block: the twin's rules
			continue
		}
		// ggml scales by −127/max where max is the first value of largest
		// magnitude; find it.
		var mx float32
		va := bcast(amax)
		for j := 0; j < 256; j += 16 {
			if bits := ldx(xb, j).AsInt32x16().And(am).AsFloat32x16().Equal(va).ToBits(); bits != 0 {
				mx = xb[j+trailingZeros16(bits)]
				break
			}
		}
		iscale := -127 / mx
		a.d = 1 / iscale
		vs := bcast(iscale)
		for j := 0; j < 256; j += 16 {
			q := ldx(xb, j).Mul(vs).RoundToEvenScaled(0).ConvertToInt32().SaturateToInt8()
			pos := j
			if k4 {
				pos = int(k4Pos[j])
			}
			q.Store((*[16]int8)(a.qs[pos : pos+16]))
		}
		for j := range 16 {
			p := j * 16
			if k4 {
				p = int(k4Pos[p])
			}
			s := 0
			for _, v := range a.qs[p : p+16] {
				s += int(v)
			}
			a.bs16[j] = int16(s)
		}
		for j := range 8 {
			a.ms[j] = a.d * float32(int(a.bs16[2*j])+int(a.bs16[2*j+1]))
		}
		for j := range 16 {
			a.ms16[j] = a.d * float32(a.bs16[j])
		}
	}
}

func trailingZeros16(b uint16) int {
	n := 0
	for b&1 == 0 {
		b >>= 1
		n++
	}
	return n
}

// quantize32SIMD is quantize32Generic with vectors; it writes the same bytes.
func quantize32SIMD(dst []act32, x []float32) {
	am := absMask()
	for i := range len(x) / 32 {
		x0, x1 := ldx(x, 32*i), ldx(x, 32*i+16)
		amax := hmax16(x0.AsInt32x16().And(am).AsFloat32x16().Max(x1.AsInt32x16().And(am).AsFloat32x16()))
		a := &dst[i]
		if amax != amax {
			quantize32Generic(dst[i:i+1], x[32*i:32*i+32])
			continue
		}
		a.d = amax / 127
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		vid := bcast(id)
		q0 := x0.Mul(vid).RoundToEvenScaled(0).ConvertToInt32()
		q1 := x1.Mul(vid).RoundToEvenScaled(0).ConvertToInt32()
		q0.SaturateToInt8().Store((*[16]int8)(a.qs[0:16]))
		q1.SaturateToInt8().Store((*[16]int8)(a.qs[16:32]))
		var t [16]int32
		q0.Add(q1).Store(&t)
		var s int32
		for _, v := range t {
			s += v
		}
		a.sum = s
	}
}

func sums32SIMD(xs, x []float32) {
	for i := range xs {
		xs[i] = hsum16(ldx(x, 32*i).Add(ldx(x, 32*i+16)))
	}
}
