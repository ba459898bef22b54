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
	// The shuffle tables are vectors: making them runs AVX-512
	// instructions, so they are made here, not as package variables
	// (which crashed the SIMD build with SIGILL on an AVX2-only CPU).
	natScaleIdx, k4ScaleIdx, q6ScaleIdx = makeNatScaleIdx(), makeK4ScaleIdx(), makeQ6ScaleIdx()
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
	k.q832x4[gguf.Q8_0] = dotQ8_0Q8x4SIMD
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
	f32x4  = archsimd.Float32x4
	i32x16 = archsimd.Int32x16
	i32x8  = archsimd.Int32x8
)

// No legacy SSE in vector code. Intel CPUs stall on every legacy-SSE
// (non-VEX) instruction run while the upper halves of the vector registers
// are dirty, and the Go compiler emits legacy SSE for all scalar float code,
// for a float32 result and for the count of ShiftAllLeft/ShiftAllRight
// (golang/go#80835). So these kernels
//   - shift by vectors of counts (ShiftLeft/ShiftRight with a broadcast
//     count), never by a scalar;
//   - take float32 scales into vectors as bits (bcastp, f16v: an integer
//     load and VPBROADCASTD, where a float32 load is a MOVSS) and multiply
//     them as vectors, which rounds exactly as the scalar product did;
//   - reduce to lane 0 of a vector (hsum16v, hsum8v) and leave through
//     ret/ret2, which run VZEROUPPER (archsimd.ClearAVXUpperBits) and only
//     then make a float32 of it;
//   - run VZEROUPPER before any scalar tail or call into scalar code.
// The compiler schedules ClearAVXUpperBits as early in its block as its
// memory order allows, ahead of pure vector arithmetic (which it then runs
// after it, on spilled copies), and it spills float32 and 128-bit values
// live across it with legacy MOVSS/MOVUPS. So ClearAVXUpperBits is either
// the first thing after a loop with no float32 or 128-bit value live across
// it, or in clearUpper, which takes and returns integer bits. Arrays are not
// zeroed in vector code either (the compiler zeroes with MOVUPS): lanes are
// picked with permutes (laneIdx) instead.
// TestNoLegacySSE checks every function of the *_simd.go files for this in
// the disassembly.

// hsum16v and hsum8v leave the sum of v's lanes in lane 0.
func hsum16v(v f32x16) f32x4 { return hsum8v(v.GetLo().Add(v.GetHi())) }

func hsum8v(v f32x8) f32x4 {
	s := v.GetLo().Add(v.GetHi())
	s = s.AddPairs(s)
	return s.AddPairs(s)
}

// clearUpper runs VZEROUPPER and returns its arguments: a call orders it
// after the vector code that computed them, and before the scalar code that
// uses the results.
//
//go:noinline
func clearUpper(a, b uint64) (uint64, uint64) {
	archsimd.ClearAVXUpperBits()
	return a, b
}

// ret returns lane 0 of v as a scalar, with the upper state cleared.
func ret(v f32x4) float32 {
	b, _ := clearUpper(uint64(v.AsUint32x4().GetElem(0)), 0)
	return math.Float32frombits(uint32(b))
}

// ret2 is ret for lane 0 of two vectors.
func ret2(v, w f32x4) (float32, float32) {
	b, c := clearUpper(uint64(v.AsUint32x4().GetElem(0)), uint64(w.AsUint32x4().GetElem(0)))
	return math.Float32frombits(uint32(b)), math.Float32frombits(uint32(c))
}

// laneIdx[k] picks lane k into every lane (with Permute).
var laneIdx = func() (r [16][16]uint32) {
	for k := range r {
		for j := range r[k] {
			r[k][j] = uint32(k)
		}
	}
	return r
}()

// lane broadcasts lane k of v.
func lane(v f32x16, k int) f32x16 { return v.Permute(archsimd.LoadUint32x16(&laneIdx[k])) }

