package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"greta/backend/ref"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/ml/mltest"
	"greta/quant"
)

// Op conformance: every op against the float64 oracle (backend/ref) on
// fresh random inputs, with sizes that are not multiples of any tile. The
// tests skip where there is no GPU.

var (
	gpuOnce sync.Once
	gpu     *Backend
	gpuErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if gpu != nil {
		gpu.Close()
	}
	os.Exit(code)
}

// device returns the shared backend with its switches at their defaults,
// or skips.
func device(t testing.TB) *Backend {
	t.Helper()
	gpuOnce.Do(func() { gpu, gpuErr = Open(0) })
	if gpuErr != nil {
		t.Skipf("no GPU: %v", gpuErr)
	}
	gpu.Check = envFlag("GRETA_CUDA_CHECK", false)
	gpu.Graphs, gpu.Fuse, gpu.UseBLAS = true, true, false
	gpu.FA, gpu.FASplit = envFlag("GRETA_CUDA_FA", true), 0
	gpu.MVB, gpu.GUB = "", ""
	return gpu
}

func TestNoDeviceIsOneLine(t *testing.T) {
	_, err := New()
	if err == nil {
		t.Skip("a GPU is present")
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "CUDA") {
		t.Errorf("error %q: want one line naming CUDA", err)
	}
	t.Logf("without a GPU: %v", err)
}

// randomWeight returns rows×cols values of type typ: random blocks with
// valid, finite scales (as in quant's tests), or normal floats.
func randomWeight(r *rand.Rand, typ gguf.Type, cols, rows int) ml.WeightData {
	n := cols * rows
	var b []byte
	switch typ {
	case gguf.F32, gguf.F16, gguf.BF16:
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 0.1)
		}
		b = make([]byte, typ.RowBytes(n))
		if err := quant.Quantize(typ, b, x); err != nil {
			panic(err)
		}
	default:
		b = make([]byte, rows*typ.RowBytes(cols))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		ts := typ.TypeSize()
		scale := func(off int) {
			h := quant.F32ToF16(float32((r.Float64()*2 - 1) * 0.01))
			b[off], b[off+1] = byte(h), byte(h>>8)
		}
		for o := 0; o < len(b); o += ts {
			switch typ {
			case gguf.Q8_0, gguf.Q4_0:
				scale(o)
			case gguf.Q4_K, gguf.Q5_K:
				scale(o)
				scale(o + 2)
			case gguf.Q6_K:
				scale(o + quant.Q6_KOffD)
			}
		}
	}
	shape := []int64{int64(cols), int64(rows)}
	return ml.WeightData{Name: fmt.Sprintf("test.%s.%dx%d", typ, cols, rows), Type: typ, Shape: shape, Data: b}
}

// vectorWeight is a norm weight: cols values near 1.
func vectorWeight(r *rand.Rand, cols int) ml.WeightData {
	x := make([]float32, cols)
	for i := range x {
		x[i] = float32(1 + 0.2*r.NormFloat64())
	}
	return ml.WeightData{Name: "test.norm", Type: gguf.F32, Shape: []int64{int64(cols)}, Data: f32Bytes(x)}
}

// pair runs the same ops on the GPU and on the oracle.
type pair struct {
	t   *testing.T
	g   *Backend
	ref *ref.Backend
}

func newPair(t *testing.T) *pair { return &pair{t: t, g: device(t), ref: ref.New()} }

type twoT struct{ g, r ml.Tensor }
type twoW struct{ g, r ml.Weight }

// of returns the CUDA side for the CUDA backend, the oracle's otherwise.
func (t twoT) of(b ml.Backend) ml.Tensor {
	if _, ok := b.(*Backend); ok {
		return t.g
	}
	return t.r
}

func (w twoW) of(b ml.Backend) ml.Weight {
	if _, ok := b.(*Backend); ok {
		return w.g
	}
	return w.r
}

