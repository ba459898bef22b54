//go:build goexperiment.simd && amd64

package cpu

import (
	"simd/archsimd"
	"unsafe"

	"greta/gguf"
)

// The assembly kernels (AVX-512 with VNNI: VPDPBUSD, 32 vector registers),
// in *_vnni_amd64.s. archsimd exposes neither VNNI nor the upper 16
// registers, which is why these are assembly. Each has a pure-Go twin with
// the same integer sums, which the tests compare against the oracle too.

//go:noescape
func q4kq15Rows(y *float32, rows *byte, rowBytes, nrows int, a *actK15, nb int)

//go:noescape
func q6kq15Rows(y *float32, rows *byte, rowBytes, nrows int, a *actK15, nb int)

// The assembly reads actK15 at fixed offsets.
const (
	_ = uint(unsafe.Offsetof(actK15{}.lo) - 256)
	_ = uint(256 - unsafe.Offsetof(actK15{}.lo))
	_ = uint(unsafe.Offsetof(actK15{}.d) - 512)
	_ = uint(512 - unsafe.Offsetof(actK15{}.d))
	_ = uint(unsafe.Offsetof(actK15{}.ms) - 516)
	_ = uint(516 - unsafe.Offsetof(actK15{}.ms))
	_ = uint(unsafe.Offsetof(actK15{}.ms16) - 548)
	_ = uint(548 - unsafe.Offsetof(actK15{}.ms16))
	_ = uint(unsafe.Sizeof(actK15{}) - 640)
	_ = uint(640 - unsafe.Sizeof(actK15{}))
)

// hasVNNI reports whether the CPU runs the assembly kernels.
var hasVNNI = archsimd.X86.AVX512() && archsimd.X86.AVX512VNNI()

// installVNNI puts the assembly kernels into k (called by matmul_simd.go's
// init after the archsimd ones).
func installVNNI(k *kernels) {
	if !hasVNNI {
		return
	}
	k.repackV = repackVSIMD
	k.gemmV = gemmVAsm
	k.q15Rows[gguf.Q4_K] = q15RowsQ4_K
	k.q15Rows[gguf.Q6_K] = q15RowsQ6_K
	k.q15K[gguf.Q4_K] = func(row []byte, a []actK15) float32 {
		var y [1]float32
		q15RowsQ4_K(y[:], row, len(row), a)
		return y[0]
	}
	k.q15K[gguf.Q6_K] = func(row []byte, a []actK15) float32 {
		var y [1]float32
		q15RowsQ6_K(y[:], row, len(row), a)
		return y[0]
	}
}

func q15RowsQ4_K(y []float32, rows []byte, rb int, a []actK15) {
	if len(y) == 0 || len(a) == 0 {
		return
	}
	_ = rows[len(y)*rb-1]
	_ = a[rb/144-1]
	q4kq15Rows(&y[0], &rows[0], rb, len(y), &a[0], rb/144)
}

func q15RowsQ6_K(y []float32, rows []byte, rb int, a []actK15) {
	if len(y) == 0 || len(a) == 0 {
		return
	}
	_ = rows[len(y)*rb-1]
	_ = a[rb/210-1]
	q6kq15Rows(&y[0], &rows[0], rb, len(y), &a[0], rb/210)
}
