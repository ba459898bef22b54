package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

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
