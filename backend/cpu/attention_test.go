package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"greta/ml"
)

// BenchmarkAttention: one layer of TinyLlama attention (32 heads, 4 KV
// heads, head size 64) for one new token at position pos (decode) or 64
// new tokens (prefill), 2 threads.
func BenchmarkAttention(b *testing.B) {
	a := &ml.Attn{NHeads: 32, NKVHeads: 4, HeadDim: 64, Scale: 1 / math.Sqrt(64)}
	for _, c := range []struct{ rows, pos int }{{1, 64}, {1, 512}, {64, 0}} {
		b.Run(fmt.Sprintf("rows%d/pos%d", c.rows, c.pos), func(b *testing.B) {
			be := New(2)
			defer be.Close()
			r := rand.New(rand.NewPCG(1, 2))
			cache, _ := be.NewKVCache(ml.KVSpec{Layers: 1, KVDim: 256, Pages: 1024 / ml.PageSize})
			q, k, v, d := be.NewTensor(2048, c.rows), be.NewTensor(256, c.rows), be.NewTensor(256, c.rows), be.NewTensor(2048, c.rows)
			for _, t := range []ml.Tensor{q, k, v} {
				x := t.(*Tensor)
				copy(x.d, randomVec(r, len(x.d)))
			}
			for p := 0; p < c.pos; p++ {
				k1, v1 := be.NewTensor(256, 1), be.NewTensor(256, 1)
				copy(k1.(*Tensor).d, randomVec(r, 256))
				copy(v1.(*Tensor).d, randomVec(r, 256))
				q1 := be.NewTensor(2048, 1)
				d1 := be.NewTensor(2048, 1)
				be.Begin(ml.Contiguous(p, 1, false))
				be.Attention(d1, q1, k1, v1, cache, 0, a)
			}
			be.Begin(ml.Contiguous(c.pos, c.rows, false))
			for b.Loop() {
				be.Attention(d, q, k, v, cache, 0, a)
			}
		})
	}
}
