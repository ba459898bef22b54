package cpu

import (
	"math"

	"greta/gguf"
	"greta/quant"
)

// 15-bit activations (ActQ15) for the K-quants. Each block of 256
// activations is quantized to integers q in [−16383, 16383] with one
// float32 scale d, and q is stored as two int8 planes, q = 128·hi + lo with
// hi in [−128, 127] and lo in [0, 127], so that the same VPMADDUBSW/VPMADDWD
// kernels as the 8-bit path apply, twice. The quantization error is 2⁷
// times smaller than with 8 bits (NMSE ≈ 1e-9 per product instead of
// ≈ 1e-4), for about 1.4× the work of the 8-bit path.

// actK15 is one block of 256 activations as two planes, in natural or K4
// order like actK. value = d·(128·hi + lo).
type actK15 struct {
	hi   [256]int8
	lo   [256]int8
	d    float32
	ms   [8]float32  // d·Σq of each run of 32, natural order
	ms16 [16]float32 // d·Σq of each run of 16, natural order
	_    [28]byte    // to 640 bytes, so that 64-byte loads stay aligned
}

// actK16 is an actK15 block with each q = 128·hi + lo as one int16, for
// the multi-vector decode kernels (VPDPWSSD, asmgen/matvec.go): in each
// chunk k of 64 values (in actK15's order), the 32 at even positions
// 64k+2m, then the 32 at odd ones 64k+2m+1. d, ms and ms16 are actK15's, at
// the same offsets.
type actK16 struct {
	q    [256]int16
	d    float32
	ms   [8]float32
	ms16 [16]float32
	_    [28]byte
}

// toK16 rewrites 15-bit activation blocks in actK16's layout.
func toK16(dst []actK16, src []actK15) {
	for i := range src {
		a, o := &src[i], &dst[i]
		for k := range 4 {
			for m := range 32 {
				e, od := 64*k+2*m, 64*k+2*m+1
				o.q[64*k+m] = 128*int16(a.hi[e]) + int16(a.lo[e])
				o.q[64*k+32+m] = 128*int16(a.hi[od]) + int16(a.lo[od])
			}
		}
		o.d, o.ms, o.ms16 = a.d, a.ms, a.ms16
	}
}

// q15Max is the largest magnitude of a 15-bit activation.
const q15Max = 16383