func (p *pair) weight(wd ml.WeightData) twoW {
	p.t.Helper()
	g, err := p.g.LoadWeight(wd)
	if err != nil {
		p.t.Fatal(err)
	}
	r, err := p.ref.LoadWeight(wd)
	if err != nil {
		p.t.Fatal(err)
	}
	return twoW{g, r}
}

func (p *pair) tensor(cols, rows int) twoT {
	return twoT{p.g.NewTensor(cols, rows), p.ref.NewTensor(cols, rows)}
}

// input returns a tensor holding random values, set through Embed of a
// float32 table (the only way in through ml.Backend).
func (p *pair) input(r *rand.Rand, cols, rows int, scale float64) twoT {
	p.t.Helper()
	x := make([]float32, cols*rows)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return p.inputFrom(x, cols, rows)
}

func (p *pair) inputFrom(x []float32, cols, rows int) twoT {
	p.t.Helper()
	wd := ml.WeightData{Name: "input", Type: gguf.F32, Shape: []int64{int64(cols), int64(rows)}, Data: f32Bytes(x)}
	if rows == 1 {
		// A one-row table is a vector to LoadWeight; two rows keep it a matrix.
		wd.Shape[1] = 2
		wd.Data = append(wd.Data, wd.Data...)
	}
	w := p.weight(wd)
	tok := make([]int32, rows)
	for i := range tok {
		tok[i] = int32(i)
	}
	t := p.tensor(cols, rows)
	p.g.Embed(t.g, w.g, tok)
	p.ref.Embed(t.r, w.r, tok)
	return t
}

// compare reads both and checks the NMSE; it also fails on NaN (an
// unwritten value: tensors start as NaN).
func (p *pair) compare(what string, t twoT, bound float64) float64 {
	p.t.Helper()
	n := t.r.Rows() * t.r.Cols()
	a, b := make([]float32, n), make([]float32, n)
	p.g.Read(t.g, a)
	p.ref.Read(t.r, b)
	for i, v := range a {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			p.t.Errorf("%s: value %d (row %d) is %v", what, i, i/t.r.Cols(), v)
			return math.Inf(1)
		}
	}
	e := testmodels.NMSE(a, b)
	if e > bound || math.IsNaN(e) {
		p.t.Errorf("%s: NMSE %.3g > %.0g", what, e, bound)
	}
	return e
}

var allTypes = []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// colsFor are row widths per format, the odd ones included.
func colsFor(t gguf.Type) []int {
	switch t.BlockSize() {
	case 256:
		return []int{256, 768, 4096}
	case 32:
		return []int{32, 96, 4096}
	}
	return []int{7, 33, 172, 4096}
}

// Bounds: float32 accumulation of f32 activations against float64 lands
// near 1e-13; the cuBLAS path rounds weights and activations to f16
// (2^-11 relative each), near 1e-7.
// The decode kernels of the quantized formats round x to int16 per run of
// 16 (a step of max/32767): near 5e-10, up to 4 times that for Q6_K,
// whose dots multiply x by the uncentered q (0..63) before taking 32·Σx
// away; seen at 1.7e-8 on a 3-row output.
const (
	boundF32  = 1e-9
	boundQ16  = 5e-8
	boundGEMM = 3e-6
)

// boundFor is the bound of a product of typ with nx activation rows.
func boundFor(g *Backend, typ gguf.Type, nx int) float64 {
	switch {
	case g.gemmRows(nx):
		return boundGEMM
	case idotFormats[kernelFormat(typ, 4096)]:
		return boundQ16
	}
	return boundF32
}