// hsum16 and hsum8 return the sum of v's lanes with the upper state
// cleared (the end of a kernel).
func hsum16(v f32x16) float32 { return ret(hsum16v(v)) }
func hsum8(v f32x8) float32   { return ret(hsum8v(v)) }

func bcast(f float32) f32x16 { return archsimd.BroadcastFloat32x16(f) }

// bcastp and bcast8p broadcast *p, loaded as bits.
func bcastp(p *float32) f32x16 {
	return archsimd.BroadcastUint32x16(*(*uint32)(unsafe.Pointer(p))).AsFloat32x16()
}
func bcast8p(p *float32) f32x8 {
	return archsimd.BroadcastUint32x8(*(*uint32)(unsafe.Pointer(p))).AsFloat32x8()
}

// f16Bits is f16Table as bits; f16v and f16v8 broadcast the binary16 scale
// at b[off:].
var f16Bits = (*[1 << 16]uint32)(unsafe.Pointer(f16Table))

func f16v(b []byte, off int) f32x16 {
	return archsimd.BroadcastUint32x16(f16Bits[binary.LittleEndian.Uint16(b[off:])]).AsFloat32x16()
}
func f16v8(b []byte, off int) f32x8 {
	return archsimd.BroadcastUint32x8(f16Bits[binary.LittleEndian.Uint16(b[off:])]).AsFloat32x8()
}

// setF16 stores the binary16 value at b[off:] into *p as bits.
func setF16(p *float32, b []byte, off int) {
	*(*uint32)(unsafe.Pointer(p)) = f16Bits[binary.LittleEndian.Uint16(b[off:])]
}

// Shift counts as vectors.
func cnt32(n int32) i32x16              { return archsimd.BroadcastInt32x16(n) }
func cnt16(n uint16) archsimd.Uint16x32 { return archsimd.BroadcastUint16x32(n) }
func cnt16y(n uint16) archsimd.Uint16x16 {
	return archsimd.BroadcastUint16x16(n)
}

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
	s := ret(hsum16v(a0.Add(a1).Add(a2.Add(a3))))
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
	em := h.And(archsimd.BroadcastInt32x16(0x7fff)).ShiftLeft(cnt32(13))
	f := em.AsFloat32x16().Mul(bcast(0x1p112))
	inf := em.Or(archsimd.BroadcastInt32x16(0x7f800000)).AsFloat32x16()
	f = inf.Merge(f, em.GreaterEqual(archsimd.BroadcastInt32x16(0x0f800000)))
	sign := h.And(archsimd.BroadcastInt32x16(0x8000)).ShiftLeft(cnt32(16))
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
	s := ret(hsum16v(a0.Add(a1)))
	for ; i < n; i++ {
		s += f16At(row, 2*i) * x[i]
	}
	return s
}

func bf16x16(b []byte, off int) f32x16 {
	h := archsimd.LoadUint16x16((*[16]uint16)(unsafe.Pointer(&b[off : off+32][0]))).ExtendToUint32()
	return h.AsInt32x16().ShiftLeft(cnt32(16)).AsFloat32x16()
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
	s := ret(hsum16v(a0.Add(a1)))
	for ; i < n; i++ {
		s += math.Float32frombits(uint32(binary.LittleEndian.Uint16(row[2*i:]))<<16) * x[i]
	}
	return s
}

// q8f32blk adds the share of the Q8_0 block at b[off:] against x[32i:] to
// acc.
func q8f32blk(b []byte, off int, x []float32, i int, acc f32x16) f32x16 {
	q0 := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[off+2]))).ExtendToInt32().ConvertToFloat32()
	q1 := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[off+18]))).ExtendToInt32().ConvertToFloat32()
	p := q1.MulAdd(ldx(x, 32*i+16), q0.Mul(ldx(x, 32*i)))
	return p.MulAdd(f16v(b, off), acc)
}

