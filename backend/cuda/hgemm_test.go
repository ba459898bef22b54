package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unsafe"

	"greta/gguf"
	"greta/ml"
)

// beginRows describes a batch of n rows of one sequence to g, row i a
// generated row when gen(i).
func beginRows(g *Backend, n int, gen func(int) bool) {
	bt := &ml.Batch{Pos: make([]int32, n), Seq: make([]int32, n), Pages: [][]int32{{0}}, Gen: make([]bool, n)}
	for i := range n {
		bt.Gen[i] = gen(i)
	}
	g.Begin(bt)
}

func promptRow(int) bool { return false }
func genRow(int) bool    { return true }

// TestHGemm checks the products of prompt rows (kernels/hgemm.cu) for every
// format with an f16 form against the oracle at 1, 2, 3, 8, 17, 64, 100
// and 512 rows (300 weight rows: three tiles, the last partial; widths
// 4096 and a narrow one), and their bits: a row alone, as a one-row
// prompt, has the same bits inside every batch; in a batch mixing roles
// the prompt rows keep those bits and the generated rows have the decode
// kernels' bits. Also GateUp, MatMulAdd and a folded RMSNorm, against the
// oracle and alone against in a batch.
func TestHGemm(t *testing.T) {
	p := newPair(t)
	g := p.g
	if !g.HGemm {
		t.Skip("GRETA_CUDA_HGEMM=0")
	}
	r := rand.New(rand.NewPCG(29, uint64(os.Getpid())))
	counts := []int{1, 2, 3, 8, 17, 64, 100, 512}
	if testing.Short() {
		counts = []int{1, 2, 17, 100}
	}
	const rows = 300
	const nmax = 512
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q5_K, gguf.Q6_K, gguf.Q8_0, gguf.Q4_0, gguf.F16} {
		narrow := 768
		if typ.BlockSize() != 256 {
			narrow = 96
		}
		for _, cols := range []int{narrow, 4096} {
			if testing.Short() && cols == 4096 {
				continue
			}
			w := p.weight(randomWeight(r, typ, cols, rows))
			x := make([]float32, nmax*cols)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			for i := 0; i < len(x); i += 97 {
				x[i] *= 50
			}
			alone := map[int][]float32{}
			for _, i := range []int{0, 1, 2, 7, 16, 63, 99, 511} {
				xi := p.inputFrom(x[i*cols:(i+1)*cols], cols, 1)
				y := g.NewTensor(rows, 1)
				beginRows(g, 1, promptRow)
				g.MatMul(y, xi.g, w.g)
				alone[i] = readAll(g, y)
			}
			for _, n := range counts {
				xt := p.inputFrom(x[:n*cols], cols, n)
				y := p.tensor(rows, n)
				beginRows(g, n, promptRow)
				g.MatMul(y.g, xt.g, w.g)
				p.ref.MatMul(y.r, xt.r, w.r)
				what := fmt.Sprintf("%s %dx%d n=%d", typ, cols, rows, n)
				p.compare(what, y, boundGEMM)
				got := readAll(g, y.g)
				for i, a := range alone {
					if i >= n {
						continue
					}
					if k, ok := bitsEqual(a, got[i*rows:(i+1)*rows]); !ok {
						t.Errorf("%s: row %d alone differs from the batch at output %d: %g vs %g", what, i, k, a[k], got[i*rows+k])
					}
				}
				if n != 100 {
					continue
				}
				// Every hgemm kernel gives the same bits.
				for _, name := range hgemmNames() {
					g.hgemmKern = name
					yb := g.NewTensor(rows, n)
					beginRows(g, n, promptRow)
					g.MatMul(yb, xt.g, w.g)
					gb := readAll(g, yb)
					g.hgemmKern = ""
					if k, ok := bitsEqual(gb, got); !ok {
						t.Errorf("%s: %s differs at output %d: %g vs %g", what, name, k, gb[k], got[k])
					}
				}
				// Roles mixed: every third row generated.
				mixed := func(i int) bool { return i%3 == 1 }
				ym := g.NewTensor(rows, n)
				beginRows(g, n, mixed)
				g.MatMul(ym, xt.g, w.g)
				gm := readAll(g, ym)
				yd := g.NewTensor(rows, n)
				beginRows(g, n, genRow)
				g.MatMul(yd, xt.g, w.g)
				gd := readAll(g, yd)
				for i := 0; i < n; i++ {
					want := got
					if mixed(i) {
						want = gd
					}
					if k, ok := bitsEqual(want[i*rows:(i+1)*rows], gm[i*rows:(i+1)*rows]); !ok {
						t.Errorf("%s: row %d (generated %v) of the mixed batch differs at output %d", what, i, mixed(i), k)
					}
				}
			}
		}
	}

	// GateUp, MatMulAdd and a folded RMSNorm over Q4_K weights.
	const cols, frows = 512, 200
	wg := p.weight(randomWeight(r, gguf.Q4_K, cols, frows))
	wu := p.weight(randomWeight(r, gguf.Q4_K, cols, frows))
	nw := p.weight(vectorWeight(r, cols))
	xv := make([]float32, 64*cols)
	rv := make([]float32, 64*frows)
	for i := range xv {
		xv[i] = float32(r.NormFloat64())
	}
	for i := range rv {
		rv[i] = float32(r.NormFloat64())
	}
	fused := func(n int) [4][]float32 {
		x := p.inputFrom(xv[:n*cols], cols, n).g
		res := p.inputFrom(rv[:n*frows], frows, n).g
		gu, xn, nm, ad := g.NewTensor(frows, n), g.NewTensor(cols, n), g.NewTensor(frows, n), g.NewTensor(frows, n)
		beginRows(g, n, promptRow)
		g.GateUp(gu, x, wg.g, wu.g)
		g.RMSNorm(xn, x, nw.g, 1e-5)
		g.MatMul(nm, xn, wg.g)
		g.MatMulAdd(ad, res, x, wu.g)
		return [4][]float32{readAll(g, gu), readAll(g, xn), readAll(g, nm), readAll(g, res)}
	}
	batch, one := fused(64), fused(1)
	for j, name := range []string{"GateUp", "normalized x", "norm folded", "residual"} {
		if k, ok := bitsEqual(one[j], batch[j][:len(one[j])]); !ok {
			t.Errorf("%s: row 0 alone differs from the 64-row batch at output %d", name, k)
		}
	}
	// Against the oracle, on fresh tensors.
	for _, n := range []int{17, 64} {
		x := p.input(r, cols, n, 1)
		gu, xn, nm, ad := p.tensor(frows, n), p.tensor(cols, n), p.tensor(frows, n), p.tensor(frows, n)
		res := p.input(r, frows, n, 1)
		beginRows(g, n, promptRow)
		for _, b := range []ml.Backend{g, p.ref} {
			b.GateUp(gu.of(b), x.of(b), wg.of(b), wu.of(b))
			b.RMSNorm(xn.of(b), x.of(b), nw.of(b), 1e-5)
			b.MatMul(nm.of(b), xn.of(b), wg.of(b))
			b.MatMulAdd(ad.of(b), res.of(b), x.of(b), wu.of(b))
		}
		p.compare(fmt.Sprintf("GateUp n=%d", n), gu, boundGEMM)
		p.compare(fmt.Sprintf("normalized x n=%d", n), xn, boundF32*100)
		p.compare(fmt.Sprintf("norm folded n=%d", n), nm, boundGEMM)
		p.compare(fmt.Sprintf("MatMulAdd n=%d", n), ad, boundGEMM)
		p.compare(fmt.Sprintf("residual n=%d", n), res, boundGEMM)
	}
}