func TestMatMul(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(1, uint64(os.Getpid())))
	for _, typ := range allTypes {
		for _, cols := range colsFor(typ) {
			for _, rows := range []int{1, 3, 17, 130} {
				w := p.weight(randomWeight(r, typ, cols, rows))
				for _, nx := range []int{1, 2, 5, 8, 9, 40} {
					x := p.input(r, cols, nx, 1)
					y := p.tensor(rows, nx)
					p.g.MatMul(y.g, x.g, w.g)
					p.ref.MatMul(y.r, x.r, w.r)
					bound := boundFor(p.g, typ, nx)
					if rows*nx < 8 {
						// A handful of outputs: one dot whose terms cancel
						// can sit far from the mean error (seen: an F32 4096x1
						// at 1.7e-9 on the H200).
						bound *= 100
					}
					p.compare(fmt.Sprintf("%s %dx%d nx=%d", typ, cols, rows, nx), y, bound)
				}
			}
		}
	}
}

// TestMatMulCuBLAS runs batches through the f16 cuBLAS GEMMs that
// GRETA_CUDA_CUBLAS=1 switches on (not batch-invariant).
func TestMatMulCuBLAS(t *testing.T) {
	p := newPair(t)
	p.g.UseBLAS = true
	defer func() { p.g.UseBLAS = false }()
	if !p.g.blasReady() {
		t.Skip("no cuBLAS")
	}
	r := rand.New(rand.NewPCG(2, uint64(os.Getpid())))
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q6_K, gguf.F16} {
		w := p.weight(randomWeight(r, typ, 512, 37))
		x := p.input(r, 512, 21, 1)
		y := p.tensor(37, 21)
		p.g.MatMul(y.g, x.g, w.g)
		p.ref.MatMul(y.r, x.r, w.r)
		p.compare(fmt.Sprintf("%s cuBLAS", typ), y, boundGEMM)
	}
}

func TestMatMulAddGateUpFused(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(3, uint64(os.Getpid())))
	for _, typ := range allTypes {
		cols := colsFor(typ)[1]
		for _, nx := range []int{1, 3, 33} {
			bound := boundFor(p.g, typ, nx)
			// MatMulAdd: dst = W·x, resid += dst.
			w := p.weight(randomWeight(r, typ, cols, 97))
			x := p.input(r, cols, nx, 1)
			resid := p.input(r, 97, nx, 1)
			y := p.tensor(97, nx)
			p.g.MatMulAdd(y.g, resid.g, x.g, w.g)
			p.ref.MatMulAdd(y.r, resid.r, x.r, w.r)
			p.compare(fmt.Sprintf("MatMulAdd %s nx=%d dst", typ, nx), y, bound)
			p.compare(fmt.Sprintf("MatMulAdd %s nx=%d resid", typ, nx), resid, bound)

			// GateUp: silu(Wg·x) ⊙ (Wu·x).
			g := p.weight(randomWeight(r, typ, cols, 131))
			u := p.weight(randomWeight(r, typ, cols, 131))
			h := p.tensor(131, nx)
			p.g.GateUp(h.g, x.g, g.g, u.g)
			p.ref.GateUp(h.r, x.r, g.r, u.r)
			p.compare(fmt.Sprintf("GateUp %s nx=%d", typ, nx), h, 4*bound)

			// q, k, v from one x: fused into one launch.
			wq := p.weight(randomWeight(r, typ, cols, 64))
			wk := p.weight(randomWeight(r, typ, cols, 16))
			wv := p.weight(randomWeight(r, typ, cols, 16))
			q, k, v := p.tensor(64, nx), p.tensor(16, nx), p.tensor(16, nx)
			for _, m := range []struct {
				y twoT
				w twoW
			}{{q, wq}, {k, wk}, {v, wv}} {
				p.g.MatMul(m.y.g, x.g, m.w.g)
				p.ref.MatMul(m.y.r, x.r, m.w.r)
			}
			p.compare(fmt.Sprintf("fused q %s nx=%d", typ, nx), q, bound)
			p.compare(fmt.Sprintf("fused k %s nx=%d", typ, nx), k, bound)
			p.compare(fmt.Sprintf("fused v %s nx=%d", typ, nx), v, bound)
		}
	}
}

