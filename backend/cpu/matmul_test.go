package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"greta/gguf"
	"greta/quant"
)

// The tolerances of MatMul against a float64 reference, as NMSE over the
// whole output, Σ(y−ref)²/Σref², on random weights and N(0,1) inputs:
//
//   - float32 activations: every weight is exact and only float32 sums round.
//     Dots of up to 1024 terms lose ~1e-6 relative in the worst rows;
//     nmseF32 = 1e-9 leaves ~100× margin over what the tests measure.
//   - 8-bit activations against the reference on the *dequantized 8-bit
//     activations*: the integer sums are exact, so again only float32
//     rounding: nmseF32 too.
//   - 8-bit activations against the reference on the original float32
//     activations: rounding each value to a step of amax/127 costs an NMSE
//     of ~5e-5 on average over many outputs, with a heavy tail on single
//     dots that cancel. nmseQ8 = 1e-3 (llama.cpp's level on logits) is
//     checked only on outputs of at least 64 values; docs/QUANT.md reports
//     measured values.
//   - 15-bit activations against the float32 oracle: steps 128× finer than
//     8 bits, so ~16000× less NMSE: nmseQ15 = 1e-7 on outputs of at least
//     64 values, 1e-5 on the single dots that cancel.
const (
	nmseF32 = 1e-9
	nmseQ8  = 1e-3
	nmseQ15 = 1e-7
)

var allTypes = []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

func isQuantized(t gguf.Type) bool {
	return t == gguf.Q8_0 || t == gguf.Q4_0 || t == gguf.Q4_K || t == gguf.Q5_K || t == gguf.Q6_K
}

// randomMatrix returns a rows×cols matrix of type t with random contents:
// N(0, 0.1²) values for float types, random quants with scales of ±0.01 for
// block types.
func randomMatrix(r *rand.Rand, t gguf.Type, rows, cols int) *Matrix {
	n := rows * cols
	if !isQuantized(t) {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 0.1)
		}
		b := make([]byte, t.RowBytes(n))
		if err := quant.Quantize(t, b, x); err != nil {
			panic(err)
		}
		return &Matrix{Type: t, Cols: cols, Rows: rows, Data: b}
	}
	b := make([]byte, t.RowBytes(n))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	ts := t.TypeSize()
	put := func(off int, v float64) {
		h := quant.F32ToF16(float32(v))
		b[off], b[off+1] = byte(h), byte(h>>8)
	}
	for o := 0; o < len(b); o += ts {
		switch t {
		case gguf.Q8_0, gguf.Q4_0:
			put(o, (r.Float64()*2-1)*0.01)
		case gguf.Q4_K, gguf.Q5_K:
			put(o, r.Float64()*0.01)
			put(o+2, r.Float64()*0.01)
		case gguf.Q6_K:
			put(o+quant.Q6_KOffD, (r.Float64()*2-1)*0.01)
		}
	}
	return &Matrix{Type: t, Cols: cols, Rows: rows, Data: b}
}

func randomVec(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// refMatMul is the float64 oracle: y[j][r] = DotRef(row r, x[j]).
func refMatMul(w *Matrix, x []float32, n int) []float64 {
	rb := w.Type.RowBytes(w.Cols)
	y := make([]float64, n*w.Rows)
	for j := range n {
		for r := range w.Rows {
			y[j*w.Rows+r] = quant.DotRef(w.Type, w.Data[r*rb:(r+1)*rb], x[j*w.Cols:(j+1)*w.Cols])
		}
	}
	return y
}

func nmse(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		d := float64(got[i]) - w
		num += d * d
		den += w * w
	}
	return num / den
}

// dequantizedActivations returns x as the q8 kernels see it: each vector
// quantized with ks's quantizer and decoded to float32.
func dequantizedActivations(ks *kernels, t gguf.Type, x []float32, n, cols int, q15 bool) []float32 {
	out := make([]float32, len(x))
	for j := range n {
		xj, oj := x[j*cols:(j+1)*cols], out[j*cols:(j+1)*cols]
		if q15 {
			a := make([]actK15, cols/256)
			ks.quantizeK15(a, xj, false)
			for i := range oj {
				b := &a[i/256]
				oj[i] = b.d * float32(128*int32(b.hi[i%256])+int32(b.lo[i%256]))
			}
			continue
		}
		if t == gguf.Q8_0 || t == gguf.Q4_0 {
			a := make([]act32, cols/32)
			ks.quantize32(a, xj)
			for i := range oj {
				oj[i] = a[i/32].d * float32(a[i/32].qs[i%32])
			}
			continue
		}
		a := make([]actK, cols/256)
		ks.quantizeK(a, xj, ks.k4[t])
		for i := range oj {
			p := i % 256
			if ks.k4[t] {
				p = int(k4Pos[p])
			}
			oj[i] = a[i/256].d * float32(a[i/256].qs[p])
		}
	}
	return out
}