// dotQ8_0F32SIMD sums the even blocks into a0 and the odd ones into a1.
func dotQ8_0F32SIMD(row []byte, x, _ []float32) float32 {
	var a0, a1 f32x16
	nb := len(x) / 32
	i := 0
	for ; i+2 <= nb; i += 2 {
		b := row[i*34 : i*34+68]
		a0 = q8f32blk(b, 0, x, i, a0)
		a1 = q8f32blk(b, 34, x, i+1, a1)
	}
	if i < nb {
		a0 = q8f32blk(row[i*34:i*34+34], 0, x, i, a0)
	}
	return hsum16(a0.Add(a1))
}

func dotQ4_0F32SIMD(row []byte, x, _ []float32) float32 {
	var a0, a1 f32x16
	m15 := archsimd.BroadcastInt32x16(15)
	c8 := archsimd.BroadcastInt32x16(8)
	c4 := cnt32(4)
	for i := 0; i < len(x)/32; i++ {
		b := row[i*18 : i*18+18]
		v := u8to32(b, 2)
		lo := v.And(m15).Sub(c8).ConvertToFloat32()
		hi := v.ShiftRight(c4).Sub(c8).ConvertToFloat32()
		p := hi.MulAdd(ldx(x, 32*i+16), lo.Mul(ldx(x, 32*i)))
		if i&1 == 0 {
			a0 = p.MulAdd(f16v(b, 0), a0)
		} else {
			a1 = p.MulAdd(f16v(b, 0), a1)
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
func q4kGroup(a0, a1 f32x16, b []byte, off int, xb []float32, s0, s1 f32x16, m15, c4 i32x16) (f32x16, f32x16) {
	v0 := u8to32(b, off)
	v1 := u8to32(b, off+16)
	l0 := v0.And(m15).ConvertToFloat32()
	l1 := v1.And(m15).ConvertToFloat32()
	h0 := v0.ShiftRight(c4).ConvertToFloat32()
	h1 := v1.ShiftRight(c4).ConvertToFloat32()
	pl := l1.MulAdd(ldx(xb, 16), l0.Mul(ldx(xb, 0)))
	ph := h1.MulAdd(ldx(xb, 48), h0.Mul(ldx(xb, 32)))
	return pl.MulAdd(s0, a0), ph.MulAdd(s1, a1)
}

func dotQ4_KF32SIMD(row []byte, x, xs []float32) float32 {
	var a0, a1 f32x16
	var macc f32x8
	m15 := archsimd.BroadcastInt32x16(15)
	c4 := cnt32(4)
	for i := 0; i < len(x)/256; i++ {
		b := row[i*144 : i*144+144]
		xb := x[i*256 : i*256+256]
		sc, m := scalesK4(b[quant.Q4_KOffScales:])
		var s f32x16
		s = s.SetLo(scalesF32(sc).Mul(f16v8(b, 0)))
		macc = scalesF32(m).Mul(f16v8(b, 2)).MulAdd(archsimd.LoadFloat32x8((*[8]float32)(xs[8*i:8*i+8])), macc)
		a0, a1 = q4kGroup(a0, a1, b, 16, xb[0:64], lane(s, 0), lane(s, 1), m15, c4)
		a0, a1 = q4kGroup(a0, a1, b, 48, xb[64:128], lane(s, 2), lane(s, 3), m15, c4)
		a0, a1 = q4kGroup(a0, a1, b, 80, xb[128:192], lane(s, 4), lane(s, 5), m15, c4)
		a0, a1 = q4kGroup(a0, a1, b, 112, xb[192:256], lane(s, 6), lane(s, 7), m15, c4)
	}
	return ret(hsum16v(a0.Add(a1)).Sub(hsum8v(macc)))
}

// q5kGroup is q4kGroup plus the fifth bits: bit 2g (low) and 2g+1 (high)
// of the qh bytes h0, h1 (zero-extended), moved to bit 4 by shl; g2 holds
// 2g in every lane.
func q5kGroup(a0, a1 f32x16, b []byte, off int, h0, h1, g2 i32x16, xb []float32, s0, s1 f32x16, m15, m16 i32x16) (f32x16, f32x16) {
	c3, c4 := cnt32(3), cnt32(4)
	v0 := u8to32(b, off)
	v1 := u8to32(b, off+16)
	l0 := v0.And(m15).Or(h0.ShiftLeft(c4).ShiftRight(g2).And(m16)).ConvertToFloat32()
	l1 := v1.And(m15).Or(h1.ShiftLeft(c4).ShiftRight(g2).And(m16)).ConvertToFloat32()
	u0 := v0.ShiftRight(c4).Or(h0.ShiftLeft(c3).ShiftRight(g2).And(m16)).ConvertToFloat32()
	u1 := v1.ShiftRight(c4).Or(h1.ShiftLeft(c3).ShiftRight(g2).And(m16)).ConvertToFloat32()
	pl := l1.MulAdd(ldx(xb, 16), l0.Mul(ldx(xb, 0)))
	ph := u1.MulAdd(ldx(xb, 48), u0.Mul(ldx(xb, 32)))
	return pl.MulAdd(s0, a0), ph.MulAdd(s1, a1)
}

func dotQ5_KF32SIMD(row []byte, x, xs []float32) float32 {
	var a0, a1 f32x16
	var macc f32x8
	m15 := archsimd.BroadcastInt32x16(15)
	m16 := archsimd.BroadcastInt32x16(16)
	for i := 0; i < len(x)/256; i++ {
		b := row[i*176 : i*176+176]
		xb := x[i*256 : i*256+256]
		sc, m := scalesK4(b[quant.Q5_KOffScales:])
		var s f32x16
		s = s.SetLo(scalesF32(sc).Mul(f16v8(b, 0)))
		macc = scalesF32(m).Mul(f16v8(b, 2)).MulAdd(archsimd.LoadFloat32x8((*[8]float32)(xs[8*i:8*i+8])), macc)
		h0 := u8to32(b, quant.Q5_KOffQh)
		h1 := u8to32(b, quant.Q5_KOffQh+16)
		const qs = quant.Q5_KOffQs
		a0, a1 = q5kGroup(a0, a1, b, qs, h0, h1, cnt32(0), xb[0:64], lane(s, 0), lane(s, 1), m15, m16)
		a0, a1 = q5kGroup(a0, a1, b, qs+32, h0, h1, cnt32(2), xb[64:128], lane(s, 2), lane(s, 3), m15, m16)
		a0, a1 = q5kGroup(a0, a1, b, qs+64, h0, h1, cnt32(4), xb[128:192], lane(s, 4), lane(s, 5), m15, m16)
		a0, a1 = q5kGroup(a0, a1, b, qs+96, h0, h1, cnt32(6), xb[192:256], lane(s, 6), lane(s, 7), m15, m16)
	}
	return ret(hsum16v(a0.Add(a1)).Sub(hsum8v(macc)))
}

func dotQ6_KF32SIMD(row []byte, x, _ []float32) float32 {
	var a0, a1, a2, a3 f32x16
	m15 := archsimd.BroadcastInt32x16(15)
	m3 := archsimd.BroadcastInt32x16(3)
	m48 := archsimd.BroadcastInt32x16(0x30)
	c32 := archsimd.BroadcastInt32x16(32)
	c2, c4 := cnt32(2), cnt32(4)
	for i := 0; i < len(x)/256; i++ {
		b := row[i*210 : i*210+210]
		sc := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[quant.Q6_KOffScales]))).ExtendToInt32().ConvertToFloat32().Mul(f16v(b, quant.Q6_KOffD)) // d·scale of each sub-block
		for h := 0; h < 2; h++ {
			xh := x[256*i+128*h : 256*i+128*h+128]
			for c := 0; c < 2; c++ { // values l = 16c..16c+15 of each quarter: sub-blocks 8h+c+2k
				ql0 := u8to32(b, quant.Q6_KOffQl+64*h+16*c)
				ql1 := u8to32(b, quant.Q6_KOffQl+64*h+32+16*c)
				qh := u8to32(b, quant.Q6_KOffQh+32*h+16*c)
				q1 := ql0.And(m15).Or(qh.And(m3).ShiftLeft(c4)).Sub(c32).ConvertToFloat32()
				q2 := ql1.And(m15).Or(qh.ShiftLeft(c2).And(m48)).Sub(c32).ConvertToFloat32()
				q3 := ql0.ShiftRight(c4).Or(qh.And(m48)).Sub(c32).ConvertToFloat32()
				q4 := ql1.ShiftRight(c4).Or(qh.ShiftRight(c2).And(m48)).Sub(c32).ConvertToFloat32()
				is := 8*h + c
				a0 = q1.Mul(ldx(xh, 16*c)).MulAdd(lane(sc, is), a0)
				a1 = q2.Mul(ldx(xh, 32+16*c)).MulAdd(lane(sc, is+2), a1)
				a2 = q3.Mul(ldx(xh, 64+16*c)).MulAdd(lane(sc, is+4), a2)
				a3 = q4.Mul(ldx(xh, 96+16*c)).MulAdd(lane(sc, is+6), a3)
			}
		}
	}
	return hsum16(a0.Add(a1).Add(a2.Add(a3)))
}