func TestEmbed(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(4, uint64(os.Getpid())))
	for _, typ := range allTypes {
		for _, cols := range colsFor(typ) {
			w := p.weight(randomWeight(r, typ, cols, 300))
			toks := []int32{299, 0, 17, 17, 123}
			y := p.tensor(cols, len(toks))
			p.g.Embed(y.g, w.g, toks)
			p.ref.Embed(y.r, w.r, toks)
			p.compare(fmt.Sprintf("Embed %s cols %d", typ, cols), y, 1e-14)
		}
	}
}

func TestRMSNorm(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(5, uint64(os.Getpid())))
	for _, cols := range []int{7, 64, 1000, 4096, 5000} {
		for _, rows := range []int{1, 3} {
			w := p.weight(vectorWeight(r, cols))
			x := p.input(r, cols, rows, 3)
			y := p.tensor(cols, rows)
			p.g.RMSNorm(y.g, x.g, w.g, 1e-5)
			p.ref.RMSNorm(y.r, x.r, w.r, 1e-5)
			p.compare(fmt.Sprintf("RMSNorm %dx%d", cols, rows), y, 1e-11)
		}
	}
}

func TestRope(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(6, uint64(os.Getpid())))
	for _, c := range []struct{ heads, hd, pairs int }{{4, 8, 4}, {32, 128, 64}, {8, 64, 16}} {
		rp := &ml.Rope{HeadDim: c.hd, PosScale: 0.5, Freqs: make([]float64, c.pairs)}
		for i := range rp.Freqs {
			// base^(−2i/d) divided by a Llama-3.1-style factor.
			rp.Freqs[i] = math.Pow(500000, -2*float64(i)/float64(2*c.pairs)) / (1 + 7*r.Float64())
		}
		for _, rows := range []int{1, 7} {
			for _, pos := range []int{0, 5000} {
				q := p.input(r, c.heads*c.hd, rows, 1)
				k := p.input(r, c.hd, rows, 1)
				p.g.Begin(ml.Contiguous(pos, rows, false))
				p.ref.Begin(ml.Contiguous(pos, rows, false))
				p.g.Rope(q.g, rp)
				p.g.Rope(k.g, rp)
				p.ref.Rope(q.r, rp)
				p.ref.Rope(k.r, rp)
				what := fmt.Sprintf("Rope %d heads × %d (%d pairs) rows %d pos %d", c.heads, c.hd, c.pairs, rows, pos)
				p.compare(what+" q", q, 1e-11)
				p.compare(what+" k", k, 1e-11)
			}
		}
	}
}

func TestArgmaxAndGather(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(7, uint64(os.Getpid())))
	for _, cols := range []int{5, 1000, 128256} {
		x := make([]float32, 3*cols)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		// Row 1: a tie between two maxima; the first must win.
		x[cols+cols/3], x[cols+cols-1] = 50, 50
		t3 := p.inputFrom(x, cols, 3)
		got, want := make([]int32, 3), make([]int32, 3)
		p.g.Argmax(t3.g, got)
		p.ref.Argmax(t3.r, want)
		if got != nil && fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Argmax cols %d: %v, want %v", cols, got, want)
		}
		one := p.tensor(cols, 1)
		p.g.Gather(one.g, t3.g, []int32{2})
		p.ref.Gather(one.r, t3.r, []int32{2})
		p.compare(fmt.Sprintf("Gather cols %d", cols), one, 0)
		// Rows out of order, repeated: the gather kernel.
		three := p.tensor(cols, 4)
		p.g.Gather(three.g, t3.g, []int32{2, 0, 2, 1})
		p.ref.Gather(three.r, t3.r, []int32{2, 0, 2, 1})
		p.compare(fmt.Sprintf("Gather 2,0,2,1 cols %d", cols), three, 0)
	}
}