// TestHGemmVariantNames checks, without a GPU, that every variant of
// hgemm.go has its HGEMM_VARIANT line in kernels/hgemm.cu and the reverse.
func TestHGemmVariantNames(t *testing.T) {
	src := kernelSource()
	lines := 0
	for _, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(l, "HGEMM_VARIANT(") {
			lines++
		}
	}
	if lines != len(hgemmVariants) {
		t.Errorf("%d HGEMM_VARIANT lines in hgemm.cu, %d hgemmVariants", lines, len(hgemmVariants))
	}
	for _, v := range hgemmVariants {
		line := fmt.Sprintf("HGEMM_VARIANT(%d, %d, %d, %d, %d, %d, %d, ", v.bm, v.bn, v.wm, v.wn, v.bk, v.st, v.fb)
		if !strings.Contains(src, line) {
			t.Errorf("%s: no line %q... in hgemm.cu", v.name(), line)
		}
		if v.bm%(16*v.wm) != 0 || v.bn%(16*v.wn) != 0 || v.bk%32 != 0 {
			t.Errorf("%s: not a valid tiling", v.name())
		}
	}
	for _, c := range [][3]int{{512, 1024, 4096}, {512, 4096, 4096}, {512, 14336, 4096}, {4096, 4096, 14336}, {1, 1000, 96}} {
		name := hgemmPickFor(c[0], c[1])
		if _, _, _, _, ok := hgemmKernel(name); !ok {
			t.Errorf("hgemmPickFor%v = %q: no such kernel", c, name)
		}
	}
}

// randomHalves returns n f16 values (bits): signed, magnitudes in
// [2^-3, 2^2), one in 16 zero.
func randomHalves(r *rand.Rand, n int) []byte {
	b := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		v := uint16(0)
		if r.IntN(16) != 0 {
			v = uint16(r.IntN(2))<<15 | uint16(12+r.IntN(5))<<10 | uint16(r.IntN(1024))
		}
		b[2*i], b[2*i+1] = byte(v), byte(v>>8)
	}
	return b
}

