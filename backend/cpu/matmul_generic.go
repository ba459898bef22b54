package cpu

import (
	"encoding/binary"
	"math"

	"greta/gguf"
	"greta/quant"
)

// The pure-Go kernels: one dot product of a weight row with one vector,
// per format and activation kind. They are the twins of the SIMD kernels,
// compute the same sums in the same blocks, and run on every platform.

// f16Table holds every binary16 value as float32, for block scales.
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = quant.F16ToF32(uint16(i))
	}
	return &t
}()

// nibbles[v] is the low and high nibble of byte v as float32: one load
// instead of two int-to-float conversions in the pure-Go 4-bit kernels.
var nibbles = func() (t [256][2]float32) {
	for v := range t {
		t[v] = [2]float32{float32(v & 0xf), float32(v >> 4)}
	}
	return t
}()

func f16At(b []byte, off int) float32 { return f16Table[binary.LittleEndian.Uint16(b[off:])] }

// kernels is the table MatMul dispatches through, indexed by gguf.Type.
type kernels struct {
	// f32 returns Σ w·x over one row; xs holds the sums of each run of 32
	// values of x (used by Q4_K and Q5_K for their mins).
	f32 [gguf.BF16 + 1]func(row []byte, x, xs []float32) float32
	// q8K and q832 return Σ w·(d·q) over one row with quantized activations.
	q8K  [gguf.BF16 + 1]func(row []byte, a []actK) float32
	q832 [gguf.BF16 + 1]func(row []byte, a []act32) float32
	// q832x4, where set, is q832 for four vectors at once (a holds them one
	// after the other, nb blocks each), each sum bit for bit what q832
	// returns for it: the batch path shares the weight loads.
	q832x4 [gguf.BF16 + 1]func(row []byte, a []act32, nb int) (y0, y1, y2, y3 float32)
	// q15K returns Σ w·(d·q) with 15-bit activations (K-quants).
	q15K [gguf.BF16 + 1]func(row []byte, a []actK15) float32
	// q15Rows, where set, computes y[i] = Σ w·(d·q) for the len(y) rows
	// that start every rb bytes in rows (one call per tile: the assembly
	// kernels).
	q15Rows [gguf.BF16 + 1]func(y []float32, rows []byte, rb int, a []actK15)
	// q15RowsV, where set with q15Rows, is q15Rows for 2 ≤ nv ≤ 4 vectors
	// at once, a[v·as:] (actK16: toK16 of q15Rows' activations) and
	// y[v·ys:][:nr], each vector with the bits q15Rows gives it alone (the
	// weights are read and decoded once per group of vectors).
	q15RowsV [gguf.BF16 + 1]func(y []float32, ys, nr int, rows []byte, rb int, a []actK16, as, nv int)
	// f32Rows, where set, computes y[i] = f32's dot product of the len(y)
	// rows that start every rb bytes in rows with x, with f32's bits (one
	// call per tile and vector: assembly).
	f32Rows [gguf.BF16 + 1]func(y []float32, rows []byte, rb int, x []float32)
	// k4 reports whether the format's q8K and q15K kernels want K4 order.
	k4 [gguf.BF16 + 1]bool

	// repack unpacks a K-quant row; dotRp multiplies it with a vector of
	// natural-order activations (the batch path, matmul_repack.go).
	repack  func(t gguf.Type, dst []rpK, row []byte)
	dotRp   func(rp []rpK, a []actK) float32
	dotRp2  func(rp []rpK, a, b []actK) (float32, float32) // two vectors at once
	dotRp15 func(rp []rpK, a []actK15) float32

	// repackV unpacks a K-quant row for the batch microkernel; gemmV, where
	// set (assembly, AVX-512 VNNI), is that kernel (gemm.go).
	repackV func(t gguf.Type, dst []rpV, row []byte)
	gemmV   func(fam, T int, out []float32, w []rpV, stride int, lq []uint32, ld, lm []float32, lb []int32, nb int)
	// gemmQ8, where set (assembly), is the Q8_0 batch kernel on raw rows
	// (gemm.go, gemmQ8Generic).
	gemmQ8 func(T int, out []float32, w []byte, stride int, lq []uint32, ld []float32, lc []int32, nb int)
	// gemmQ8R16, where set with gemmQ8, is that kernel for one token and
	// 16 rows, with the bits the token gets in a lane of gemmQ8
	// (gemmQ8R16Generic).
	gemmQ8R16 func(out []float32, w []byte, stride int, a []act32)

	quantizeK   func(dst []actK, x []float32, k4 bool)
	quantizeK15 func(dst []actK15, x []float32, k4 bool)
	quantize32  func(dst []act32, x []float32)
	sums32      func(xs, x []float32)
}