// TestPairKernel checks the one-launch q, k, v projections whose v has
// another format than q and k (Q4_K_M's Q6_K layers), with the RMSNorm
// folded in and without, at odd row counts.
func TestPairKernel(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(12, uint64(os.Getpid())))
	for _, pk := range pairKernels {
		t0, t1 := typeOfKfmt(pk.f0), typeOfKfmt(pk.f1)
		for _, cols := range []int{256, 4352} {
			for _, norm := range []bool{false, true} {
				g := p.weight(vectorWeight(r, cols))
				wq := p.weight(randomWeight(r, t0, cols, 203))
				wk := p.weight(randomWeight(r, t0, cols, 37))
				wv := p.weight(randomWeight(r, t1, cols, 37))
				x := p.input(r, cols, 1, 2)
				xb := p.tensor(cols, 1)
				q, k, v := p.tensor(203, 1), p.tensor(37, 1), p.tensor(37, 1)
				for _, b := range []ml.Backend{p.g, p.ref} {
					in := x
					if norm {
						b.RMSNorm(xb.of(b), x.of(b), g.of(b), 1e-5)
						in = xb
					}
					b.MatMul(q.of(b), in.of(b), wq.of(b))
					b.MatMul(k.of(b), in.of(b), wk.of(b))
					b.MatMul(v.of(b), in.of(b), wv.of(b))
					if b == ml.Backend(p.g) {
						if l := p.g.last(); l == nil || l.split != 2 || l.nw != 3 {
							t.Fatalf("%s: q, k, v were not queued as one two-format launch", pk.name())
						}
					}
				}
				what := fmt.Sprintf("%s cols %d norm %v", pk.name(), cols, norm)
				bound := 4 * max(boundFor(p.g, t0, 1), boundFor(p.g, t1, 1))
				p.compare(what+" q", q, bound)
				p.compare(what+" k", k, bound)
				p.compare(what+" v", v, bound)
				if norm {
					p.compare(what+" xb", xb, bound)
				}
			}
		}
	}
}

func typeOfKfmt(f string) gguf.Type {
	switch f {
	case "q4_k":
		return gguf.Q4_K
	case "q5_k":
		return gguf.Q5_K
	case "q6_k":
		return gguf.Q6_K
	}
	panic("typeOfKfmt: " + f)
}

// TestTopK checks the batched top-k (one launch and one copy for all
// rows) against ml.TopKHost a row, on rows with many ties, for k from 1 to
// the whole row, with gathered columns, and under graph replay
// (mltest.TopK).
func TestTopK(t *testing.T) {
	mltest.TopK(t, device(t), []int{1, 17, 1000, 32000, 128256})
}

// TestTopKManyRows: a 64-row step of a Llama 3 vocabulary, every row asked
// for with its own k and gather list, as the engine asks.
func TestTopKManyRows(t *testing.T) {
	g := device(t)
	const cols, rows = 128256, 64
	r := rand.New(rand.NewPCG(21, 22))
	x := make([]float32, rows*cols)
	for i := range x {
		x[i] = float32(math.Round(r.NormFloat64()*8) / 8)
	}
	xt, fill := mltest.Filler(t, g, x, cols, rows)
	fill()
	req := ml.TopK{}
	for i := range rows {
		req.Rows = append(req.Rows, int32(i))
		req.K = append(req.K, 100)
		var gather []int32
		for range 64 {
			gather = append(gather, int32(r.IntN(cols)))
		}
		req.Gather = append(req.Gather, gather)
	}
	replays := g.Stats.Replays
	for step := range 4 {
		// The first step asks for the most, so the result buffer grows
		// only then and the later steps may replay the second one's graph.
		if step > 0 {
			fill() // the same queue every step: Embed, then TopK
			for i := range rows {
				req.Rows[i] = int32(r.IntN(rows))
				req.K[i] = int32(1 + r.IntN(100))
				req.Gather[i] = req.Gather[i][:r.IntN(len(req.Gather[i])+1)]
			}
		}
		runs := g.Stats.Runs
		g.TopK(xt, &req)
		if g.Stats.Runs != runs+1 {
			t.Errorf("TopK of %d rows took %d runs, want 1", rows, g.Stats.Runs-runs)
		}
		want := ml.TopK{Rows: req.Rows, K: req.K, Gather: req.Gather}
		ml.TopKRows(&want, rows, cols, func(r int) []float32 { return x[r*cols : (r+1)*cols] })
		for i := range want.IDs {
			if req.IDs[i] != want.IDs[i] || math.Float32bits(req.Vals[i]) != math.Float32bits(want.Vals[i]) {
				t.Fatalf("step %d: entry %d is (%d, %g), want (%d, %g)", step, i, req.IDs[i], req.Vals[i], want.IDs[i], want.Vals[i])
			}
		}
	}
	if g.Graphs && g.Stats.Replays == replays {
		t.Error("no TopK step was replayed from a graph")
	}
}

