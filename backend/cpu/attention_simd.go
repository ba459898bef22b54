//go:build goexperiment.simd && amd64

package cpu

import "simd/archsimd"

// Attention's products for head size 64, in attention_amd64.s (written by
// asmgen; AVX-512F).

//go:noescape
func attnScores8x64(s *float32, sstride int, q *float32, kt *float32, nb int, scale float32)

//go:noescape
func attnValues4x64(out *float32, w *float32, wstride int, v *float32, vstride int, n int)

// attnGroup64 is attnGroupSIMD for head size 64 and a multiple of 8 query
// heads per KV head: the kernels run page by page (one 16-position block of
// keys, then that page's values into part, added to out in logical order).
func attnGroup64(out, q, kc, vc []float32, kp, vp []int, stride, n int, scale float32, mask attnMask, scores []float32) {
	const hd = 64
	nh := len(q) / hd
	n16 := (n + 15) / 16 * 16
	np := n16 / 16
	_ = scores[nh*n16+4*hd-1]
	_ = out[nh*hd-1]
	_ = kp[np-1]
	_ = vp[np-1]
	for j := range np {
		_ = kc[kp[j]+16*hd-1]
		_ = vc[vp[j]+(min(16, n-16*j)-1)*stride+hd-1]
	}
	for h := 0; h < nh; h += 8 {
		for j := range np {
			attnScores8x64(&scores[h*n16+16*j], 4*n16, &q[h*hd], &kc[kp[j]], 1, scale)
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
		sum := expSumSIMD(s, maxSIMD(s))
		inv := bcast(1 / sum)
		i := 0
		for ; i+16 <= n; i += 16 {
			ldx(s, i).Mul(inv).Store((*[16]float32)(s[i : i+16]))
		}
		if i < n { // the tail divides, as the scalar twin
			archsimd.LoadFloat32x16SlicePart(s[i:]).Div(bcast(sum)).StoreSlicePart(s[i:])
		}
	}
	part := scores[nh*n16 : nh*n16+4*hd] // scratch past the scores (attnScratch)
	for h := 0; h < nh; h += 4 {
		o := out[h*hd : (h+4)*hd]
		attnValues4x64(&o[0], &scores[h*n16], 4*n16, &vc[vp[0]], 4*stride, min(16, n))
		for j := 1; j < np; j++ {
			attnValues4x64(&part[0], &scores[h*n16+16*j], 4*n16, &vc[vp[j]], 4*stride, min(16, n-16*j))
			addSIMD(o, part)
		}
	}
	archsimd.ClearAVXUpperBits()
}
