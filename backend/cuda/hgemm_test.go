package cuda

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

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
				// Both tile widths give the same bits.
				for _, bn := range []int{64, 128} {
					g.hgemmBN = bn
					yb := g.NewTensor(rows, n)
					beginRows(g, n, promptRow)
					g.MatMul(yb, xt.g, w.g)
					gb := readAll(g, yb)
					g.hgemmBN = 0
					if k, ok := bitsEqual(gb, got); !ok {
						t.Errorf("%s: %d weight rows a block differ at output %d", what, bn, k)
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