// TestAttention checks causal GQA attention with the KV cache: a prefill
// at position 0, then a decode step, then a second prefill chunk at a
// later position, for head layouts from 1 to 8 queries per KV head and KV
// lengths of 1, 17 and 4097.
func TestAttention(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(8, uint64(os.Getpid())))
	cases := []struct {
		nh, nkv, hd int
		steps       []int // rows of each forward step
		ctx         int
	}{
		{8, 4, 8, []int{1}, 1},                    // length 1
		{8, 2, 32, []int{16, 1}, 17},              // length 17: prefill then decode
		{32, 8, 128, []int{9, 1, 7}, 40},          // Llama-3 heads
		{32, 4, 64, []int{5, 1, 1}, 300},          // TinyLlama heads
		{32, 32, 128, []int{3, 1}, 64},            // Llama-2-7B heads (no GQA)
		{12, 4, 96, []int{20, 1}, 100},            // odd head size
		{4, 2, 64, []int{2048, 2048, 1}, 4097},    // length 4097: long prefill, then decode
		{8, 8, 256, []int{33, 1}, 40},             // the largest head size
		{6, 1, 16, []int{1, 1, 1, 1, 70, 1}, 100}, // multi-query
	}
	defer func() { p.g.KVF32 = false }()
	for _, kv32 := range []bool{false, true} {
		p.g.KVF32 = kv32
		// An f16 cache rounds keys and values by up to 2^-11; a float32
		// one leaves float32 arithmetic.
		bound, typ := 2e-6, "f16"
		if kv32 {
			bound, typ = 1e-11, "f32"
		}
		for _, c := range cases {
			if testing.Short() && c.ctx > 1000 {
				continue // under compute-sanitizer
			}
			a := &ml.Attn{NHeads: c.nh, NKVHeads: c.nkv, HeadDim: c.hd, Scale: 1 / math.Sqrt(float64(c.hd))}
			kvDim := c.nkv * c.hd
			spec := ml.KVSpec{Layers: 2, KVDim: kvDim, Pages: (c.ctx + ml.PageSize - 1) / ml.PageSize}
			gc, err := p.g.NewKVCache(spec)
			if err != nil {
				t.Fatal(err)
			}
			rc, _ := p.ref.NewKVCache(spec)
			pos := 0
			for _, n := range c.steps {
				q := p.input(r, c.nh*c.hd, n, 1)
				k := p.input(r, kvDim, n, 1)
				v := p.input(r, kvDim, n, 1)
				out := p.tensor(c.nh*c.hd, n)
				p.g.Begin(ml.Contiguous(pos, n, false))
				p.ref.Begin(ml.Contiguous(pos, n, false))
				p.g.Attention(out.g, q.g, k.g, v.g, gc, 1, a)
				p.ref.Attention(out.r, q.r, k.r, v.r, rc, 1, a)
				p.compare(fmt.Sprintf("Attention (%s cache) %d/%d heads × %d, rows %d at %d", typ, c.nh, c.nkv, c.hd, n, pos), out, bound)
				pos += n
			}
		}
	}
}

