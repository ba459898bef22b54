package cpu

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"greta/gguf"
)

// BenchmarkMatMulRolesGen: n generated rows (n sequences decoding
// together) through MatMulRoles under ActAuto, at TinyLlama-1.1B's FFN
// shapes, weights cold (from DRAM, as in a decode step), two threads.
// ns/row is the time per generated row: flat in n means aggregate decode
// grows with the batch; GB/s counts weight bytes once per call.
func BenchmarkMatMulRolesGen(b *testing.B) {
	shapes := []struct {
		name       string
		typ        gguf.Type
		rows, cols int
	}{
		{"ffn_up", gguf.Q4_K, 5632, 2048},
		{"ffn_down", gguf.Q4_K, 2048, 5632},
		{"ffn_down", gguf.Q6_K, 2048, 5632},
	}
	for _, sh := range shapes {
		ms := benchMatrices(sh.typ, sh.rows, sh.cols, coldBytes)
		for _, n := range []int{1, 2, 4, 8, 16, 64} {
			x := randomVec(rand.New(rand.NewPCG(7, 8)), n*sh.cols)
			y := make([]float32, n*sh.rows)
			gen := make([]bool, n)
			for i := range gen {
				gen[i] = true
			}
			for _, kc := range implCases(b) {
				if kc.generic && n > 4 {
					continue
				}
				name := fmt.Sprintf("%s/%s/%dx%d/%s/n%d", sh.typ, sh.name, sh.rows, sh.cols, kc.name, n)
				b.Run(name, func(b *testing.B) {
					p := NewPool(2)
					defer p.Close()
					p.Generic = kc.generic
					b.SetBytes(int64(len(ms[0].Data)))
					i := 0
					for b.Loop() {
						p.MatMulRoles(y, ms[i%len(ms)], x, n, gen)
						i++
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/row")
				})
			}
		}
	}
}

// BenchmarkMatMulRolesGenPaired: aggregate decode speedup of n generated
// rows in one call over decoding each alone, measured in pairs (one
// 1-row call, then one n-row call, on the next cold matrix each), which
// cancels most of a shared machine's drift: "speedup" is the median over
// the pairs of (time of the 1-row call) / (time of the n-row call / n).
func BenchmarkMatMulRolesGenPaired(b *testing.B) {
	if simdKernels == nil {
		b.Skip("SIMD kernels not built or not supported here")
	}
	shapes := []struct {
		name       string
		typ        gguf.Type
		rows, cols int
	}{
		{"ffn_up", gguf.Q4_K, 5632, 2048},
		{"ffn_down", gguf.Q4_K, 2048, 5632},
		{"ffn_down", gguf.Q6_K, 2048, 5632},
	}
	for _, sh := range shapes {
		ms := benchMatrices(sh.typ, sh.rows, sh.cols, coldBytes)
		x := randomVec(rand.New(rand.NewPCG(7, 8)), 64*sh.cols)
		y := make([]float32, 64*sh.rows)
		gen := make([]bool, 64)
		for i := range gen {
			gen[i] = true
		}
		for _, n := range []int{2, 4, 8, 16, 64} {
			b.Run(fmt.Sprintf("%s/%s/%dx%d/n%d", sh.typ, sh.name, sh.rows, sh.cols, n), func(b *testing.B) {
				p := NewPool(2)
				defer p.Close()
				var r []float64
				i := 0
				for b.Loop() {
					t0 := time.Now()
					p.MatMulRoles(y, ms[i%len(ms)], x, 1, gen)
					t1 := time.Now()
					p.MatMulRoles(y, ms[(i+1)%len(ms)], x, n, gen)
					t2 := time.Now()
					i += 2
					r = append(r, float64(t1.Sub(t0))*float64(n)/float64(t2.Sub(t1)))
				}
				slices.Sort(r)
				b.ReportMetric(r[len(r)/2], "speedup")
			})
		}
	}
}
