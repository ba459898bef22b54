//go:build goexperiment.simd && amd64

package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// BenchmarkQ15RowsL2: the decode kernels on 256 rows × 2048 or 93 rows ×
// 5632 (Q4_K ≤ 288 KiB, Q6_K ≤ 420 KiB: in L2), one thread: cycles per
// block without memory stalls. GB/s of weights.
func BenchmarkQ15RowsL2(b *testing.B) {
	if !hasVNNI {
		b.Skip("no VNNI")
	}
	for _, sh := range []struct{ rows, cols int }{{256, 2048}, {93, 5632}} {
		for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q6_K} {
			r := rand.New(rand.NewPCG(1, 2))
			w := randomMatrix(r, typ, sh.rows, sh.cols)
			x := randomVec(r, sh.cols)
			a := growAligned([]actK15(nil), sh.cols/256)
			simdKernels.quantizeK15(a, x, simdKernels.k4[typ])
			y := make([]float32, sh.rows)
			rb := typ.RowBytes(sh.cols)
			f := simdKernels.q15Rows[typ]
			b.Run(fmt.Sprintf("%s/%dx%d", typ, sh.rows, sh.cols), func(b *testing.B) {
				b.SetBytes(int64(len(w.Data)))
				for b.Loop() {
					f(y, w.Data, rb, a)
				}
			})
		}
	}
}

// BenchmarkQ15RowsVL2: the multi-vector decode kernels on BenchmarkQ15RowsL2's
// shapes, nv vectors, one thread; GB/s counts weight bytes once per call,
// ns/vec is the time per vector.
func BenchmarkQ15RowsVL2(b *testing.B) {
	if !hasVNNI {
		b.Skip("no VNNI")
	}
	for _, sh := range []struct{ rows, cols int }{{256, 2048}, {93, 5632}} {
		for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q6_K} {
			r := rand.New(rand.NewPCG(1, 2))
			w := randomMatrix(r, typ, sh.rows, sh.cols)
			nb := sh.cols / 256
			a := growAligned([]actK15(nil), 4*nb)
			for v := range 4 {
				simdKernels.quantizeK15(a[v*nb:(v+1)*nb], randomVec(r, sh.cols), simdKernels.k4[typ])
			}
			a16 := growAligned([]actK16(nil), 4*nb)
			toK16(a16, a)
			y := make([]float32, 4*sh.rows)
			rb := typ.RowBytes(sh.cols)
			f := simdKernels.q15RowsV[typ]
			for nv := 2; nv <= 4; nv++ {
				b.Run(fmt.Sprintf("%s/%dx%d/nv%d", typ, sh.rows, sh.cols, nv), func(b *testing.B) {
					b.SetBytes(int64(len(w.Data)))
					for b.Loop() {
						f(y, sh.rows, sh.rows, w.Data, rb, a16, nb, nv)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(nv), "ns/vec")
				})
			}
		}
	}
}