// TestKVCacheTooLarge: out of memory is an error that says what to try.
// TestAttentionDecodeRope decodes one position at a time with the rope of
// q and k folded into the decode attention kernel, through contexts long
// enough to need several blocks a KV head (and more chunks than blocks), one run a step (so the steps after the
// second replay a graph). Outputs and the rotated q and k are checked
// against the float64 oracle at the split boundaries.
func TestAttentionDecodeRope(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(13, uint64(os.Getpid())))
	for _, c := range []struct{ nh, nkv, hd, ctx int }{
		{32, 8, 128, 700}, // Llama-3: four query heads a KV head
		{32, 4, 64, 600},  // TinyLlama: eight
		{8, 8, 64, 300},   // one
		{16, 8, 128, 300}, // two
		// 32 KV heads: on 132 SMs, 4 blocks a KV head take the 3 chunks
		// of 256 positions.
		{128, 32, 64, 700},
		{32, 32, 128, 600},
	} {
		for _, kv32 := range []bool{false, true} {
			p.g.KVF32 = kv32
			bound := 2e-6
			if kv32 {
				bound = 1e-11
			}
			ctx := c.ctx
			if testing.Short() {
				ctx = min(ctx, 300)
			}
			a := &ml.Attn{NHeads: c.nh, NKVHeads: c.nkv, HeadDim: c.hd, Scale: 1 / math.Sqrt(float64(c.hd))}
			rope := &ml.Rope{HeadDim: c.hd, PosScale: 1}
			for i := 0; i < c.hd/2; i++ {
				rope.Freqs = append(rope.Freqs, math.Pow(500000, -2*float64(i)/float64(c.hd)))
			}
			kvDim := c.nkv * c.hd
			spec := ml.KVSpec{Layers: 1, KVDim: kvDim, Pages: (ctx + ml.PageSize - 1) / ml.PageSize}
			gc, err := p.g.NewKVCache(spec)
			if err != nil {
				t.Fatal(err)
			}
			rc, _ := p.ref.NewKVCache(spec)
			table := func(cols int) twoW {
				x := make([]float32, cols*ctx)
				for i := range x {
					x[i] = float32(r.NormFloat64())
				}
				return p.weight(ml.WeightData{Name: "table", Type: gguf.F32, Shape: []int64{int64(cols), int64(ctx)}, Data: f32Bytes(x)})
			}
			qT, kT, vT := table(c.nh*c.hd), table(kvDim), table(kvDim)
			q, k, v, out := p.tensor(c.nh*c.hd, 1), p.tensor(kvDim, 1), p.tensor(kvDim, 1), p.tensor(c.nh*c.hd, 1)
			replays := p.g.Stats.Replays
			for pos := 0; pos < ctx; pos++ {
				for _, b := range []ml.Backend{p.g, p.ref} {
					cache := ml.KVCache(gc)
					if b == ml.Backend(p.ref) {
						cache = rc
					}
					tok := []int32{int32(pos)}
					b.Embed(q.of(b), qT.of(b), tok)
					b.Embed(k.of(b), kT.of(b), tok)
					b.Embed(v.of(b), vT.of(b), tok)
					b.Begin(ml.Contiguous(pos, 1, false))
					b.Rope(q.of(b), rope)
					b.Rope(k.of(b), rope)
					b.Attention(out.of(b), q.of(b), k.of(b), v.of(b), cache, 0, a)
				}
				if err := p.g.Sync(); err != nil {
					t.Fatal(err)
				}
				if pos%128 <= 1 || pos%128 == 127 || pos == ctx-1 {
					what := fmt.Sprintf("decode attention with rope, %d/%d heads × %d, ctx %d (f32 cache %v), pos %d", c.nh, c.nkv, c.hd, ctx, kv32, pos)
					p.compare(what, out, bound)
					p.compare(what+" (q)", q, 1e-10)
					p.compare(what+" (k)", k, 1e-10)
				}
			}
			if p.g.Graphs && p.g.Stats.Replays == replays {
				t.Errorf("%d/%d heads: no step was replayed from a graph", c.nh, c.nkv)
			}
		}
	}
	p.g.KVF32 = false
}

