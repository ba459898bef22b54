package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// TestGemmV: the batch microkernel (assembly where built) against its
// pure-Go twin, for every kernel family and vector count, on random rows
// and activations; and the pure-Go twin against the float64 oracle fed the
// same 8-bit activations.
func TestGemmV(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	const nb = 3
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		fam := vnniFamily(typ)
		w := randomMatrix(r, typ, vnniRows, nb*256)
		rb := typ.RowBytes(w.Cols)
		rv := make([]rpV, vnniRows*nb)
		for i := range vnniRows {
			repackVGeneric(typ, rv[i*nb:(i+1)*nb], w.Data[i*rb:(i+1)*rb])
		}
		for T := 1; T <= 4; T++ {
			n := 16*T - 3 // padding lanes in the last vector
			x := randomVec(r, n*w.Cols)
			lq := make([]uint32, nb*lqBlock)
			ld := make([]float32, nb*ldBlock)
			lm := make([]float32, nb*lmBlock)
			lb := make([]int32, nb*lbBlock)
			a := make([]actK, nb)
			for j := range 16 * T {
				if j >= n {
					toLanes(lq, ld, lm, lb, nil, j, nb, fam)
					continue
				}
				quantizeKGeneric(a, x[j*w.Cols:(j+1)*w.Cols], false)
				toLanes(lq, ld, lm, lb, a, j, nb, fam)
			}
			want := make([]float32, vnniRows*T*16)
			gemmVGeneric(fam, T, want, rv, nb, lq, ld, lm, lb, nb)
			name := fmt.Sprintf("%s/T%d", typ, T)
			// Twin vs oracle.
			xq := dequantizedActivations(&genericKernels, gguf.Q6_K, x, n, w.Cols, false)
			ref := refMatMul(w, xq, n)
			got := make([]float32, n*vnniRows)
			ref2 := make([]float64, n*vnniRows)
			for row := range vnniRows {
				for j := range n {
					got[j*vnniRows+row] = want[(row*T+j/16)*16+j%16]
					ref2[j*vnniRows+row] = ref[j*vnniRows+row]
				}
			}
			if e := nmse(got, ref2); !(e <= nmseF32) {
				t.Errorf("%s twin vs oracle: NMSE %.3g", name, e)
			}
			for lane := n % 16; lane < 16 && n%16 != 0; lane++ {
				for row := range vnniRows {
					if v := want[(row*T+T-1)*16+lane]; v != 0 {
						t.Errorf("%s padding lane %d row %d = %v", name, lane, row, v)
					}
				}
			}
			if simdKernels == nil || simdKernels.gemmV == nil {
				continue
			}
			gotA := make([]float32, len(want))
			simdKernels.gemmV(fam, T, gotA, rv, nb, lq, ld, lm, lb, nb)
			w64 := make([]float64, len(want))
			for i, v := range want {
				w64[i] = float64(v)
			}
			if e := nmse(gotA, w64); !(e <= 1e-12) {
				t.Errorf("%s assembly vs twin: NMSE %.3g", name, e)
			}
		}
	}
	if simdKernels == nil || simdKernels.gemmV == nil {
		t.Log("no VNNI kernels here: tested the pure-Go twin only")
	}
}

// TestRepackVAgrees: the SIMD unpacker writes what its twin writes.
func TestRepackVAgrees(t *testing.T) {
	if simdKernels == nil || simdKernels.repackV == nil {
		t.Skip("SIMD kernels not built or not supported here")
	}
	r := rand.New(rand.NewPCG(43, 44))
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		w := randomMatrix(r, typ, 1, 1024)
		a, b := make([]rpV, 4), make([]rpV, 4)
		for i := range b {
			b[i].sc[15], b[i].m[7] = 99, 99 // must be overwritten
		}
		genericKernels.repackV(typ, a, w.Data)
		simdKernels.repackV(typ, b, w.Data)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s block %d differs:\n%+v\n%+v", typ, i, a[i], b[i])
			}
		}
	}
}