// quantizeK15Generic quantizes len(x) values (a multiple of 256) into dst:
// d = amax/16383, q = round-half-even(x·(16383/amax)).
func quantizeK15Generic(dst []actK15, x []float32, k4 bool) {
	for i := range len(x) / quant.QK_K {
		xb := x[i*quant.QK_K : (i+1)*quant.QK_K]
		a := &dst[i]
		var amax float32
		for _, v := range xb {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		a.d = amax / q15Max
		var id float32
		if amax != 0 {
			id = q15Max / amax
		}
		var s16 [16]int32
		for j, v := range xb {
			q := int32(math.RoundToEven(float64(v * id)))
			p := j
			if k4 {
				p = int(k4Pos[j])
			}
			a.hi[p], a.lo[p] = int8(q>>7), int8(q&127)
			s16[j/16] += q
		}
		for j := range 16 {
			a.ms16[j] = a.d * float32(s16[j])
		}
		for j := range 8 {
			a.ms[j] = a.d * float32(s16[2*j]+s16[2*j+1])
		}
	}
}

func dotQ4_KQ15Generic(row []byte, a []actK15) float32 {
	return dotK4Q15Generic(gguf.Q4_K, row, a)
}

func dotQ5_KQ15Generic(row []byte, a []actK15) float32 {
	return dotK4Q15Generic(gguf.Q5_K, row, a)
}

// dotK4Q15Generic is the Q4_K/Q5_K kernel on K4-order 15-bit activations.
func dotK4Q15Generic(t gguf.Type, row []byte, a []actK15) float32 {
	ts, offS, offQ := 144, quant.Q4_KOffScales, quant.Q4_KOffQs
	if t == gguf.Q5_K {
		ts, offS, offQ = 176, quant.Q5_KOffScales, quant.Q5_KOffQs
	}
	var sum, msum float32
	for i := range a {
		b := row[i*ts : (i+1)*ts]
		ab := &a[i]
		sc, m := scalesK4(b[offS:])
		var ihi, ilo int32
		var mm float32
		for g := range 4 {
			ol, oh := k4Off(g)
			var hl, ll, hh, lh int32
			for l := range 32 {
				v := b[offQ+32*g+l]
				lo, hi := int32(v&0xf), int32(v>>4)
				if t == gguf.Q5_K {
					qh := b[quant.Q5_KOffQh+l]
					lo |= int32(qh>>(2*g)&1) << 4
					hi |= int32(qh>>(2*g+1)&1) << 4
				}
				hl += lo * int32(ab.hi[ol+l])
				ll += lo * int32(ab.lo[ol+l])
				hh += hi * int32(ab.hi[oh+l])
				lh += hi * int32(ab.lo[oh+l])
			}
			s0, s1 := int32(sc>>(16*g)&0xff), int32(sc>>(16*g+8)&0xff)
			ihi += s0*hl + s1*hh
			ilo += s0*ll + s1*lh
			mm += float32(m>>(16*g)&0xff)*ab.ms[2*g] + float32(m>>(16*g+8)&0xff)*ab.ms[2*g+1]
		}
		d := f16At(b, 0) * ab.d
		sum += 128*d*float32(ihi) + d*float32(ilo)
		msum += f16At(b, 2) * mm
	}
	return sum - msum
}

func dotQ6_KQ15Generic(row []byte, a []actK15) float32 {
	var sum, corr float32
	for i := range a {
		b := row[i*210 : i*210+210]
		ab := &a[i]
		d := f16At(b, quant.Q6_KOffD)
		var ihi, ilo int32
		var c float32
		for h := range 2 {
			ql := b[quant.Q6_KOffQl+64*h:]
			qh := b[quant.Q6_KOffQh+32*h:]
			for k := range 4 {
				for half := range 2 {
					sc := int32(int8(b[quant.Q6_KOffScales+8*h+2*k+half]))
					var sh, sl int32
					for l := 16 * half; l < 16*half+16; l++ {
						var q int32
						switch k {
						case 0:
							q = int32(ql[l]&0xf | (qh[l]&3)<<4)
						case 1:
							q = int32(ql[l+32]&0xf | (qh[l]>>2&3)<<4)
						case 2:
							q = int32(ql[l]>>4 | (qh[l]>>4&3)<<4)
						case 3:
							q = int32(ql[l+32]>>4 | (qh[l]>>6&3)<<4)
						}
						p := 128*h + 32*k + l
						sh += q * int32(ab.hi[p])
						sl += q * int32(ab.lo[p])
					}
					ihi += sc * sh
					ilo += sc * sl
					c += float32(sc) * ab.ms16[8*h+2*k+half]
				}
			}
		}
		dd := d * ab.d
		sum += 128*dd*float32(ihi) + dd*float32(ilo)
		corr += 32 * d * c
	}
	return sum - corr
}

// dotRpK15Generic is dotRpKGeneric on 15-bit natural-order activations.
func dotRpK15Generic(rp []rpK, a []actK15) float32 {
	var sum, corr float32
	for i := range rp {
		r, ab := &rp[i], &a[i]
		var ihi, ilo int32
		for k := range 4 {
			for l := range 32 {
				w := 64*k + 2*l
				s := int32(r.sc[32*k+l])
				ihi += s * (int32(r.q[w])*int32(ab.hi[w]) + int32(r.q[w+1])*int32(ab.hi[w+1]))
				ilo += s * (int32(r.q[w])*int32(ab.lo[w]) + int32(r.q[w+1])*int32(ab.lo[w+1]))
			}
		}
		d := r.d * ab.d
		sum += 128*d*float32(ihi) + d*float32(ilo)
		var c float32
		for j := range 16 {
			c += r.corr[j] * ab.ms16[j]
		}
		corr += c
	}
	return sum - corr
}