var genericKernels = kernels{
	f32: [gguf.BF16 + 1]func([]byte, []float32, []float32) float32{
		gguf.F32:  dotF32Generic,
		gguf.F16:  dotF16Generic,
		gguf.BF16: dotBF16Generic,
		gguf.Q8_0: dotQ8_0F32Generic,
		gguf.Q4_0: dotQ4_0F32Generic,
		gguf.Q4_K: dotQ4_KF32Generic,
		gguf.Q5_K: dotQ5_KF32Generic,
		gguf.Q6_K: dotQ6_KF32Generic,
	},
	q8K: [gguf.BF16 + 1]func([]byte, []actK) float32{
		gguf.Q4_K: dotQ4_KQ8Generic,
		gguf.Q5_K: dotQ5_KQ8Generic,
		gguf.Q6_K: dotQ6_KQ8Generic,
	},
	q832: [gguf.BF16 + 1]func([]byte, []act32) float32{
		gguf.Q8_0: dotQ8_0Q8Generic,
		gguf.Q4_0: dotQ4_0Q8Generic,
	},
	q15K: [gguf.BF16 + 1]func([]byte, []actK15) float32{
		gguf.Q4_K: dotQ4_KQ15Generic,
		gguf.Q5_K: dotQ5_KQ15Generic,
		gguf.Q6_K: dotQ6_KQ15Generic,
	},
	k4:          [gguf.BF16 + 1]bool{gguf.Q4_K: true, gguf.Q5_K: true},
	repack:      repackGeneric,
	dotRp:       dotRpKGeneric,
	dotRp2:      dotRpK2Generic,
	dotRp15:     dotRpK15Generic,
	repackV:     repackVGeneric,
	quantizeK:   quantizeKGeneric,
	quantizeK15: quantizeK15Generic,
	quantize32:  quantize32Generic,
	sums32:      sums32Generic,
}

// ---- float32 activations ----

func dotF32Generic(row []byte, x, _ []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:])) * x[i]
		s1 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i+4:])) * x[i+1]
		s2 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i+8:])) * x[i+2]
		s3 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i+12:])) * x[i+3]
	}
	for ; i < len(x); i++ {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:])) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotF16Generic(row []byte, x, _ []float32) float32 {
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(x); i += 2 {
		s0 += f16At(row, 2*i) * x[i]
		s1 += f16At(row, 2*i+2) * x[i+1]
	}
	for ; i < len(x); i++ {
		s0 += f16At(row, 2*i) * x[i]
	}
	return s0 + s1
}

func dotBF16Generic(row []byte, x, _ []float32) float32 {
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(x); i += 2 {
		s0 += math.Float32frombits(uint32(binary.LittleEndian.Uint16(row[2*i:]))<<16) * x[i]
		s1 += math.Float32frombits(uint32(binary.LittleEndian.Uint16(row[2*i+2:]))<<16) * x[i+1]
	}
	for ; i < len(x); i++ {
		s0 += math.Float32frombits(uint32(binary.LittleEndian.Uint16(row[2*i:]))<<16) * x[i]
	}
	return s0 + s1
}

