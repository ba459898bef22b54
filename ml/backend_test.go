package ml

import (
	"math/rand/v2"
	"sort"
	"testing"
)

func TestTopKHost(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 5, 40, 1000, 32000} {
		for _, k := range []int{1, 3, 40, 64} {
			row := make([]float32, n)
			for i := range row {
				row[i] = float32(r.IntN(50)) // many ties
			}
			kk := min(k, n)
			ids, vals := make([]int32, kk), make([]float32, kk)
			TopKHost(row, k, ids, vals)
			idx := make([]int, n)
			for i := range idx {
				idx[i] = i
			}
			sort.SliceStable(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
			for i := 0; i < kk; i++ {
				if ids[i] != int32(idx[i]) || vals[i] != row[idx[i]] {
					t.Fatalf("n=%d k=%d: entry %d is (%d, %v), want (%d, %v)", n, k, i, ids[i], vals[i], idx[i], row[idx[i]])
				}
			}
		}
	}
}