// TestGemmQ8: the Q8_0 batch kernel (assembly where built) against its
// pure-Go twin for every vector count, on random rows (extreme weights
// −128 and 127 included, where the bias trick could go wrong) and
// activations; and the twin against the float64 oracle fed the same 8-bit
// activations.
func TestGemmQ8(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	const nb = 5
	w := randomMatrix(r, gguf.Q8_0, vnniRows, nb*32)
	rb := gguf.Q8_0.RowBytes(w.Cols)
	w.Data[2], w.Data[3], w.Data[rb+40] = 0x80, 0x7f, 0x80
	for T := 1; T <= 4; T++ {
		n := 16*T - 5
		x := randomVec(r, n*w.Cols)
		x[3] = 0 // a zero block
		for i := range 32 {
			x[32+i] = 0
		}
		lq := make([]uint32, nb*lq8Block)
		ld := make([]float32, nb*ldBlock)
		lc := make([]int32, nb*lc8Block)
		a := make([]act32, nb)
		for j := range 16 * T {
			if j >= n {
				toLanes8(lq, ld, lc, nil, j, nb)
				continue
			}
			quantize32Generic(a, x[j*w.Cols:(j+1)*w.Cols])
			toLanes8(lq, ld, lc, a, j, nb)
		}
		want := make([]float32, vnniRows*T*16)
		gemmQ8Generic(T, want, w.Data, rb, lq, ld, lc, nb)
		name := fmt.Sprintf("T%d", T)
		xq := dequantizedActivations(&genericKernels, gguf.Q8_0, x, n, w.Cols, false)
		ref := refMatMul(w, xq, n)
		got := make([]float32, n*vnniRows)
		for row := range vnniRows {
			for j := range n {
				got[j*vnniRows+row] = want[(row*T+j/16)*16+j%16]
			}
		}
		if e := nmse(got, ref); !(e <= nmseF32) {
			t.Errorf("%s twin vs oracle: NMSE %.3g", name, e)
		}
		for lane := n % 16; lane < 16; lane++ {
			for row := range vnniRows {
				if v := want[(row*T+T-1)*16+lane]; v != 0 {
					t.Errorf("%s padding lane %d row %d = %v", name, lane, row, v)
				}
			}
		}
		if simdKernels == nil || simdKernels.gemmQ8 == nil {
			continue
		}
		gotA := make([]float32, len(want))
		simdKernels.gemmQ8(T, gotA, w.Data, rb, lq, ld, lc, nb)
		w64 := make([]float64, len(want))
		for i, v := range want {
			w64[i] = float64(v)
		}
		if e := nmse(gotA, w64); !(e <= 1e-12) {
			t.Errorf("%s assembly vs twin: NMSE %.3g", name, e)
		}
		diff := 0
		for i := range want {
			if math.Float32bits(gotA[i]) != math.Float32bits(want[i]) {
				diff++
			}
		}
		t.Logf("%s: %d of %d outputs differ in bits between assembly and twin", name, diff, len(want))
	}
	if simdKernels == nil || simdKernels.gemmQ8 == nil {
		t.Log("no VNNI kernels here: tested the pure-Go twin only")
	}
}

// TestGemmQ8R16: the one-token Q8_0 kernel gives each of its 16 rows the
// bits that gemmQ8 gives the token in a lane (batch invariance), for its
// twin and (where built) its assembly.
func TestGemmQ8R16(t *testing.T) {
	r := rand.New(rand.NewPCG(47, 48))
	for _, nb := range []int{1, 3, 8} {
		w := randomMatrix(r, gguf.Q8_0, 18, nb*32)
		rb := gguf.Q8_0.RowBytes(w.Cols)
		w.Data[2], w.Data[3], w.Data[5*rb+9] = 0x80, 0x7f, 0x80
		x := randomVec(r, w.Cols)
		a := make([]act32, nb)
		quantize32Generic(a, x)
		lq := make([]uint32, nb*lq8Block)
		ld := make([]float32, nb*ldBlock)
		lc := make([]int32, nb*lc8Block)
		toLanes8(lq, ld, lc, a, 0, nb)
		for j := 1; j < 16; j++ {
			toLanes8(lq, ld, lc, nil, j, nb)
		}
		want := make([]float32, 18)
		o := make([]float32, vnniRows*16)
		for g := 0; g < 18; g += vnniRows {
			clear(o)
			gemmQ8Generic(1, o, w.Data[g*rb:], rb, lq, ld, lc, nb)
			for i := range vnniRows {
				want[g+i] = o[i*16]
			}
		}
		ks := []struct {
			name string
			f    func([]float32, []byte, int, []act32)
		}{{"twin", gemmQ8R16Generic}}
		if simdKernels != nil && simdKernels.gemmQ8R16 != nil {
			ks = append(ks, struct {
				name string
				f    func([]float32, []byte, int, []act32)
			}{"assembly", simdKernels.gemmQ8R16})
		}
		for _, k := range ks {
			for _, off := range []int{0, 2} {
				got := make([]float32, 16)
				k.f(got, w.Data[off*rb:], rb, a)
				for i, v := range got {
					if math.Float32bits(v) != math.Float32bits(want[off+i]) {
						t.Errorf("%s nb=%d rows from %d: row %d is %v, the lane kernel's %v", k.name, nb, off, i, v, want[off+i])
					}
				}
			}
		}
	}
}