func TestKVCacheTooLarge(t *testing.T) {
	g := device(t)
	_, err := g.NewKVCache(ml.KVSpec{Layers: 1000, KVDim: 8192, Pages: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "smaller --ctx") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("error %v: want an out-of-memory error naming --ctx", err)
	}
	t.Log(err)
}

// TestMatvecVariants checks every decode matvec variant (rows a warp, warps
// a block), plain and SwiGLU, on row counts that leave partial groups.
func TestMatvecVariants(t *testing.T) {
	p := newPair(t)
	defer func() { p.g.MVB, p.g.GUB = "", "" }()
	r := rand.New(rand.NewPCG(10, uint64(os.Getpid())))
	for _, typ := range allTypes {
		cols := colsFor(typ)[1]
		w := p.weight(randomWeight(r, typ, cols, 77))
		u := p.weight(randomWeight(r, typ, cols, 77))
		x := p.input(r, cols, 1, 1)
		for _, v := range mvsVariants {
			p.g.MVB = v
			y := p.tensor(77, 1)
			p.g.MatMul(y.g, x.g, w.g)
			p.ref.MatMul(y.r, x.r, w.r)
			p.compare(fmt.Sprintf("mvs %s %s", v, typ), y, boundFor(p.g, typ, 1))
		}
		for _, v := range gusVariants {
			p.g.GUB = v
			h := p.tensor(77, 1)
			p.g.GateUp(h.g, x.g, w.g, u.g)
			p.ref.GateUp(h.r, x.r, w.r, u.r)
			p.compare(fmt.Sprintf("gus %s %s", v, typ), h, 4*boundFor(p.g, typ, 1))
		}
	}
}

// TestNormFused: a decode RMSNorm followed by the q, k, v projections, and
// one followed by SwiGLU, run as single launches that normalize x while
// staging it; the normalized rows must come out too.
func TestNormFused(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(11, uint64(os.Getpid())))
	for _, typ := range allTypes {
		cols := colsFor(typ)[2]
		g1 := p.weight(vectorWeight(r, cols))
		g2 := p.weight(vectorWeight(r, cols))
		wq := p.weight(randomWeight(r, typ, cols, 96))
		wk := p.weight(randomWeight(r, typ, cols, 32))
		wv := p.weight(randomWeight(r, typ, cols, 32))
		wg := p.weight(randomWeight(r, typ, cols, 200))
		wu := p.weight(randomWeight(r, typ, cols, 200))
		x := p.input(r, cols, 1, 2)
		xb, xb2 := p.tensor(cols, 1), p.tensor(cols, 1)
		q, k, v, h := p.tensor(96, 1), p.tensor(32, 1), p.tensor(32, 1), p.tensor(200, 1)
		for _, b := range []ml.Backend{p.g, p.ref} {
			b.RMSNorm(xb.of(b), x.of(b), g1.of(b), 1e-5)
			b.MatMul(q.of(b), xb.of(b), wq.of(b))
			b.MatMul(k.of(b), xb.of(b), wk.of(b))
			b.MatMul(v.of(b), xb.of(b), wv.of(b))
			b.RMSNorm(xb2.of(b), x.of(b), g2.of(b), 1e-5)
			b.GateUp(h.of(b), xb2.of(b), wg.of(b), wu.of(b))
		}
		for name, tt := range map[string]twoT{"xb": xb, "q": q, "k": k, "v": v, "xb2": xb2, "h": h} {
			p.compare(fmt.Sprintf("norm-fused %s %s", typ, name), tt, 4*boundFor(p.g, typ, 1))
		}
	}
}
