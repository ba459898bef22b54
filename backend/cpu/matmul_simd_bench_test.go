//go:build goexperiment.simd && amd64

package cpu

import (
	"fmt"
	"simd/archsimd"
	"sync"
	"testing"
)

// readSum adds b as 64-byte vectors: a read-only sweep, the ceiling for a
// matrix-vector product (which reads its weights and writes almost nothing).
func readSum(b []byte) uint64 {
	var a0, a1, a2, a3 archsimd.Uint64x8
	for i := 0; i+256 <= len(b); i += 256 {
		a0 = a0.Add(archsimd.LoadUint8x64((*[64]uint8)(b[i:])).AsUint64x8())
		a1 = a1.Add(archsimd.LoadUint8x64((*[64]uint8)(b[i+64:])).AsUint64x8())
		a2 = a2.Add(archsimd.LoadUint8x64((*[64]uint8)(b[i+128:])).AsUint64x8())
		a3 = a3.Add(archsimd.LoadUint8x64((*[64]uint8)(b[i+192:])).AsUint64x8())
	}
	var t [8]uint64
	a0.Add(a1).Add(a2.Add(a3)).Store(&t)
	return t[0] + t[7]
}

var readSink uint64

// BenchmarkRead sweeps 256 MiB split over t goroutines.
func BenchmarkRead(b *testing.B) {
	const n = 256 << 20
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(i)
	}
	for _, t := range []int{1, 2} {
		b.Run(fmt.Sprintf("256MiB/t%d", t), func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				var wg sync.WaitGroup
				var mu sync.Mutex
				for i := range t {
					wg.Go(func() {
						s := readSum(buf[i*n/t : (i+1)*n/t])
						mu.Lock()
						readSink += s
						mu.Unlock()
					})
				}
				wg.Wait()
			}
		})
	}
}
