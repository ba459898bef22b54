package cpu

import (
	"math"
	"unsafe"

	"greta/gguf"
	"greta/quant"
)

// The batch (prefill) path for K-quant weights with 8-bit activations on
// CPUs with AVX-512 VNNI: a register-blocked microkernel (gemm_vnni_amd64.s,
// written by asmgen) multiplies 3 weight rows by up to 64 tokens at once.
// Lanes are tokens: the kernel broadcasts 4 unsigned weight bytes of one
// row to every lane and VPDPBUSD adds, in each lane, their products with 4
// int8 activations of that lane's token. This file holds the layouts, the
// pure-Go twin of the kernel (its specification and test oracle) and the
// code that builds the layouts.
//
// Numerics are those of the 8-bit path (ggml's Q8_K activations): the
// integer sums per sub-block are exact; then, per block,
// y += d_a·d·Σ_s sc_s·Σ q·a − Σ_s (dmin·m_s)·(d_a·Σ_s a) for Q4_K/Q5_K, and
// y += d_a·d·Σ_j sc_j·Σ (q−32)·a for Q6_K.

// rpV is one K-quant block of one row unpacked for the kernel (384 bytes,
// offsets fixed in asmgen).
type rpV struct {
	q  [256]uint8 // unsigned quants in natural order: 0..15 (Q4_K), 0..31 (Q5_K), 0..63 (Q6_K)
	sc [16]int32  // sub-block scales: 8 six-bit ones (Q4_K/Q5_K) or 16 int8 ones (Q6_K)
	m  [8]float32 // dmin·m of each sub-block (Q4_K/Q5_K)
	d  float32    // block scale
	_  [28]uint8  // to 384 bytes
}

const (
	vnniRows  = 3  // rows per kernel call
	vnniTile  = 12 // rows per tile (the pool's work item); a multiple of vnniRows
	vnniChunk = 64 // tokens per chunk: 4 vectors of 16 lanes
)

// The kernel families: K4 (Q4_K, Q5_K: 8 sub-blocks of 32, mins) and K6
// (Q6_K: 16 sub-blocks of 16, weights q−32).
const (
	famK4 = iota
	famK6
)

func vnniFamily(t gguf.Type) int {
	if t == gguf.Q6_K {
		return famK6
	}
	return famK4
}

// Token-lane activations of one call, for chunk c of 64 tokens, block b:
//
//	lq [c][b][64 steps][4 vectors][16 lanes] uint32: the int8 quants of
//	    columns 4·step..4·step+3 of the lane's token
//	ld [c][b][4][16] float32: d_a
//	lm [c][b][8][4][16] float32: d_a·Σ a of each sub-block of 32 (K4)
//	lb [c][b][16][4][16] int32: −32·Σ a of each run of 16 (K6)
//
// Lanes past the last token are zero.
const (
	lqBlock = 64 * 4 * 16
	ldBlock = 4 * 16
	lmBlock = 8 * 4 * 16
	lbBlock = 16 * 4 * 16
)

// toLanes writes token j's quantized activations a (natural order, nb
// blocks) into its lane of the call's layouts; a nil a writes zeros.
func toLanes(lq []uint32, ld, lm []float32, lb []int32, a []actK, j, nb int, fam int) {
	c, tv, lane := j/vnniChunk, j%vnniChunk/16, j%16
	for b := range nb {
		cb := c*nb + b
		q := lq[cb*lqBlock+tv*16+lane:]
		if a == nil {
			for g := range 64 {
				q[g*64] = 0
			}
			ld[cb*ldBlock+tv*16+lane] = 0
			if fam == famK4 {
				for s := range 8 {
					lm[cb*lmBlock+s*64+tv*16+lane] = 0
				}
			} else {
				for s := range 16 {
					lb[cb*lbBlock+s*64+tv*16+lane] = 0
				}
			}
			continue
		}
		ab := &a[b]
		qs := unsafe.Slice((*uint32)(unsafe.Pointer(&ab.qs[0])), 64)
		for g, v := range qs {
			q[g*64] = v
		}
		ld[cb*ldBlock+tv*16+lane] = ab.d
		if fam == famK4 {
			for s := range 8 {
				lm[cb*lmBlock+s*64+tv*16+lane] = ab.ms[s]
			}
		} else {
			for s := range 16 {
				lb[cb*lbBlock+s*64+tv*16+lane] = -32 * int32(ab.bs16[s])
			}
		}
	}
}

// repackVGeneric unpacks one K-quant row (type t) into dst.
func repackVGeneric(t gguf.Type, dst []rpV, row []byte) {
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
				r.sc[j] = int32(sc)
				r.m[j] = dmin * float32(m)
			}
			for j := 8; j < 16; j++ {
				r.sc[j] = 0
			}
			unpackK45(&r.q, b, offQ, t == gguf.Q5_K)
		case gguf.Q6_K:
			b := row[i*210 : (i+1)*210]
			r.d = f16At(b, quant.Q6_KOffD)
			for j := range 16 {
				r.sc[j] = int32(int8(b[quant.Q6_KOffScales+j]))
			}
			r.m = [8]float32{}
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

