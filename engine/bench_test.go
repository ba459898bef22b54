package engine_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"greta/engine"
	"greta/sample"
)

// BenchmarkDecode: aggregate decode of N sequences together on
// syn-spm-Q4_K_M (2 threads): each prefills 32 tokens, then generates 64;
// reports generated tokens per second over all sequences.
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("parallel%d", n), func(b *testing.B) {
			l := load(b, sharedModelB(b, "syn-spm-Q4_K_M.gguf"), newCPUThreads(b, 2))
			e := newEngine(b, l, engine.Options{Parallel: n})
			r := rand.New(rand.NewPCG(1, 1))
			reqs := requests(r, n, 1, 1, l.m.Config.VocabSize, l.tok.BOS())
			for i := range reqs {
				p := reqs[i].Prompt[:1]
				for len(p) < 32 {
					p = append(p, int32(3+r.IntN(1000)))
				}
				reqs[i] = engine.Request{Prompt: p, MaxTokens: 64, Sampling: sample.Params{Greedy: true}, IgnoreEOS: true}
			}
			var gen int
			for b.Loop() {
				for _, g := range runAll(b, e, reqs) {
					gen += len(g)
				}
			}
			b.ReportMetric(float64(gen)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