// ---- 8-bit activations ----

// dotQ8_0Q8SIMD sums the even blocks into a0 and the odd ones into a1.
func dotQ8_0Q8SIMD(row []byte, a []act32) float32 {
	var a0, a1 f32x16
	nb := len(a)
	i := 0
	for ; i+2 <= nb; i += 2 {
		b := row[i*34 : i*34+68]
		a0 = q8blk(archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[2]))).ExtendToInt16(), f16v(b, 0), &a[i], a0)
		a1 = q8blk(archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[36]))).ExtendToInt16(), f16v(b, 34), &a[i+1], a1)
	}
	if i < nb {
		b := row[i*34 : i*34+34]
		a0 = q8blk(archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[2]))).ExtendToInt16(), f16v(b, 0), &a[i], a0)
	}
	return hsum16(a0.Add(a1))
}

// q8blk adds block a's share of dotQ8_0Q8SIMD to acc: w holds the weights
// sign-extended, dw the weight scale in every lane.
func q8blk(w archsimd.Int16x32, dw f32x16, a *act32, acc f32x16) f32x16 {
	p := w.DotProductPairs(archsimd.LoadInt8x32(&a.qs).ExtendToInt16()).ConvertToFloat32()
	return p.MulAdd(dw.Mul(bcastp(&a.d)), acc)
}

