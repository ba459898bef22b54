package cpu

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"greta/gguf"
)

// Benchmarks. GB/s (b.SetBytes) counts weight bytes streamed, once per
// MatMul. "cold" benchmarks cycle through enough copies of the matrix
// (≥ 96 MiB, three times the 32 MiB L3 here) that every call reads its
// weights from DRAM, as a decode step does; "hot" ones reuse one matrix,
// which stays in L3 when it fits (4096×4096 Q4_K is 9 MiB).

const coldBytes = 96 << 20

// BenchmarkCopy is the yardstick: copy() of a 256 MiB buffer, split over t
// goroutines. SetBytes counts the bytes copied once (each is read and
// written).
func BenchmarkCopy(b *testing.B) {
	const n = 256 << 20
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src)
	for _, t := range []int{1, 2} {
		b.Run(fmt.Sprintf("256MiB/t%d", t), func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				var wg sync.WaitGroup
				for i := range t {
					wg.Go(func() { copy(dst[i*n/t:(i+1)*n/t], src[i*n/t:(i+1)*n/t]) })
				}
				wg.Wait()
			}
		})
	}
}

// benchMatrices returns copies of one random rows×cols matrix of type t
// spanning at least total bytes (at least one copy).
func benchMatrices(t gguf.Type, rows, cols, total int) []*Matrix {
	r := rand.New(rand.NewPCG(uint64(t), uint64(rows)))
	m := randomMatrix(r, t, rows, cols)
	ms := []*Matrix{m}
	for size := len(m.Data); size < total; size += len(m.Data) {
		c := *m
		c.Data = append([]byte(nil), m.Data...)
		ms = append(ms, &c)
	}
	return ms
}

func implCases(b *testing.B) []kernelCase {
	c := []kernelCase{{"purego", true}}
	if simdKernels != nil {
		c = append(c, kernelCase{"simd", false})
	}
	return c
}

// BenchmarkMatVec: y = W·x for one vector (decode), the shapes of a
// Llama-3-8B layer (4096×4096 attention, 14336×4096 FFN up/gate).
func BenchmarkMatVec(b *testing.B) {
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q6_K, gguf.Q8_0} {
		for _, sh := range []struct{ rows, cols int }{{4096, 4096}, {14336, 4096}} {
			for _, temp := range []string{"cold", "hot"} {
				total := coldBytes
				if temp == "hot" {
					if typ != gguf.Q4_K || sh.rows != 4096 {
						continue
					}
					total = 0
				}
				ms := benchMatrices(typ, sh.rows, sh.cols, total)
				x := randomVec(rand.New(rand.NewPCG(1, 2)), sh.cols)
				y := make([]float32, sh.rows)
				for _, kc := range implCases(b) {
					for _, act := range []Activations{ActF32, ActQ8, ActQ15} {
						for _, threads := range []int{1, 2} {
							if act == ActQ15 && typ == gguf.Q8_0 {
								continue // Q8_0 keeps float32 under ActQ15
							}
							name := fmt.Sprintf("%s/%dx%d/%s/%s/%v/t%d", typ, sh.rows, sh.cols, temp, kc.name, act, threads)
							b.Run(name, func(b *testing.B) {
								p := NewPool(threads)
								defer p.Close()
								p.Generic, p.Act = kc.generic, act
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
		}
	}
}

// BenchmarkMatMulBatch: prefill-sized products at TinyLlama-1.1B shapes
// (dim 2048, ffn 5632), reported as GFLOP/s (2·rows·cols·n per call).
func BenchmarkMatMulBatch(b *testing.B) {
	shapes := []struct {
		name       string
		typ        gguf.Type
		rows, cols int
	}{
		{"attn_q", gguf.Q4_K, 2048, 2048},
		{"ffn_up", gguf.Q4_K, 5632, 2048},
		{"ffn_down", gguf.Q4_K, 2048, 5632},
		{"ffn_down", gguf.Q6_K, 2048, 5632},
	}
	for _, sh := range shapes {
		w := benchMatrices(sh.typ, sh.rows, sh.cols, 0)[0]
		for _, n := range []int{64, 512} {
			x := randomVec(rand.New(rand.NewPCG(3, 4)), n*sh.cols)
			y := make([]float32, n*sh.rows)
			for _, kc := range implCases(b) {
				for _, act := range []Activations{ActF32, ActQ8, ActQ15} {
					if kc.generic && n == 512 {
						continue // minutes per iteration; n=64 shows the pure-Go rate
					}
					name := fmt.Sprintf("%s/%s/%dx%d/n%d/%s/%v/t2", sh.typ, sh.name, sh.rows, sh.cols, n, kc.name, act)
					b.Run(name, func(b *testing.B) {
						p := NewPool(2)
						defer p.Close()
						p.Generic, p.Act = kc.generic, act
						for b.Loop() {
							p.MatMul(y, w, x, n)
						}
						b.ReportMetric(2*float64(sh.rows*sh.cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					})
				}
			}
		}
	}
}

// BenchmarkMatVecSmall: a dim-64 model's product (stories260K), where the
// dispatch overhead dominates.
func BenchmarkMatVecSmall(b *testing.B) {
	w := benchMatrices(gguf.F32, 64, 64, 0)[0]
	x := randomVec(rand.New(rand.NewPCG(5, 6)), 64)
	y := make([]float32, 64)
	p := NewPool(2)
	defer p.Close()
	for b.Loop() {
		p.MatMul(y, w, x, 1)
	}
}
