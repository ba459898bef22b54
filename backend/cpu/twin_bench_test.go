//go:build goexperiment.simd && amd64

package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// twin is one kernel run by its SIMD and its pure-Go implementation on the
// same inputs.
type twin struct {
	name          string
	simd, generic func()
}

// kernelTwins lists every SIMD kernel of the tables beside its pure-Go
// twin, on TinyLlama-sized rows (2048 columns) and vectors (2048 values,
// and 2047 for the tails).
func kernelTwins() []twin {
	s, g := simdKernels, &genericKernels
	sv, gv := simdVecKernels, &genericVec
	if s == nil || sv == nil {
		return nil
	}
	r := rand.New(rand.NewPCG(1, 2))
	const cols = 2048
	x := randomVec(r, cols)
	xs := make([]float32, cols/32)
	g.sums32(xs, x)
	a32 := make([]act32, 4*cols/32)
	g.quantize32(a32, randomVec(r, 4*cols))
	var tw []twin
	add := func(name string, f func(k *kernels)) {
		tw = append(tw, twin{name, func() { f(s) }, func() { f(g) }})
	}
	var sink float32
	for _, t := range []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		row := randomMatrix(r, t, 1, cols).Data
		add(fmt.Sprint("f32/", t), func(k *kernels) { sink += k.f32[t](row, x, xs) })
		if s.q832[t] != nil {
			add(fmt.Sprint("q832/", t), func(k *kernels) { sink += k.q832[t](row, a32[:cols/32]) })
		}
		if s.q832x4[t] != nil {
			add(fmt.Sprint("q832x4/", t), func(k *kernels) {
				if k.q832x4[t] == nil { // the twin: four one-vector products
					for j := range 4 {
						sink += k.q832[t](row, a32[j*cols/32:(j+1)*cols/32])
					}
					return
				}
				y0, y1, y2, y3 := k.q832x4[t](row, a32, cols/32)
				sink += y0 + y1 + y2 + y3
			})
		}
		if s.q8K[t] != nil {
			aK := make([]actK, cols/256)
			g.quantizeK(aK, x, g.k4[t])
			aKs := make([]actK, cols/256)
			s.quantizeK(aKs, x, s.k4[t])
			a15 := make([]actK15, cols/256)
			g.quantizeK15(a15, x, g.k4[t])
			a15s := make([]actK15, cols/256)
			s.quantizeK15(a15s, x, s.k4[t])
			pick := func(k *kernels) ([]actK, []actK15) {
				if k == s {
					return aKs, a15s
				}
				return aK, a15
			}
			add(fmt.Sprint("q8K/", t), func(k *kernels) { a, _ := pick(k); sink += k.q8K[t](row, a) })
			add(fmt.Sprint("q15K/", t), func(k *kernels) { _, a := pick(k); sink += k.q15K[t](row, a) })
			rp := make([]rpK, cols/256)
			add(fmt.Sprint("repack/", t), func(k *kernels) { k.repack(t, rp, row) })
			rv := make([]rpV, cols/256)
			add(fmt.Sprint("repackV/", t), func(k *kernels) { k.repackV(t, rv, row) })
			g.repack(t, rp, row)
			an := make([]actK, cols/256)
			bn := make([]actK, cols/256)
			g.quantizeK(an, x, false)
			g.quantizeK(bn, randomVec(r, cols), false)
			a15n := make([]actK15, cols/256)
			g.quantizeK15(a15n, x, false)
			add(fmt.Sprint("dotRp/", t), func(k *kernels) { sink += k.dotRp(rp, an) })
			add(fmt.Sprint("dotRp2/", t), func(k *kernels) { u, v := k.dotRp2(rp, an, bn); sink += u + v })
			add(fmt.Sprint("dotRp15/", t), func(k *kernels) { sink += k.dotRp15(rp, a15n) })
		}
	}
	// The many-row kernels on 8 rows (a decode tile) and, for the Q8_0
	// batch kernels, 3 rows × 64 tokens and 16 rows × 1 token; their twins:
	// the one-row kernel per row, gemmQ8Generic and gemmQ8R16Generic.
	for t, f := range s.f32Rows {
		if f == nil {
			continue
		}
		typ := gguf.Type(t)
		rb := typ.RowBytes(cols)
		rows := randomMatrix(r, typ, 8, cols).Data
		y := make([]float32, 8)
		add(fmt.Sprint("f32Rows/", typ), func(k *kernels) {
			if k.f32Rows[t] == nil {
				for i := range y {
					y[i] = k.f32[t](rows[i*rb:(i+1)*rb], x, nil)
				}
				return
			}
			k.f32Rows[t](y, rows, rb, x)
		})
	}
	if s.gemmQ8 != nil {
		const nb = cols / 32
		rb := gguf.Q8_0.RowBytes(cols)
		w := randomMatrix(r, gguf.Q8_0, vnniRows, cols).Data
		lq, ld, lc := make([]uint32, nb*lq8Block), make([]float32, nb*ldBlock), make([]int32, nb*lc8Block)
		for j := range 64 {
			toLanes8(lq, ld, lc, a32[j%4*nb:(j%4+1)*nb], j, nb)
		}
		out := make([]float32, vnniRows*4*16)
		add("gemmQ8/T4", func(k *kernels) {
			if k.gemmQ8 == nil {
				gemmQ8Generic(4, out, w, rb, lq, ld, lc, nb)
				return
			}
			k.gemmQ8(4, out, w, rb, lq, ld, lc, nb)
		})
	}
	if s.gemmQ8R16 != nil {
		rb := gguf.Q8_0.RowBytes(cols)
		w := randomMatrix(r, gguf.Q8_0, 16, cols).Data
		out := make([]float32, 16)
		add("gemmQ8R16", func(k *kernels) {
			if k.gemmQ8R16 == nil {
				gemmQ8R16Generic(out, w, rb, a32[:cols/32])
				return
			}
			k.gemmQ8R16(out, w, rb, a32[:cols/32])
		})
	}
	aK := make([]actK, cols/256)
	a15 := make([]actK15, cols/256)
	add("quantizeK", func(k *kernels) { k.quantizeK(aK, x, true) })
	add("quantizeK15", func(k *kernels) { k.quantizeK15(a15, x, true) })
	add("quantize32", func(k *kernels) { k.quantize32(a32[:cols/32], x) })
	add("sums32", func(k *kernels) { k.sums32(xs, x) })

	addV := func(name string, f func(k *vecKernels)) {
		tw = append(tw, twin{name, func() { f(sv) }, func() { f(gv) }})
	}
	for _, n := range []int{2048, 2047} {
		a, b := randomVec(r, n), randomVec(r, n)
		dst := make([]float32, n)
		addV(fmt.Sprint("dot/", n), func(k *vecKernels) { sink += k.dot(a, b) })
		addV(fmt.Sprint("axpy/", n), func(k *vecKernels) { k.axpy(dst, 1e-3, a) })
		addV(fmt.Sprint("expSum/", n), func(k *vecKernels) { copy(dst, a); sink += k.expSum(dst, 3) })
		addV(fmt.Sprint("swiglu/", n), func(k *vecKernels) { copy(dst, a); k.swiglu(dst, b) })
		addV(fmt.Sprint("sumSq/", n), func(k *vecKernels) { sink += float32(k.sumSq(a)) })
		addV(fmt.Sprint("scaleMul/", n), func(k *vecKernels) { k.scaleMul(dst, a, 0.5, b) })
		addV(fmt.Sprint("add/", n), func(k *vecKernels) { k.add(dst, a) })
	}
	// Attention over 100 and 512 positions, head size 64, 8 query heads
	// per KV head (the assembly path) and 2 (the archsimd one).
	for _, n := range []int{100, 512} {
		for _, nh := range []int{8, 2} {
			const hd = 64
			n16 := (n + 15) / 16 * 16
			q, kt, v := randomVec(r, nh*hd), randomVec(r, n16*hd), randomVec(r, n16*hd)
			out, sc := make([]float32, nh*hd), make([]float32, nh*n16+attnScratch)
			// Pages in pool order: logical page j is page j.
			kp, vp := make([]int, n16/16), make([]int, n16/16)
			for j := range kp {
				kp[j], vp[j] = j*16*hd, j*16*hd
			}
			addV(fmt.Sprintf("attnGroup/n%d/h%d", n, nh), func(k *vecKernels) { k.attnGroup(out, q, kt, v, kp, vp, hd, n, hd, 0.125, attnMask{}, sc) })
		}
	}
	_ = sink
	return tw
}

// BenchmarkTwin runs each SIMD kernel and then its pure-Go twin, so that
// with -count each round compares the two side by side.
// scripts/simd-guard (run by .ci/run) fails when a SIMD kernel is slower.
func BenchmarkTwin(b *testing.B) {
	tw := kernelTwins()
	if tw == nil {
		b.Skip("no SIMD kernels on this CPU (AVX-512 F/CD/BW/DQ/VL needed)")
	}
	for _, t := range tw {
		b.Run(t.name+"/simd", func(b *testing.B) {
			for b.Loop() {
				t.simd()
			}
		})
		b.Run(t.name+"/generic", func(b *testing.B) {
			for b.Loop() {
				t.generic()
			}
		})
	}
}
