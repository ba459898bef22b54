//go:build goexperiment.simd && amd64

package cpu

import (
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// BenchmarkQ15RowsL2: the decode kernels on 256 rows × 2048 (Q4_K 288 KiB,
// Q6_K 420 KiB: in L2), one thread: cycles per block without memory
// stalls. GB/s of weights.
func BenchmarkQ15RowsL2(b *testing.B) {
	if !hasVNNI {
		b.Skip("no VNNI")
	}
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q6_K} {
		r := rand.New(rand.NewPCG(1, 2))
		w := randomMatrix(r, typ, 256, 2048)
		x := randomVec(r, 2048)
		a := make([]actK15, 8)
		simdKernels.quantizeK15(a, x, simdKernels.k4[typ])
		y := make([]float32, 256)
		rb := typ.RowBytes(2048)
		f := simdKernels.q15Rows[typ]
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(int64(len(w.Data)))
			for b.Loop() {
				f(y, w.Data, rb, a)
			}
		})
	}
}