func dotQ8_0Q8x4SIMD(row []byte, a []act32, nb int) (y0, y1, y2, y3 float32) {
	a = a[:4*nb]
	row = row[:34*nb]
	a0, a1, a2, a3 := a[:nb], a[nb:2*nb], a[2*nb:3*nb], a[3*nb:]
	// e for the even blocks, o for the odd ones, as dotQ8_0Q8SIMD's a0, a1.
	var e0, e1, e2, e3, o0, o1, o2, o3 f32x16
	i := 0
	for ; i+2 <= nb; i += 2 {
		b := row[i*34 : i*34+68]
		w := archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[2]))).ExtendToInt16()
		dw := f16v(b, 0)
		e0 = q8blk(w, dw, &a0[i], e0)
		e1 = q8blk(w, dw, &a1[i], e1)
		e2 = q8blk(w, dw, &a2[i], e2)
		e3 = q8blk(w, dw, &a3[i], e3)
		w = archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[36]))).ExtendToInt16()
		dw = f16v(b, 34)
		o0 = q8blk(w, dw, &a0[i+1], o0)
		o1 = q8blk(w, dw, &a1[i+1], o1)
		o2 = q8blk(w, dw, &a2[i+1], o2)
		o3 = q8blk(w, dw, &a3[i+1], o3)
	}
	if i < nb {
		b := row[i*34 : i*34+34]
		w := archsimd.LoadInt8x32((*[32]int8)(unsafe.Pointer(&b[2]))).ExtendToInt16()
		dw := f16v(b, 0)
		e0 = q8blk(w, dw, &a0[i], e0)
		e1 = q8blk(w, dw, &a1[i], e1)
		e2 = q8blk(w, dw, &a2[i], e2)
		e3 = q8blk(w, dw, &a3[i], e3)
	}
	bits := func(e, o f32x16) uint64 { return uint64(hsum16v(e.Add(o)).AsUint32x4().GetElem(0)) }
	lo, hi := clearUpper(bits(e0, o0)|bits(e1, o1)<<32, bits(e2, o2)|bits(e3, o3)<<32)
	f := math.Float32frombits
	return f(uint32(lo)), f(uint32(lo >> 32)), f(uint32(hi)), f(uint32(hi >> 32))
}

