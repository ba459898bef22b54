package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// TestQ832x4Agrees checks that the four-vector kernels return, for each
// vector, the bits of the one-vector kernel (the batch path must not change
// a row's result), on odd and even block counts.
func TestQ832x4Agrees(t *testing.T) {
	k := simdKernels
	if k == nil {
		k = &genericKernels
	}
	r := rand.New(rand.NewPCG(5, 6))
	tested := 0
	for typ, dot4 := range k.q832x4 {
		if dot4 == nil {
			continue
		}
		tested++
		for _, nb := range []int{1, 7, 64} {
			m := randomMatrix(r, gguf.Type(typ), 1, 32*nb)
			x := make([]float32, 4*32*nb)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			a := make([]act32, 4*nb)
			k.quantize32(a, x)
			var y [4]float32
			y[0], y[1], y[2], y[3] = dot4(m.Data, a, nb)
			for j := range 4 {
				want := k.q832[typ](m.Data, a[j*nb:(j+1)*nb])
				if math.Float32bits(y[j]) != math.Float32bits(want) {
					t.Errorf("%v nb=%d vector %d: %v, want %v (the one-vector kernel's bits)", gguf.Type(typ), nb, j, y[j], want)
				}
			}
		}
	}
	if tested == 0 {
		t.Skip("no four-vector kernels in this build")
	}
}

// TestF32RowsAgree checks that the many-row float32 kernels (assembly)
// return, for each row, the bits of the archsimd one-row kernel, on odd and
// even block counts and with a scale of every exponent range.
func TestF32RowsAgree(t *testing.T) {
	k := simdKernels
	if k == nil {
		t.Skip("SIMD kernels not built or not supported here")
	}
	r := rand.New(rand.NewPCG(7, 8))
	tested := 0
	for typ, f := range k.f32Rows {
		if f == nil {
			continue
		}
		tested++
		for _, nb := range []int{1, 2, 7, 64} {
			const rows = 5
			m := randomMatrix(r, gguf.Type(typ), rows, 32*nb)
			rb := gguf.Type(typ).RowBytes(m.Cols)
			if gguf.Type(typ) == gguf.Q8_0 {
				m.Data[0], m.Data[1] = 0x01, 0x00     // a subnormal scale
				m.Data[rb], m.Data[rb+1] = 0xff, 0x7b // 65504
			}
			x := randomVec(r, m.Cols)
			y := make([]float32, rows)
			f(y, m.Data, rb, x)
			for i := range rows {
				want := k.f32[typ](m.Data[i*rb:(i+1)*rb], x, nil)
				if math.Float32bits(y[i]) != math.Float32bits(want) {
					t.Errorf("%v nb=%d row %d: %v, want %v (the one-row kernel's bits)", gguf.Type(typ), nb, i, y[i], want)
				}
			}
		}
	}
	if tested == 0 {
		t.Skip("no many-row float32 kernels here")
	}
}