type kernelCase struct {
	name    string
	generic bool
}

func kernelCases(t testing.TB) []kernelCase {
	c := []kernelCase{{"generic", true}}
	if simdKernels != nil {
		c = append(c, kernelCase{"simd", false})
	} else {
		t.Logf("SIMD kernels not built or not supported here (build with GOEXPERIMENT=simd on AVX-512); testing the pure-Go twins only")
	}
	return c
}

// TestMatMul compares every kernel (pure Go and SIMD, single vector and
// batch, float32 and 8-bit activations) with the float64 oracle on fresh
// random data, with row counts that are not multiples of the tile size.
func TestMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	p := NewPool(2)
	defer p.Close()
	shapes := []struct{ rows, cols, n int }{
		{1, 256, 1}, {13, 512, 1}, {37, 768, 1}, {64, 1024, 1},
		{7, 256, 2}, {19, 512, 5}, {70, 768, 33}, {3, 1024, 64},
	}
	for _, kc := range kernelCases(t) {
		ks := &genericKernels
		if !kc.generic {
			ks = simdKernels
		}
		p.Generic = kc.generic
		for _, typ := range allTypes {
			for _, sh := range shapes {
				w := randomMatrix(r, typ, sh.rows, sh.cols)
				x := randomVec(r, sh.n*sh.cols)
				ref := refMatMul(w, x, sh.n)
				y := make([]float32, sh.n*sh.rows)
				name := fmt.Sprintf("%s/%s/%dx%d/n%d", kc.name, typ, sh.rows, sh.cols, sh.n)

				p.Act = ActF32
				p.MatMul(y, w, x, sh.n)
				if e := nmse(y, ref); !(e <= nmseF32) {
					t.Errorf("%s f32 activations: NMSE %.3g > %.0g", name, e, nmseF32)
				}
				if !isQuantized(typ) {
					continue
				}
				p.Act = ActQ8
				clear(y)
				p.MatMul(y, w, x, sh.n)
				xq := dequantizedActivations(ks, typ, x, sh.n, sh.cols, false)
				if e := nmse(y, refMatMul(w, xq, sh.n)); !(e <= nmseF32) {
					t.Errorf("%s q8 activations vs oracle on the same 8-bit activations: NMSE %.3g > %.0g", name, e, nmseF32)
				}
				if e := nmse(y, ref); len(y) >= 64 && !(e <= nmseQ8) {
					t.Errorf("%s q8 activations vs float32 oracle: NMSE %.3g > %.0g", name, e, nmseQ8)
				}
				if typ == gguf.Q8_0 || typ == gguf.Q4_0 {
					continue
				}
				p.Act = ActQ15
				clear(y)
				p.MatMul(y, w, x, sh.n)
				xq = dequantizedActivations(ks, typ, x, sh.n, sh.cols, true)
				if e := nmse(y, refMatMul(w, xq, sh.n)); !(e <= nmseF32) {
					t.Errorf("%s q15 activations vs oracle on the same 15-bit activations: NMSE %.3g > %.0g", name, e, nmseF32)
				}
				bound := nmseQ15
				if len(y) < 64 {
					bound = 1e-5
				}
				if e := nmse(y, ref); !(e <= bound) {
					t.Errorf("%s q15 activations vs float32 oracle: NMSE %.3g > %.0g", name, e, bound)
				}
			}
		}
	}
}

// TestActMode: with SIMD kernels ActAuto takes 15-bit activations for
// n == 1 on K-quants, float32 on other types, 8-bit ones for n > 1; without
// them float32. ActQ15 covers the K-quants only.
func TestActMode(t *testing.T) {
	for _, c := range []struct {
		a    Activations
		t    gguf.Type
		n    int
		simd bool
		want actMode
	}{
		{ActAuto, gguf.Q4_K, 1, true, modeQ15}, {ActAuto, gguf.Q8_0, 1, true, modeF32}, {ActAuto, gguf.Q4_K, 1, false, modeF32},
		{ActAuto, gguf.Q4_K, 2, true, modeQ8}, {ActAuto, gguf.Q4_K, 2, false, modeF32},
		{ActAuto, gguf.F16, 8, true, modeF32}, {ActF32, gguf.Q6_K, 8, true, modeF32}, {ActQ8, gguf.Q8_0, 1, false, modeQ8},
		{ActQ8, gguf.BF16, 1, true, modeF32}, {ActQ15, gguf.Q5_K, 1, true, modeQ15}, {ActQ15, gguf.Q4_0, 4, true, modeF32},
	} {
		if got := c.a.mode(c.t, c.n, c.simd); got != c.want {
			t.Errorf("%v.mode(%s, %d, simd=%v) = %v, want %v", c.a, c.t, c.n, c.simd, got, c.want)
		}
	}
}