func dotQ4_0Q8SIMD(row []byte, a []act32) float32 {
	var acc, corr f32x8 // corr: Σ s·sum in every lane
	m15 := archsimd.BroadcastUint8x16(15)
	ones := archsimd.BroadcastInt16x16(1)
	c4 := archsimd.BroadcastUint16x8(4)
	for i := range a {
		b := row[i*18 : i*18+18]
		v := ld16u8(b, 2)
		var w archsimd.Uint8x32
		w = w.SetLo(v.And(m15)).SetHi(v.AsUint16x8().ShiftRight(c4).AsUint8x16().And(m15))
		p := w.DotProductPairsSaturated(archsimd.LoadInt8x32(&a[i].qs)).DotProductPairs(ones).ConvertToFloat32()
		s := f16v8(b, 0).Mul(bcast8p(&a[i].d))
		acc = p.MulAdd(s, acc)
		corr = corr.Add(s.Mul(archsimd.BroadcastInt32x8(a[i].sum).ConvertToFloat32()))
	}
	return ret(hsum8v(acc).Sub(corr.GetLo().Mul(archsimd.BroadcastFloat32x4(8))))
}

// k4ScaleIdx are the byte shuffles (within each 128-bit lane) that turn
// eight scale bytes, repeated in every lane, into the int16 scale vectors
// of a Q4_K/Q5_K block in K4 order: vector k multiplies the lanes of
// sub-blocks (0,2), (1,3), (4,6), (5,7) for k = 0..3. Index −1 gives 0, the
// high byte of each int16.
var k4ScaleIdx [4]archsimd.Int8x64 // set by init, on CPUs with AVX-512 only

func makeK4ScaleIdx() (r [4]archsimd.Int8x64) {
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
}

func ldact(a *actK, off int) archsimd.Int8x64 {
	return archsimd.LoadInt8x64((*[64]int8)(a.qs[off : off+64]))
}

func dotQ4_KQ8SIMD(row []byte, a []actK) float32 {
	var facc f32x16
	var macc f32x8
	m15 := archsimd.BroadcastUint8x64(15)
	c4 := cnt16(4)
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
		ha := A.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15)
		lb := B.And(m15)
		hb := B.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15)
		p0 := la.DotProductPairsSaturated(ldact(ab, 0)).DotProductPairs(scv.PermuteOrZeroGrouped(i0).AsInt16x32())
		p1 := ha.DotProductPairsSaturated(ldact(ab, 64)).DotProductPairs(scv.PermuteOrZeroGrouped(i1).AsInt16x32())
		p2 := lb.DotProductPairsSaturated(ldact(ab, 128)).DotProductPairs(scv.PermuteOrZeroGrouped(i2).AsInt16x32())
		p3 := hb.DotProductPairsSaturated(ldact(ab, 192)).DotProductPairs(scv.PermuteOrZeroGrouped(i3).AsInt16x32())
		sum := p0.Add(p1).Add(p2.Add(p3))
		facc = sum.ConvertToFloat32().MulAdd(f16v(b, 0).Mul(bcastp(&ab.d)), facc)
		macc = scalesF32(m).Mul(f16v8(b, 2)).MulAdd(archsimd.LoadFloat32x8(&ab.ms), macc)
	}
	return ret(hsum16v(facc).Sub(hsum8v(macc)))
}

