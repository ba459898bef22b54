package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// tlShapes are TinyLlama-1.1B's matrices (dim 2048, ffn 5632) as the
// Q4_K_M file stores them, and two as the Q8_0 file does.
var tlShapes = []struct {
	name       string
	typ        gguf.Type
	rows, cols int
}{
	{"attn_q", gguf.Q4_K, 2048, 2048},
	{"ffn_up", gguf.Q4_K, 5632, 2048},
	{"ffn_down", gguf.Q4_K, 2048, 5632},
	{"ffn_down", gguf.Q6_K, 2048, 5632},
	{"ffn_up", gguf.Q8_0, 5632, 2048},
	{"ffn_down", gguf.Q8_0, 2048, 5632},
}

// BenchmarkDecodeTL: one vector times a TinyLlama matrix read from DRAM,
// 2 threads; GB/s of weights. Variants: assembly (VNNI) kernels or not.
func BenchmarkDecodeTL(b *testing.B) {
	for _, sh := range tlShapes {
		ms := benchMatrices(sh.typ, sh.rows, sh.cols, coldBytes)
		x := randomVec(rand.New(rand.NewPCG(1, 2)), sh.cols)
		y := make([]float32, sh.rows)
		for _, act := range []Activations{ActQ15, ActQ8} {
			for _, novnni := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/%v/vnni=%v", sh.typ, sh.name, act, !novnni)
				b.Run(name, func(b *testing.B) {
					p := NewPool(2)
					defer p.Close()
					p.Act, p.noVNNI = act, novnni
					b.SetBytes(int64(len(ms[0].Data)))
					i := 0
					for b.Loop() {
						p.MatMul(y, ms[i%len(ms)], x, 1)
						i++
					}
				})
			}
		}
	}
}

// BenchmarkPrefillTL: n vectors times a TinyLlama matrix (in cache),
// 2 threads, GFLOP/s.
func BenchmarkPrefillTL(b *testing.B) {
	for _, sh := range tlShapes {
		w := benchMatrices(sh.typ, sh.rows, sh.cols, 0)[0]
		for _, n := range []int{64, 512} {
			x := randomVec(rand.New(rand.NewPCG(3, 4)), n*sh.cols)
			y := make([]float32, n*sh.rows)
			for _, novnni := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/n%d/vnni=%v", sh.typ, sh.name, n, !novnni)
				b.Run(name, func(b *testing.B) {
					p := NewPool(2)
					defer p.Close()
					p.noVNNI = novnni
					for b.Loop() {
						p.MatMul(y, w, x, n)
					}
					b.ReportMetric(2*float64(sh.rows*sh.cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkDecodeTLHot: the same products with the matrix in cache and one
// thread: the kernels' compute rate, without DRAM.
func BenchmarkDecodeTLHot(b *testing.B) {
	for _, sh := range tlShapes {
		w := benchMatrices(sh.typ, sh.rows, sh.cols, 0)[0]
		x := randomVec(rand.New(rand.NewPCG(1, 2)), sh.cols)
		y := make([]float32, sh.rows)
		for _, act := range []Activations{ActQ15, ActQ8} {
			b.Run(fmt.Sprintf("%s/%s/%v/t1", sh.typ, sh.name, act), func(b *testing.B) {
				p := NewPool(1)
				defer p.Close()
				p.Act = act
				b.SetBytes(int64(len(w.Data)))
				for b.Loop() {
					p.MatMul(y, w, x, 1)
				}
			})
		}
	}
}