// gemmVGeneric is the kernel's twin: out[r][t][lane] (r < 3, t < T) +=
// the products of rows w[r·stride:][:nb] with the T vectors of one chunk
// (lq, ld, lm, lb start at the chunk's block 0).
func gemmVGeneric(fam, T int, out []float32, w []rpV, stride int, lq []uint32, ld, lm []float32, lb []int32, nb int) {
	subLen, nsub := 32, 8
	if fam == famK6 {
		subLen, nsub = 16, 16
	}
	for r := range vnniRows {
		for t := range T {
			for lane := range 16 {
				o := &out[(r*T+t)*16+lane]
				for b := range nb {
					wb := &w[r*stride+b]
					var sum int32
					for s := range nsub {
						var si int32
						if fam == famK6 {
							si = lb[b*lbBlock+s*64+t*16+lane]
						}
						for k := s * subLen; k < (s+1)*subLen; k++ {
							v := lq[b*lqBlock+(k/4)*64+t*16+lane]
							si += int32(wb.q[k]) * int32(int8(v>>(8*(k%4))))
						}
						sum += wb.sc[s] * si
					}
					f := ld[b*ldBlock+t*16+lane] * (wb.d * float32(sum))
					*o += f
					if fam == famK4 {
						for s := range 8 {
							*o -= wb.m[s] * lm[b*lmBlock+s*64+t*16+lane]
						}
					}
				}
			}
		}
	}
}

// The Q8_0 batch path (gemmQ8T{1..4} in gemm_vnni_amd64.s): the same
// tiles, chunks and token lanes, on the raw Q8_0 rows (no unpacking: the
// kernel makes the weights unsigned as it broadcasts them) and the 32-blocks
// of act32. Numerics, per block of 32 columns: the integer sum Σ w·a is
// exact, then y = fma(float32(Σ w·a), d_w·d_a, y), block after block; a
// row's bits depend only on its own activations.
//
// Token-lane activations of one call, for chunk c of 64 tokens, block b:
//
//	lq8 [c][b][8 steps][4 vectors][16 lanes] uint32: the int8 quants of
//	    columns 4·step..4·step+3 of the lane's token
//	ld  [c][b][4][16] float32: d_a
//	lc8 [c][b][4][16] int32: −128·Σ a, the correction for weights biased
//	    by 128
const (
	lq8Block = 8 * 4 * 16
	lc8Block = 4 * 16
)

// toLanes8 writes token j's activations a (nb blocks) into its lane of the
// Q8_0 layouts; a nil a writes zeros.
func toLanes8(lq []uint32, ld []float32, lc []int32, a []act32, j, nb int) {
	c, tv, lane := j/vnniChunk, j%vnniChunk/16, j%16
	for b := range nb {
		cb := c*nb + b
		q := lq[cb*lq8Block+tv*16+lane:]
		i := cb*ldBlock + tv*16 + lane
		if a == nil {
			for g := range 8 {
				q[g*64] = 0
			}
			ld[i], lc[i] = 0, 0
			continue
		}
		ab := &a[b]
		qs := unsafe.Slice((*uint32)(unsafe.Pointer(&ab.qs[0])), 8)
		for g, v := range qs {
			q[g*64] = v
		}
		ld[i], lc[i] = ab.d, -128*ab.sum
	}
}

// gemmQ8Generic is the Q8_0 kernel's twin: out[r][t][lane] (r < 3, t < T)
// += the products of the raw Q8_0 rows w[r·stride:] (nb blocks) with the T
// vectors of one chunk (lq, ld, lc start at the chunk's block 0), computed
// as the kernel does: the weights biased to unsigned and the correction.
func gemmQ8Generic(T int, out []float32, w []byte, stride int, lq []uint32, ld []float32, lc []int32, nb int) {
	for r := range vnniRows {
		for t := range T {
			for lane := range 16 {
				o := &out[(r*T+t)*16+lane]
				for b := range nb {
					wb := w[r*stride+34*b : r*stride+34*b+34]
					i := b*ldBlock + t*16 + lane
					sum := lc[i]
					for k := range 32 {
						v := lq[b*lq8Block+(k/4)*64+t*16+lane]
						sum += int32(wb[2+k]^0x80) * int32(int8(v>>(8*(k%4))))
					}
					sc := f16At(wb, 0) * ld[i]
					*o = float32(math.FMA(float64(float32(sum)), float64(sc), float64(*o)))
				}
			}
		}
	}
}

// gemmQ8R16Generic is gemmQ8R16's twin: out[r] (r < 16) = the product of
// the raw Q8_0 row w[r·stride:] with one token's activations a, computed as
// gemmQ8Generic computes a lane: the same integer sum and the same fma per
// block, so the same bits.
func gemmQ8R16Generic(out []float32, w []byte, stride int, a []act32) {
	for r := range 16 {
		var o float32
		for b := range a {
			wb := w[r*stride+34*b : r*stride+34*b+34]
			sum := -128 * a[b].sum
			for k := range 32 {
				sum += int32(wb[2+k]^0x80) * int32(a[b].qs[k])
			}
			sc := f16At(wb, 0) * a[b].d
			o = float32(math.FMA(float64(float32(sum)), float64(sc), float64(o)))
		}
		out[r] = o
	}
}