func dotQ5_KQ8SIMD(row []byte, a []actK) float32 {
	var facc f32x16
	var macc f32x8
	m15 := archsimd.BroadcastUint8x64(15)
	b1 := archsimd.BroadcastUint8x64(1)
	b2 := archsimd.BroadcastUint8x64(2)
	c2, c3, c4, c6 := cnt16y(2), cnt16(3), cnt16(4), cnt16y(6)
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
		hA = hA.SetLo(qh.AsUint8x32()).SetHi(qh.ShiftRight(c2).AsUint8x32())
		hB = hB.SetLo(qh.ShiftRight(c4.GetLo()).AsUint8x32()).SetHi(qh.ShiftRight(c6).AsUint8x32())
		A := ld64u8(b, quant.Q5_KOffQs)
		B := ld64u8(b, quant.Q5_KOffQs+64)
		la := A.And(m15).Or(hA.And(b1).AsUint16x32().ShiftLeft(c4).AsUint8x64())
		ha := A.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15).Or(hA.And(b2).AsUint16x32().ShiftLeft(c3).AsUint8x64())
		lb := B.And(m15).Or(hB.And(b1).AsUint16x32().ShiftLeft(c4).AsUint8x64())
		hb := B.AsUint16x32().ShiftRight(c4).AsUint8x64().And(m15).Or(hB.And(b2).AsUint16x32().ShiftLeft(c3).AsUint8x64())
		p0 := la.DotProductPairsSaturated(ldact(ab, 0)).DotProductPairs(scv.PermuteOrZeroGrouped(i0).AsInt16x32())
		p1 := ha.DotProductPairsSaturated(ldact(ab, 64)).DotProductPairs(scv.PermuteOrZeroGrouped(i1).AsInt16x32())
		p2 := lb.DotProductPairsSaturated(ldact(ab, 128)).DotProductPairs(scv.PermuteOrZeroGrouped(i2).AsInt16x32())
		p3 := hb.DotProductPairsSaturated(ldact(ab, 192)).DotProductPairs(scv.PermuteOrZeroGrouped(i3).AsInt16x32())
		sum := p0.Add(p1).Add(p2.Add(p3))
		facc = sum.ConvertToFloat32().MulAdd(f16v(b, 0).Mul(bcastp(&ab.d)), facc)
		macc = scalesF32(m).Mul(f16v8(b, 2)).MulAdd(archsimd.LoadFloat32x8(&ab.ms), macc)
	}
	return ret(hsum16v(facc).Sub(hsum8v(macc)))
}

// q6ScaleIdx[h][k] picks, from the 16 sign-extended scales of a Q6_K block,
// the int16 scale vector of quarter k of half h: lanes 0-7 scale 8h+2k,
// lanes 8-15 scale 8h+2k+1.
var q6ScaleIdx [2][4]archsimd.Uint16x16 // set by init, on CPUs with AVX-512 only

func makeQ6ScaleIdx() (r [2][4]archsimd.Uint16x16) {
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
}

func ldact32(a *actK, off int) archsimd.Int8x32 {
	return archsimd.LoadInt8x32((*[32]int8)(a.qs[off : off+32]))
}