// TestQuantizersAgree: the SIMD activation quantizers must write exactly
// what their pure-Go twins write.
func TestQuantizersAgree(t *testing.T) {
	if simdKernels == nil {
		t.Skip("SIMD kernels not built or not supported here")
	}
	r := rand.New(rand.NewPCG(13, 14))
	x := randomVec(r, 4096)
	for i := range x[:512] {
		x[i] *= float32(math.Exp(r.NormFloat64() * 3))
	}
	clear(x[512:768]) // a zero block
	x[1000] = 1e-30   // a tiny one among normal values
	for _, k4 := range []bool{false, true} {
		a, b := make([]actK, 16), make([]actK, 16)
		genericKernels.quantizeK(a, x, k4)
		simdKernels.quantizeK(b, x, k4)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("quantizeK(k4=%v) block %d differs:\n%+v\n%+v", k4, i, a[i], b[i])
			}
		}
	}
	for _, k4 := range []bool{false, true} {
		a, b := make([]actK15, 16), make([]actK15, 16)
		genericKernels.quantizeK15(a, x, k4)
		simdKernels.quantizeK15(b, x, k4)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("quantizeK15(k4=%v) block %d differs:\n%+v\n%+v", k4, i, a[i], b[i])
			}
		}
	}
	a, b := make([]act32, 128), make([]act32, 128)
	genericKernels.quantize32(a, x)
	simdKernels.quantize32(b, x)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("quantize32 block %d differs:\n%+v\n%+v", i, a[i], b[i])
		}
	}
	s1, s2 := make([]float32, 128), make([]float32, 128)
	genericKernels.sums32(s1, x)
	simdKernels.sums32(s2, x)
	for i := range s1 {
		if math.Abs(float64(s1[i]-s2[i])) > 1e-5*float64(absSum(x[32*i:32*i+32])) {
			t.Fatalf("sums32 %d: %v vs %v", i, s1[i], s2[i])
		}
	}
}

// TestRepackAgrees: the SIMD repackers must write exactly what their
// pure-Go twins write.
func TestRepackAgrees(t *testing.T) {
	if simdKernels == nil {
		t.Skip("SIMD kernels not built or not supported here")
	}
	r := rand.New(rand.NewPCG(21, 22))
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		w := randomMatrix(r, typ, 1, 1024)
		a, b := make([]rpK, 4), make([]rpK, 4)
		genericKernels.repack(typ, a, w.Data)
		simdKernels.repack(typ, b, w.Data)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s block %d differs:\n%+v\n%+v", typ, i, a[i], b[i])
			}
		}
	}
}

func absSum(x []float32) float32 {
	var s float32
	for _, v := range x {
		s += float32(math.Abs(float64(v)))
	}
	return s
}

// TestMatMulRealTensors runs MatMul on real tensors of the shared models
// (every type they hold, F16 included) against the oracle.
func TestMatMulRealTensors(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	r := rand.New(rand.NewPCG(15, 16))
	seen := map[gguf.Type]bool{}
	for _, model := range []string{"stories260K-Q8_0.gguf", "syn-spm-Q4_K_M.gguf", "syn-spm-Q5_K_M.gguf", "syn-spm-Q4_0.gguf"} {
		f := openShared(t, model)
		for i := range f.Tensors {
			ti := &f.Tensors[i]
			if len(ti.Shape) != 2 || seen[ti.Type] || ti.Type == gguf.F32 || ti.Shape[1] > 1024 {
				continue
			}
			seen[ti.Type] = true
			w := &Matrix{Type: ti.Type, Cols: int(ti.Shape[0]), Rows: int(ti.Shape[1]), Data: f.TensorData(ti)}
			const n = 3
			x := randomVec(r, n*w.Cols)
			ref := refMatMul(w, x, n)
			y := make([]float32, n*w.Rows)
			for _, kc := range kernelCases(t) {
				p.Generic = kc.generic
				for _, act := range []Activations{ActF32, ActQ8, ActQ15} {
					p.Act = act
					p.MatMul(y, w, x, n)
					bound := nmseF32
					if act == ActQ8 && isQuantized(w.Type) {
						bound = nmseQ8
					}
					if act == ActQ15 && isQuantized(w.Type) {
						bound = nmseQ15
					}
					if e := nmse(y, ref); !(e <= bound) {
						t.Errorf("%s %s (%s) %s %v: NMSE %.3g > %.0g", model, ti.Name, w.Type, kc.name, act, e, bound)
					}
				}
			}
		}
	}
	t.Logf("types checked on real tensors: %v", seen)
}

func TestMatMulNoAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range allTypes {
		w := randomMatrix(r, typ, 128, 512) // above serialWork: runs on the pool
		for _, n := range []int{1, 8} {
			x := randomVec(r, n*w.Cols)
			y := make([]float32, n*w.Rows)
			for _, act := range []Activations{ActAuto, ActF32, ActQ8, ActQ15} {
				p.Act = act
				p.MatMul(y, w, x, n) // grows scratch
				if a := testing.AllocsPerRun(5, func() { p.MatMul(y, w, x, n) }); a != 0 {
					t.Errorf("%s n=%d %v: %v allocations per MatMul", typ, n, act, a)
				}
			}
		}
	}
}

func TestMatrixCheckAndInt8Mode(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	if err := (&Matrix{Type: gguf.Q4_K, Cols: 100, Rows: 2, Data: make([]byte, 1000)}).Check(); err == nil {
		t.Error("Q4_K with 100 columns passed Check")
	}
	if err := (&Matrix{Type: gguf.Q2_K, Cols: 256, Rows: 1, Data: make([]byte, 84)}).Check(); err == nil {
		t.Error("Q2_K passed Check")
	}
	if err := (&Matrix{Type: gguf.Q8_0, Cols: 64, Rows: 2, Data: make([]byte, 135)}).Check(); err == nil {
		t.Error("short data passed Check")
	}
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []gguf.Type{gguf.F32, gguf.F16, gguf.BF16} {
		w := randomMatrix(r, typ, 40, 512)
		q, ok, err := ToQ8_0(w)
		if err != nil || !ok || q.Type != gguf.Q8_0 || len(q.Data) != 40*gguf.Q8_0.RowBytes(512) {
			t.Fatalf("ToQ8_0(%s): %v %v %v", typ, ok, err, q)
		}
		if err := q.Check(); err != nil {
			t.Fatal(err)
		}
		x := randomVec(r, 512)
		y := make([]float32, 40)
		p.MatMul(y, q, x, 1)
		// Q8_0 keeps ~8 bits per weight: relative error per weight ≲ 1/254,
		// so the NMSE of a product against the original stays below 1e-4.
		if e := nmse(y, refMatMul(w, x, 1)); e > 1e-4 {
			t.Errorf("INT8 mode %s: NMSE %.3g against the %s product", typ, e, typ)
		} else {
			t.Logf("INT8 mode %s→Q8_0: NMSE %.2g, %d → %d bytes", typ, e, len(w.Data), len(q.Data))
		}
	}
	w := randomMatrix(r, gguf.F32, 4, 100)
	if q, ok, err := ToQ8_0(w); err != nil || ok || q != w {
		t.Error("ToQ8_0 converted 100 columns")
	}
}

// TestActivationError measures what each activation path costs against
// the float64 oracle, for docs/QUANT.md (run with -v): 256 rows × 2048
// columns, 8 vectors of N(0,1) activations and 8 heavy-tailed ones
// (N(0,1)·e^{N(0,1)}, like hidden states with outlier channels).
func TestActivationError(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	p := NewPool(2)
	defer p.Close()
	const rows, cols, n = 256, 2048, 8
	gauss := randomVec(r, n*cols)
	heavy := randomVec(r, n*cols)
	for i := range heavy {
		heavy[i] *= float32(math.Exp(r.NormFloat64()))
	}
	for _, kc := range kernelCases(t) {
		p.Generic = kc.generic
		for _, typ := range allTypes {
			w := randomMatrix(r, typ, rows, cols)
			for _, in := range []struct {
				name string
				x    []float32
			}{{"gaussian", gauss}, {"heavy", heavy}} {
				ref := refMatMul(w, in.x, n)
				y := make([]float32, n*rows)
				line := fmt.Sprintf("%-6s %-5s %-8s", kc.name, typ, in.name)
				for _, act := range []Activations{ActF32, ActQ8, ActQ15} {
					if act != ActF32 && !isQuantized(typ) || act == ActQ15 && (typ == gguf.Q8_0 || typ == gguf.Q4_0) {
						continue
					}
					p.Act = act
					for _, nn := range []int{1, n} { // decode kernels and batch kernels
						for j := 0; j < n; j += nn {
							p.MatMul(y[j*rows:(j+nn)*rows], w, in.x[j*cols:(j+nn)*cols], nn)
						}
						e := nmse(y, ref)
						line += fmt.Sprintf("  %v/n%d %.2g", act, nn, e)
						bound := nmseF32
						if act == ActQ8 {
							bound = nmseQ8
						}
						if act == ActQ15 {
							bound = nmseQ15
						}
						if !(e <= bound) {
							t.Errorf("%s %v n=%d: NMSE %.3g > %.0g", line, act, nn, e, bound)
						}
					}
				}
				t.Log(line)
			}
		}
	}
}
