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

// q80f32Rows is dotQ8_0F32SIMD for nrows rows at once (the same bits).
//
//go:noescape
func q80f32Rows(y *float32, rows *byte, rowBytes, nrows int, x *float32, nb int)

// The multi-vector decode kernels (matvec_vnni_v_amd64.s, written by
// asmgen): V vectors at once, each with the single-vector kernel's bits.

//go:noescape
func q4kq15RowsV2(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

//go:noescape
func q4kq15RowsV3(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

//go:noescape
func q4kq15RowsV4(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

//go:noescape
func q6kq15RowsV2(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

//go:noescape
func q6kq15RowsV3(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

//go:noescape
func q6kq15RowsV4(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

type q15VFunc = func(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)

var q15VAsm = [2][5]q15VFunc{
	{nil, nil, q4kq15RowsV2, q4kq15RowsV3, q4kq15RowsV4},
	{nil, nil, q6kq15RowsV2, q6kq15RowsV3, q6kq15RowsV4},
}

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
	_ = uint(unsafe.Offsetof(actK16{}.d) - 512)
	_ = uint(512 - unsafe.Offsetof(actK16{}.d))
	_ = uint(unsafe.Offsetof(actK16{}.ms) - 516)
	_ = uint(516 - unsafe.Offsetof(actK16{}.ms))
	_ = uint(unsafe.Offsetof(actK16{}.ms16) - 548)
	_ = uint(548 - unsafe.Offsetof(actK16{}.ms16))
	_ = uint(unsafe.Sizeof(actK16{}) - 640)
	_ = uint(640 - unsafe.Sizeof(actK16{}))
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
	k.gemmQ8 = gemmQ8AsmGo
	k.gemmQ8R16 = gemmQ8R16Go
	k.q15Rows[gguf.Q4_K] = q15RowsQ4_K
	k.f32Rows[gguf.Q8_0] = f32RowsQ8_0
	k.q15Rows[gguf.Q6_K] = q15RowsQ6_K
	k.q15RowsV[gguf.Q4_K] = q15RowsVQ4_K
	k.q15RowsV[gguf.Q6_K] = q15RowsVQ6_K
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

func f32RowsQ8_0(y []float32, rows []byte, rb int, x []float32) {
	if len(y) == 0 || len(x) < 32 {
		return
	}
	nb := len(x) / 32
	_ = rows[(len(y)-1)*rb+34*nb-1]
	q80f32Rows(&y[0], &rows[0], rb, len(y), &x[0], nb)
}

func q15RowsQ6_K(y []float32, rows []byte, rb int, a []actK15) {
	if len(y) == 0 || len(a) == 0 {
		return
	}
	_ = rows[len(y)*rb-1]
	_ = a[rb/210-1]
	q6kq15Rows(&y[0], &rows[0], rb, len(y), &a[0], rb/210)
}

func q15RowsVQ4_K(y []float32, ys, nr int, rows []byte, rb int, a []actK16, as, nv int) {
	q15RowsV(0, 144, y, ys, nr, rows, rb, a, as, nv)
}

func q15RowsVQ6_K(y []float32, ys, nr int, rows []byte, rb int, a []actK16, as, nv int) {
	q15RowsV(1, 210, y, ys, nr, rows, rb, a, as, nv)
}

// q15RowsV runs the nv-vector kernel (2 ≤ nv ≤ 4) of family f (0: Q4_K,
// 1: Q6_K, blocks of ts bytes).
func q15RowsV(f, ts int, y []float32, ys, nr int, rows []byte, rb int, a []actK16, as, nv int) {
	if nr <= 0 {
		return
	}
	nb := rb / ts
	_ = y[(nv-1)*ys+nr-1]
	_ = rows[nr*rb-1]
	_ = a[(nv-1)*as+nb-1]
	q15VAsm[f][nv](&y[0], 4*ys, &rows[0], rb, nr, &a[0], as*int(unsafe.Sizeof(actK16{})), nb)
}