func dotQ8_0F32Generic(row []byte, x, _ []float32) float32 {
	var sum float32
	for i := range len(x) / 32 {
		b := (*[34]byte)(row[i*34:])
		xb := (*[32]float32)(x[i*32:])
		var s0, s1, s2, s3 float32
		for j := 0; j < 32; j += 4 {
			s0 += float32(int8(b[2+j])) * xb[j]
			s1 += float32(int8(b[3+j])) * xb[j+1]
			s2 += float32(int8(b[4+j])) * xb[j+2]
			s3 += float32(int8(b[5+j])) * xb[j+3]
		}
		sum += f16At(b[:], 0) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}

func dotQ4_0F32Generic(row []byte, x, _ []float32) float32 {
	var sum float32
	for i := range len(x) / 32 {
		b := (*[18]byte)(row[i*18:])
		xb := (*[32]float32)(x[i*32:])
		var s0, s1, s2, s3 float32
		for j := 0; j < 16; j += 2 {
			n0, n1 := &nibbles[b[2+j]], &nibbles[b[3+j]]
			s0 += (n0[0] - 8) * xb[j]
			s1 += (n1[0] - 8) * xb[j+1]
			s2 += (n0[1] - 8) * xb[j+16]
			s3 += (n1[1] - 8) * xb[j+17]
		}
		sum += f16At(b[:], 0) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}

func dotQ4_KF32Generic(row []byte, x, xs []float32) float32 {
	var sum, msum float32
	for i := range len(x) / 256 {
		b := (*[144]byte)(row[i*144:])
		xb := (*[256]float32)(x[i*256:])
		d, dmin := f16At(b[:], 0), f16At(b[:], 2)
		sc, m := scalesK4(b[quant.Q4_KOffScales:])
		var bs, bm float32
		for g := range 4 {
			q := (*[32]byte)(b[quant.Q4_KOffQs+32*g:])
			xl := (*[32]float32)(xb[64*g:])
			xh := (*[32]float32)(xb[64*g+32:])
			var l0, l1, h0, h1 float32
			for l := 0; l < 32; l += 2 {
				n0, n1 := &nibbles[q[l]], &nibbles[q[l+1]]
				l0 += n0[0] * xl[l]
				l1 += n1[0] * xl[l+1]
				h0 += n0[1] * xh[l]
				h1 += n1[1] * xh[l+1]
			}
			bs += float32(sc>>(16*g)&0xff)*(l0+l1) + float32(sc>>(16*g+8)&0xff)*(h0+h1)
			bm += float32(m>>(16*g)&0xff)*xs[8*i+2*g] + float32(m>>(16*g+8)&0xff)*xs[8*i+2*g+1]
		}
		sum += d * bs
		msum += dmin * bm
	}
	return sum - msum
}

func dotQ5_KF32Generic(row []byte, x, xs []float32) float32 {
	var sum, msum float32
	for i := range len(x) / 256 {
		b := row[i*176 : i*176+176]
		xb := x[i*256 : i*256+256]
		d, dmin := f16At(b, 0), f16At(b, 2)
		scales := b[quant.Q5_KOffScales:]
		qh := b[quant.Q5_KOffQh : quant.Q5_KOffQh+32]
		var bs, bm float32
		for g := range 4 {
			q := b[quant.Q5_KOffQs+32*g : quant.Q5_KOffQs+32*g+32]
			var lo, hi float32
			for l, v := range q {
				lo += float32(v&0xf|(qh[l]>>(2*g)&1)<<4) * xb[64*g+l]
				hi += float32(v>>4|(qh[l]>>(2*g+1)&1)<<4) * xb[64*g+32+l]
			}
			sc0, m0 := quant.ScaleMinK4(2*g, scales)
			sc1, m1 := quant.ScaleMinK4(2*g+1, scales)
			bs += float32(sc0)*lo + float32(sc1)*hi
			bm += float32(m0)*xs[8*i+2*g] + float32(m1)*xs[8*i+2*g+1]
		}
		sum += d * bs
		msum += dmin * bm
	}
	return sum - msum
}

func dotQ6_KF32Generic(row []byte, x, _ []float32) float32 {
	var sum float32
	for i := range len(x) / 256 {
		b := row[i*210 : i*210+210]
		xb := x[i*256 : i*256+256]
		var bs float32
		for h := range 2 {
			ql := b[quant.Q6_KOffQl+64*h : quant.Q6_KOffQl+64*h+64]
			qh := b[quant.Q6_KOffQh+32*h : quant.Q6_KOffQh+32*h+32]
			sc := b[quant.Q6_KOffScales+8*h : quant.Q6_KOffScales+8*h+8]
			xh := xb[128*h : 128*h+128]
			for half := range 2 { // l in [16·half, 16·half+16): sub-blocks is = half
				var s1, s2, s3, s4 float32
				for l := 16 * half; l < 16*half+16; l++ {
					s1 += float32(int(ql[l]&0xf|(qh[l]&3)<<4)-32) * xh[l]
					s2 += float32(int(ql[l+32]&0xf|(qh[l]>>2&3)<<4)-32) * xh[l+32]
					s3 += float32(int(ql[l]>>4|(qh[l]>>4&3)<<4)-32) * xh[l+64]
					s4 += float32(int(ql[l+32]>>4|(qh[l]>>6&3)<<4)-32) * xh[l+96]
				}
				bs += float32(int8(sc[half]))*s1 + float32(int8(sc[half+2]))*s2 +
					float32(int8(sc[half+4]))*s3 + float32(int8(sc[half+6]))*s4
			}
		}
		sum += f16At(b, quant.Q6_KOffD) * bs
	}
	return sum
}

// ---- 8-bit activations ----

func dotQ8_0Q8Generic(row []byte, a []act32) float32 {
	var sum float32
	for i := range a {
		b := row[i*34 : i*34+34]
		var s int32
		for j, q := range b[2:] {
			s += int32(int8(q)) * int32(a[i].qs[j])
		}
		sum += f16At(b, 0) * a[i].d * float32(s)
	}
	return sum
}

func dotQ4_0Q8Generic(row []byte, a []act32) float32 {
	var sum float32
	for i := range a {
		b := row[i*18 : i*18+18]
		var s int32
		for j, q := range b[2:] {
			s += int32(q&0xf)*int32(a[i].qs[j]) + int32(q>>4)*int32(a[i].qs[j+16])
		}
		sum += f16At(b, 0) * a[i].d * float32(s-8*a[i].sum)
	}
	return sum
}

// scalesK4 unpacks the 12 scale bytes of a Q4_K/Q5_K block into eight 6-bit
// scales and eight 6-bit mins, one per byte, little-endian (byte j is
// sub-block j's), with word operations rather than ScaleMinK4's bytes.
func scalesK4(s []byte) (sc, m uint64) {
	lo := binary.LittleEndian.Uint64(s)
	hi := uint64(binary.LittleEndian.Uint32(s[8:]))
	sc = lo&0x3f3f3f3f | (hi&0x0f0f0f0f|lo>>2&0x30303030)<<32
	m = lo>>32&0x3f3f3f3f | (hi>>4&0x0f0f0f0f|lo>>34&0x30303030)<<32
	return sc, m
}

// k4Off returns where, in K4 order, the activations of group g's low and
// high nibbles start (see k4Pos).
func k4Off(g int) (lo, hi int) {
	base := 128 * (g / 2)
	if g%2 == 0 {
		return base, base + 64
	}
	return base + 32, base + 96
}

func dotQ4_KQ8Generic(row []byte, a []actK) float32 {
	var sum, msum float32
	for i := range a {
		b := (*[144]byte)(row[i*144:])
		ab := &a[i]
		sc, m := scalesK4(b[quant.Q4_KOffScales:])
		var is int32
		var mm float32
		for g := range 4 {
			q := (*[32]byte)(b[quant.Q4_KOffQs+32*g:])
			ol, oh := k4Off(g)
			al := (*[32]int8)(ab.qs[ol:])
			ah := (*[32]int8)(ab.qs[oh:])
			var lo, hi int32
			for l, v := range q {
				lo += int32(v&0xf) * int32(al[l])
				hi += int32(v>>4) * int32(ah[l])
			}
			is += int32(sc>>(16*g)&0xff)*lo + int32(sc>>(16*g+8)&0xff)*hi
			mm += float32(m>>(16*g)&0xff)*ab.ms[2*g] + float32(m>>(16*g+8)&0xff)*ab.ms[2*g+1]
		}
		sum += f16At(b[:], 0) * ab.d * float32(is)
		msum += f16At(b[:], 2) * mm
	}
	return sum - msum
}

func dotQ5_KQ8Generic(row []byte, a []actK) float32 {
	var sum, msum float32
	for i := range a {
		b := row[i*176 : i*176+176]
		ab := &a[i]
		sc, m := scalesK4(b[quant.Q5_KOffScales:])
		qh := b[quant.Q5_KOffQh : quant.Q5_KOffQh+32]
		var is int32
		var mm float32
		for g := range 4 {
			q := b[quant.Q5_KOffQs+32*g : quant.Q5_KOffQs+32*g+32]
			ol, oh := k4Off(g)
			var lo, hi int32
			for l, v := range q {
				lo += int32(v&0xf|(qh[l]>>(2*g)&1)<<4) * int32(ab.qs[ol+l])
				hi += int32(v>>4|(qh[l]>>(2*g+1)&1)<<4) * int32(ab.qs[oh+l])
			}
			is += int32(sc>>(16*g)&0xff)*lo + int32(sc>>(16*g+8)&0xff)*hi
			mm += float32(m>>(16*g)&0xff)*ab.ms[2*g] + float32(m>>(16*g+8)&0xff)*ab.ms[2*g+1]
		}
		sum += f16At(b, 0) * ab.d * float32(is)
		msum += f16At(b, 2) * mm
	}
	return sum - msum
}

func dotQ6_KQ8Generic(row []byte, a []actK) float32 {
	var sum float32
	for i := range a {
		b := row[i*210 : i*210+210]
		ab := &a[i]
		var is int32
		for h := range 2 {
			ql := b[quant.Q6_KOffQl+64*h : quant.Q6_KOffQl+64*h+64]
			qh := b[quant.Q6_KOffQh+32*h : quant.Q6_KOffQh+32*h+32]
			sc := b[quant.Q6_KOffScales+8*h : quant.Q6_KOffScales+8*h+8]
			qa := ab.qs[128*h : 128*h+128]
			for half := range 2 {
				var s1, s2, s3, s4 int32
				for l := 16 * half; l < 16*half+16; l++ {
					s1 += int32(ql[l]&0xf|(qh[l]&3)<<4) * int32(qa[l])
					s2 += int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) * int32(qa[l+32])
					s3 += int32(ql[l]>>4|(qh[l]>>4&3)<<4) * int32(qa[l+64])
					s4 += int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) * int32(qa[l+96])
				}
				// Weights are q−32: subtract 32·Σa of each run of 16.
				bs := ab.bs16[8*h:]
				is += int32(int8(sc[half]))*(s1-32*int32(bs[half])) +
					int32(int8(sc[half+2]))*(s2-32*int32(bs[half+2])) +
					int32(int8(sc[half+4]))*(s3-32*int32(bs[half+4])) +
					int32(int8(sc[half+6]))*(s4-32*int32(bs[half+6]))
			}
		}
		sum += f16At(b, quant.Q6_KOffD) * ab.d * float32(is)
	}
	return sum
}
