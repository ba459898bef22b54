package grammar

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time of the calling thread: on a shared machine it
// leaves out the time the benchmark waits for a core.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMask measures what structured output adds per generated token:
// Mask (cache lookup, on a miss a trie walk, and the -Inf writes over the
// logits row) plus Accept, for random-weight-model requests over the 10
// test schemas. "warm" reuses the grammars, as a server that keeps them
// does, after one pass over the same requests; "cold" compiles every
// schema afresh for each request, so each request pays for its misses.
// Reported: ns/token (per generated token) and miss% (masks computed by
// a trie walk). ns/op is per request and not comparable across rows.
func BenchmarkMask(b *testing.B) {
	for _, vc := range []struct{ name, file string }{{"spm", spmVocab}, {"bpe", bpeVocab}} {
		for _, mode := range []string{"warm", "cold"} {
			b.Run(vc.name+"/"+mode, func(b *testing.B) {
				v := sharedVocab(b, vc.file)
				compile := func() []*Grammar {
					gs := make([]*Grammar, len(testSchemas))
					for i, s := range testSchemas {
						gs[i] = mustCompileB(b, s)
					}
					return gs
				}
				gs := compile()
				logits := make([]float32, v.NumTokens())
				const requests = 20
				if mode == "warm" {
					for r := range requests {
						benchRequest(b, gs[r%len(gs)], v, r, logits)
					}
				}
				var spent, cpu time.Duration
				tokens, misses := 0, 0
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				b.ResetTimer()
				for it := 0; it < b.N; it++ {
					r := it % requests
					if mode == "cold" {
						gs = compile()
					}
					d, c, n, m := benchRequest(b, gs[r%len(gs)], v, r, logits)
					spent += d
					cpu += c
					tokens += n
					misses += m
				}
				b.ReportMetric(float64(spent.Nanoseconds())/float64(tokens), "ns/token")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(tokens), "cpu-ns/token")
				b.ReportMetric(float64(tokens)/float64(b.N), "tokens/req")
				b.ReportMetric(100*float64(misses)/float64(tokens), "miss%")
			})
		}
	}
}

func mustCompileB(b *testing.B, s string) *Grammar {
	g, err := CompileSchema([]byte(s))
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// benchRequest runs request r; it returns the time spent in Mask and
// Accept (not in making up logits or choosing), wall and thread CPU, the
// tokens and the misses.
func benchRequest(b *testing.B, g *Grammar, v *Vocab, r int, logits []float32) (time.Duration, time.Duration, int, int) {
	rng := rand.New(rand.NewPCG(uint64(r), 5))
	c := g.NewConstraint(v)
	var spent, cpu time.Duration
	n := 0
	before := c.c.misses
	for !c.Done() && n < maxSteps {
		for i := range logits {
			logits[i] = rng.Float32()
		}
		t0, c0 := time.Now(), threadCPU()
		c.Mask(logits)
		spent += time.Since(t0)
		cpu += threadCPU() - c0
		best := 0
		for i, l := range logits {
			if l > logits[best] {
				best = i
			}
		}
		t0, c0 = time.Now(), threadCPU()
		if err := c.Accept(int32(best)); err != nil {
			b.Fatal(err)
		}
		spent += time.Since(t0)
		cpu += threadCPU() - c0
		n++
	}
	return spent, cpu, n, c.c.misses - before
}