// TestHGemmVariants checks that every hgemm kernel (the variants of
// hgemm.go's hgemmVariants, and hgemm_n64) writes the reference hgemm's
// bits: Llama-3-8B's product shapes at 512 and 4096 x rows, and ragged x
// rows (1, 17, 100, 512), weight rows (1000, 1024, 4096, 14336) and
// columns (4096, 14336, 4128 and 96: 32 times odd), into y of the product's
// width and into wider rows at an odd offset (the scalar epilogue), with
// and without the residual add. Whole buffers compared, y and resid, so a
// stray store past n or r shows too.
func TestHGemmVariants(t *testing.T) {
	g := device(t)
	g.enter()
	defer g.exit()
	const maxX, maxW, maxY = 4096 * 14336, 14336 * 4128, 4096*14336 + 4096
	r := rand.New(rand.NewPCG(31, 7))
	alloc := func(n int, what string) devPtr {
		p, err := g.alloc(uint64(n), what)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.free(p) })
		return p
	}
	upload := func(p devPtr, b []byte) {
		if err := g.d.MemcpyHtoD(p, b); err != nil {
			t.Fatal(err)
		}
	}
	x16, w16 := alloc(2*maxX, "x16"), alloc(2*maxW, "w16")
	upload(x16, randomHalves(r, maxX))
	upload(w16, randomHalves(r, maxW))
	const maxR = 512 * 14336
	rinit := alloc(4*maxR, "resid")
	rv := make([]float32, maxR)
	for i := range rv {
		rv[i] = float32(r.NormFloat64())
	}
	upload(rinit, f32Bytes(rv))
	y, rs := alloc(4*maxY, "y"), alloc(4*maxR, "resid run")
	ref := make([]uint32, maxY)
	got := make([]uint32, maxY)
	rref := make([]uint32, maxR)
	rgot := make([]uint32, maxR)
	sync := func() {
		if err := g.d.StreamSynchronize(g.stream); err != nil {
			t.Fatalf("%s: %v", g.lastLaunch, err)
		}
	}
	// run launches kernel name and reads back y's first ny floats (and
	// resid's first nr when resid).
	run := func(name string, n, rows, k, ldy, off int, resid bool, yh, rh []uint32) {
		ny := n*ldy + off
		if err := g.d.MemsetD32Async(y, 0x7fc0dead, uint64(ny), g.stream); err != nil {
			t.Fatal(err)
		}
		var rp devPtr
		if resid {
			if err := g.d.MemcpyDtoDAsync(rs, rinit, uint64(4*ny), g.stream); err != nil {
				t.Fatal(err)
			}
			rp = rs + devPtr(4*off)
		}
		g.hgemmLaunch(name, x16, w16, y+devPtr(4*off), rp, n, rows, k, ldy, "TestHGemmVariants")
		sync()
		if err := g.d.MemcpyDtoH(unsafe.Pointer(&yh[0]), y, uint64(4*ny)); err != nil {
			t.Fatal(err)
		}
		if resid {
			if err := g.d.MemcpyDtoH(unsafe.Pointer(&rh[0]), rs, uint64(4*ny)); err != nil {
				t.Fatal(err)
			}
		}
	}
	type shape struct{ n, r, k, ldy, off int }
	var shapes []shape
	for _, n := range []int{512, 4096} {
		for _, rk := range [][2]int{{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}} {
			shapes = append(shapes, shape{n, rk[0], rk[1], rk[0], 0})
		}
	}
	for _, k := range []int{96, 4128, 4096, 14336} {
		for _, n := range []int{1, 17, 100, 512} {
			for _, rows := range []int{1000, 1024, 4096, 14336} {
				if rows*k > maxW || (testing.Short() && n == 512 && k == 14336) {
					continue
				}
				shapes = append(shapes, shape{n, rows, k, rows, 0})
			}
		}
		shapes = append(shapes, shape{100, 1000, k, 1001, 1}, shape{17, 1024, k, 4096, 3})
	}
	names := hgemmNames()[1:]
	checked := 0
	for _, s := range shapes {
		resid := s.n*(s.ldy)+s.off <= maxR && s.n <= 512
		ny := s.n*s.ldy + s.off
		run("hgemm", s.n, s.r, s.k, s.ldy, s.off, resid, ref, rref)
		for _, name := range names {
			if _, _, _, smem, _ := hgemmKernel(name); smem > g.maxSmem {
				continue
			}
			run(name, s.n, s.r, s.k, s.ldy, s.off, resid, got, rgot)
			what := fmt.Sprintf("%s n=%d r=%d k=%d ldy=%d off=%d", name, s.n, s.r, s.k, s.ldy, s.off)
			for i := 0; i < ny; i++ {
				if got[i] != ref[i] {
					t.Errorf("%s: y differs from hgemm's first at [%d][%d]: %#08x (%g) vs %#08x (%g)", what, (i-s.off)/s.ldy, (i-s.off)%s.ldy,
						got[i], math.Float32frombits(got[i]), ref[i], math.Float32frombits(ref[i]))
					break
				}
			}
			if resid {
				for i := 0; i < ny; i++ {
					if rgot[i] != rref[i] {
						t.Errorf("%s: resid differs from hgemm's first at [%d][%d]: %#08x vs %#08x", what, (i-s.off)/s.ldy, (i-s.off)%s.ldy, rgot[i], rref[i])
						break
					}
				}
			}
			checked++
		}
	}
	t.Logf("%d kernel runs over %d shapes compared with hgemm's bits", checked, len(shapes))
}
