package cpu

import (
	"greta/gguf"
	"greta/quant"
)

// The batch path for K-quants with 8-bit activations. Unpacking nibbles,
// fifth and sixth bits and 6-bit scales costs as much as the integer dot
// itself, so for a batch each weight row is unpacked once per call into
// rpK blocks, one layout for Q4_K, Q5_K and Q6_K, and every vector of the
// batch then runs the same lean kernel (dotRpK) against it.

// rpK is one unpacked K-quant block of 256 weights:
//
//	w[i] = d·sc(i)·q[i] − corr[i/16]/d_a·(…)   more precisely, for
//	activations a = d_a·qa:  Σ w·a = d·d_a·Σ sc·q·qa − Σ_j corr[j]·(d_a·Σ_{i∈j} qa[i])
//
// where j runs over the 16 runs of 16 weights: Q4_K/Q5_K store
// corr = dmin·m of the run's sub-block, Q6_K stores corr = 32·d·sc (its
// weights are q−32).
type rpK struct {
	q    [256]uint8  // unsigned quants in natural order: 0..15, 0..31 or 0..63
	sc   [128]int16  // lane l of 32-lane vector k scales the pair of weights 64k+2l, 64k+2l+1
	corr [16]float32 // per run of 16, see above
	d    float32
}

// unpackK45 writes the 256 quants of a Q4_K or Q5_K block b (packed at
// offQ) unsigned and in natural order: 0..15, or 0..31 with Q5_K's fifth
// bits (q5).
func unpackK45(q *[256]uint8, b []byte, offQ int, q5 bool) {
	for g := range 4 {
		for l := range 32 {
			v := b[offQ+32*g+l]
			lo, hi := v&0xf, v>>4
			if q5 {
				qh := b[quant.Q5_KOffQh+l]
				lo |= (qh >> (2 * g) & 1) << 4
				hi |= (qh >> (2*g + 1) & 1) << 4
			}
			q[64*g+l], q[64*g+32+l] = lo, hi
		}
	}
}

// repackGeneric unpacks the K-quant row (type t) into dst.
func repackGeneric(t gguf.Type, dst []rpK, row []byte) {
	for i := range dst {
		r := &dst[i]
		switch t {
		case gguf.Q4_K, gguf.Q5_K:
			ts, offS, offQ := 144, quant.Q4_KOffScales, quant.Q4_KOffQs
			if t == gguf.Q5_K {
				ts, offS, offQ = 176, quant.Q5_KOffScales, quant.Q5_KOffQs
			}
			b := row[i*ts : (i+1)*ts]
			r.d = f16At(b, 0)
			dmin := f16At(b, 2)
			for j := range 8 {
				sc, m := quant.ScaleMinK4(j, b[offS:])
				for l := range 16 {
					r.sc[16*j+l] = int16(sc)
				}
				r.corr[2*j] = dmin * float32(m)
				r.corr[2*j+1] = r.corr[2*j]
			}
			unpackK45(&r.q, b, offQ, t == gguf.Q5_K)
		case gguf.Q6_K:
			b := row[i*210 : (i+1)*210]
			r.d = f16At(b, quant.Q6_KOffD)
			for j := range 16 {
				sc := int8(b[quant.Q6_KOffScales+j])
				for l := range 8 {
					r.sc[8*j+l] = int16(sc)
				}
				r.corr[j] = 32 * r.d * float32(sc)
			}
			for h := range 2 {
				ql := b[quant.Q6_KOffQl+64*h:]
				qh := b[quant.Q6_KOffQh+32*h:]
				for l := range 32 {
					r.q[128*h+l] = ql[l]&0xf | (qh[l]&3)<<4
					r.q[128*h+32+l] = ql[l+32]&0xf | (qh[l]>>2&3)<<4
					r.q[128*h+64+l] = ql[l]>>4 | (qh[l]>>4&3)<<4
					r.q[128*h+96+l] = ql[l+32]>>4 | (qh[l]>>6&3)<<4
				}
			}
		}
	}
}

// dotRpKGeneric is Σ w·a over one repacked row and one vector of natural-
// order activations.
func dotRpKGeneric(rp []rpK, a []actK) float32 {
	var sum, corr float32
	for i := range rp {
		r, ab := &rp[i], &a[i]
		var is int32
		for k := range 4 {
			for l := range 32 {
				w := 64*k + 2*l
				is += int32(r.sc[32*k+l]) * (int32(r.q[w])*int32(ab.qs[w]) + int32(r.q[w+1])*int32(ab.qs[w+1]))
			}
		}
		sum += r.d * ab.d * float32(is)
		var c float32
		for j := range 16 {
			c += r.corr[j] * ab.ms16[j]
		}
		corr += c
	}
	return sum - corr
}

func dotRpK2Generic(rp []rpK, a, b []actK) (float32, float32) {
	return dotRpKGeneric(rp, a), dotRpKGeneric(rp, b)
}