func dotQ6_KQ8SIMD(row []byte, a []actK) float32 {
	var facc f32x8
	m15 := archsimd.BroadcastUint8x32(15)
	m3 := archsimd.BroadcastUint8x32(3)
	m12 := archsimd.BroadcastUint8x32(12)
	m48 := archsimd.BroadcastUint8x32(48)
	c2, c4 := cnt16y(2), cnt16y(4)
	c5 := archsimd.BroadcastInt32x8(5)
	for i := range a {
		b := row[i*210 : i*210+210]
		ab := &a[i]
		S := archsimd.LoadInt8x16((*[16]int8)(unsafe.Pointer(&b[quant.Q6_KOffScales]))).ExtendToInt16()
		// Weights are q−32: start from −32·Σ sc·(Σa of each 16).
		isum := S.DotProductPairs(archsimd.LoadInt16x16(&ab.bs16)).ShiftLeft(c5)
		var acc i32x8
		for h := 0; h < 2; h++ {
			ql0 := ld32u8(b, quant.Q6_KOffQl+64*h)
			ql1 := ld32u8(b, quant.Q6_KOffQl+64*h+32)
			qh := ld32u8(b, quant.Q6_KOffQh+32*h)
			q0 := ql0.And(m15).Or(qh.And(m3).AsUint16x16().ShiftLeft(c4).AsUint8x32())
			q1 := ql1.And(m15).Or(qh.And(m12).AsUint16x16().ShiftLeft(c2).AsUint8x32())
			q2 := ql0.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15).Or(qh.And(m48))
			q3 := ql1.AsUint16x16().ShiftRight(c4).AsUint8x32().And(m15).Or(qh.AsUint16x16().ShiftRight(c2).AsUint8x32().And(m48))
			idx := &q6ScaleIdx[h]
			acc = acc.Add(q0.DotProductPairsSaturated(ldact32(ab, 128*h)).DotProductPairs(S.Permute(idx[0])))
			acc = acc.Add(q1.DotProductPairsSaturated(ldact32(ab, 128*h+32)).DotProductPairs(S.Permute(idx[1])))
			acc = acc.Add(q2.DotProductPairsSaturated(ldact32(ab, 128*h+64)).DotProductPairs(S.Permute(idx[2])))
			acc = acc.Add(q3.DotProductPairsSaturated(ldact32(ab, 128*h+96)).DotProductPairs(S.Permute(idx[3])))
		}
		facc = acc.Sub(isum).ConvertToFloat32().MulAdd(f16v8(b, quant.Q6_KOffD).Mul(bcast8p(&ab.d)), facc)
	}
	return hsum8(facc)
}

// ---- activation quantizers ----

func absMask() i32x16 { return archsimd.BroadcastInt32x16(0x7fffffff) }

// hmax16 is the largest lane of v, with the upper state cleared.
func hmax16(v f32x16) float32 {
	m := v.GetLo().Max(v.GetHi())
	n := m.GetLo().Max(m.GetHi()).AsUint64x2()
	a, b := clearUpper(n.GetElem(0), n.GetElem(1))
	f := func(x uint64) float32 { return math.Float32frombits(uint32(x)) }
	return max(max(f(a), f(a>>32)), max(f(b), f(b>>32)))
}

// hsumI is the sum of v's lanes.
func hsumI(v i32x16) int32 {
	s := v.GetLo().Add(v.GetHi())
	t := s.GetLo().Add(s.GetHi())
	t = t.AddPairs(t)
	t = t.AddPairs(t)
	return t.GetElem(0)
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
		at := 0
		va := bcast(amax)
		for j := 0; j < 256; j += 16 {
			if bits := ldx(xb, j).AsInt32x16().And(am).AsFloat32x16().Equal(va).ToBits(); bits != 0 {
				at = j + trailingZeros16(bits)
				break
			}
		}
		archsimd.ClearAVXUpperBits()
		mx := xb[at]
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
		archsimd.ClearAVXUpperBits()
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
	archsimd.ClearAVXUpperBits() // (for an x of no blocks)
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
		a.sum = hsumI(q0.Add(q1))
	}
	archsimd.ClearAVXUpperBits()
}

func sums32SIMD(xs, x []float32) {
	for i := range xs {
		*(*uint32)(unsafe.Pointer(&xs[i])) = hsum16v(ldx(x, 32*i).Add(ldx(x, 32*i+16))).AsUint32x4().GetElem(0)
	}
	archsimd.ClearAVXUpperBits()
}
