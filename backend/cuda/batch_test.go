package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"greta/gguf"
	"greta/ml"
	"greta/model/llama"
)

// Batches of many sequences over a paged cache: the ops against the float64
// oracle with pages in shuffled order and sequences of mixed lengths in one
// launch, and batch invariance: a row alone and inside a batch of many
// sequences gives the same bits (matmuls, attention, whole models).

// seqLens are the context lengths of the sequences of one launch: one
// position, around a page, several pages, past a chunk of attention.
var seqLens = []int{1, 15, 16, 17, 100, 1000}

// pagedPool deals every sequence its pages out of a pool, shuffled, with
// spare pages in between.
func pagedPool(r *rand.Rand, lens []int) (tables [][]int32, pages int) {
	for _, n := range lens {
		pages += (n + ml.PageSize - 1) / ml.PageSize
	}
	pages += 7
	perm := r.Perm(pages)
	k := 0
	for _, n := range lens {
		t := make([]int32, (n+ml.PageSize-1)/ml.PageSize)
		for j := range t {
			t[j] = int32(perm[k])
			k++
		}
		tables = append(tables, t)
	}
	return tables, pages
}

// span is rows [lo, hi) of positions of sequence seq (an index into the
// page tables).
type span struct{ seq, lo, hi int }

// batchOf builds the batch of the spans, in order; every span's sequence
// gets its own number. Out is the last row of each span.
func batchOf(tables [][]int32, spans []span) *ml.Batch {
	b := &ml.Batch{}
	for s, sp := range spans {
		for p := sp.lo; p < sp.hi; p++ {
			b.Pos = append(b.Pos, int32(p))
			b.Seq = append(b.Seq, int32(s))
		}
		b.Pages = append(b.Pages, tables[sp.seq])
		b.Out = append(b.Out, int32(len(b.Pos)-1))
	}
	return b
}

func rows(spans []span) int {
	n := 0
	for _, s := range spans {
		n += s.hi - s.lo
	}
	return n
}

func bitsEqual(a, b []float32) (int, bool) {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i, false
		}
	}
	return 0, true
}

// attnCase is a head layout.
type attnCase struct{ nh, nkv, hd int }

var pagedAttnCases = []attnCase{
	{32, 8, 128}, // Llama-3: attn_dec, four query heads a KV head
	{32, 4, 64},  // TinyLlama: attn_dec, eight
	{8, 8, 64},   // attn_dec, one
	{16, 8, 128}, // attn_dec, two
	{28, 4, 128}, // seven (fa_* with the f16 cache; attn_gen with f32)
	{32, 2, 64},  // sixteen: fa_dec's whole tile
	{12, 4, 96},  // attn_gen: odd head size
	{6, 1, 16},   // attn_gen: six query heads a KV head
}

// TestPagedAttention runs, for each head layout and cache type, a prefill
// launch holding every sequence's prompt (all but its last position), then
// one decode launch with a row of every sequence, then a launch mixing
// decode rows and chunks, with rope before attention as in the model; all
// against the oracle. Then it recomputes rows alone (one row, one
// sequence) and checks that their outputs have the bits they had inside
// the big launches.
func TestPagedAttention(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(21, uint64(os.Getpid())))
	defer func() { p.g.KVF32 = false }()
	lens := seqLens
	if testing.Short() {
		lens = []int{1, 15, 16, 17, 100, 300}
	}
	for _, kv32 := range []bool{false, true} {
		p.g.KVF32 = kv32
		bound, typ := 2e-6, "f16"
		if kv32 {
			bound, typ = 1e-11, "f32"
		}
		for _, c := range pagedAttnCases {
			a := &ml.Attn{NHeads: c.nh, NKVHeads: c.nkv, HeadDim: c.hd, Scale: 1 / math.Sqrt(float64(c.hd))}
			rope := &ml.Rope{HeadDim: c.hd, PosScale: 1}
			for i := 0; i < c.hd/2-1; i++ { // the last pair unrotated
				rope.Freqs = append(rope.Freqs, math.Pow(10000, -2*float64(i)/float64(c.hd)))
			}
			kvDim, qDim := c.nkv*c.hd, c.nh*c.hd
			tables, pages := pagedPool(r, lens)
			spec := ml.KVSpec{Layers: 2, KVDim: kvDim, Pages: pages}
			gc, err := p.g.NewKVCache(spec)
			if err != nil {
				t.Fatal(err)
			}
			rc, _ := p.ref.NewKVCache(spec)

			// The steps' spans.
			var prefill, decode []span
			for s, n := range lens {
				if n > 1 {
					prefill = append(prefill, span{s, 0, n - 1})
				}
				decode = append(decode, span{s, n - 1, n})
			}
			// Mixed: sequences 0..2 rewrite their last position as decode
			// rows, the others a chunk ending at their last position.
			var mixed []span
			for s, n := range lens {
				lo := n - 1
				if s >= 3 {
					lo = max(0, n-9)
				}
				mixed = append(mixed, span{s, lo, n})
			}
			what := fmt.Sprintf("paged attention (%s cache) %d/%d heads × %d", typ, c.nh, c.nkv, c.hd)
			q1, k1, v1, o1 := p.g.NewTensor(qDim, 1), p.g.NewTensor(kvDim, 1), p.g.NewTensor(kvDim, 1), p.g.NewTensor(qDim, 1)
			checked := 0
			for step, spans := range [][]span{prefill, decode, mixed} {
				n := rows(spans)
				bt := batchOf(tables, spans)
				table := func(cols int) twoW {
					x := make([]float32, cols*max(n, 2))
					for i := range x {
						x[i] = float32(r.NormFloat64())
					}
					return p.weight(ml.WeightData{Name: "table", Type: gguf.F32, Shape: []int64{int64(cols), int64(max(n, 2))}, Data: f32Bytes(x)})
				}
				qT, kT, vT := table(qDim), table(kvDim), table(kvDim)
				q, k, v, out := p.tensor(qDim, n), p.tensor(kvDim, n), p.tensor(kvDim, n), p.tensor(qDim, n)
				tok := make([]int32, n)
				for i := range tok {
					tok[i] = int32(i)
				}
				for _, b := range []ml.Backend{p.g, p.ref} {
					cache := ml.KVCache(gc)
					if b == ml.Backend(p.ref) {
						cache = rc
					}
					b.Embed(q.of(b), qT.of(b), tok)
					b.Embed(k.of(b), kT.of(b), tok)
					b.Embed(v.of(b), vT.of(b), tok)
					b.Begin(bt)
					b.Rope(q.of(b), rope)
					b.Rope(k.of(b), rope)
					b.Attention(out.of(b), q.of(b), k.of(b), v.of(b), cache, 1, a)
				}
				p.compare(fmt.Sprintf("%s, step %d (%d rows of %d sequences)", what, step, n, len(spans)), out, bound)
				p.compare(fmt.Sprintf("%s, step %d: rotated q", what, step), q, 1e-10)
				// Invariance: rows alone, through the decode path (one row,
				// one sequence: the rope folded into attn_dec where it
				// fits), before the next step rewrites the cache. Storing
				// a row's k and v again writes the same values.
				batchOut := readAll(p.g, out.g)
				row := 0
				for _, sp := range spans {
					for pos := sp.lo; pos < sp.hi; pos++ {
						// The first, last and a middle row of each span.
						if pos == sp.lo || pos == sp.hi-1 || pos == (sp.lo+sp.hi)/2 || pos%256 == 255 || pos%256 == 0 {
							tok := []int32{int32(row)}
							p.g.Embed(q1, qT.g, tok)
							p.g.Embed(k1, kT.g, tok)
							p.g.Embed(v1, vT.g, tok)
							p.g.Begin(batchOf(tables, []span{{sp.seq, pos, pos + 1}}))
							p.g.Rope(q1, rope)
							p.g.Rope(k1, rope)
							p.g.Attention(o1, q1, k1, v1, gc, 1, a)
							got := readAll(p.g, o1)
							if i, ok := bitsEqual(got, batchOut[row*qDim:(row+1)*qDim]); !ok {
								t.Errorf("%s: step %d, sequence %d position %d alone: value %d is %g, %g in the batch", what, step, sp.seq, pos, i, got[i], batchOut[row*qDim+i])
							}
							checked++
						}
						row++
					}
				}
			}
			t.Logf("%s: %d rows alone match their batch bits", what, checked)
		}
	}
}

// TestMatMulInvariance: every row of a product over 100 rows has the bits
// of the same row alone and inside 2, 3, 8, 17 or 64 rows, for every format
// and width, plain, with the residual add, SwiGLU, q/k/v fused, and with
// the RMSNorm folded in (the GEMM and its splits for the quantized
// formats, mvn for the others).
func TestMatMulInvariance(t *testing.T) {
	p := newPair(t)
	g := p.g
	r := rand.New(rand.NewPCG(22, uint64(os.Getpid())))
	const n = 100
	for _, typ := range allTypes {
		for _, cols := range colsFor(typ) {
			w := p.weight(randomWeight(r, typ, cols, 67)).g
			u := p.weight(randomWeight(r, typ, cols, 67)).g
			wk := p.weight(randomWeight(r, typ, cols, 19)).g
			nw := p.weight(vectorWeight(r, cols)).g
			x := make([]float32, n*cols)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			table := p.weight(ml.WeightData{Name: "x", Type: gguf.F32, Shape: []int64{int64(cols), n}, Data: f32Bytes(x)}).g
			res := make([]float32, n*67)
			for i := range res {
				res[i] = float32(r.NormFloat64())
			}
			rtable := p.weight(ml.WeightData{Name: "resid", Type: gguf.F32, Shape: []int64{67, n}, Data: f32Bytes(res)}).g
			// products returns, for rows lo..hi of x, the outputs of each
			// kind of product, row-major.
			products := func(lo, hi int) map[string][]float32 {
				m := hi - lo
				tok := make([]int32, m)
				for i := range tok {
					tok[i] = int32(lo + i)
				}
				xs, xb := g.NewTensor(cols, m), g.NewTensor(cols, m)
				y, yr, h, yk, yn, hn := g.NewTensor(67, m), g.NewTensor(67, m), g.NewTensor(67, m), g.NewTensor(19, m), g.NewTensor(67, m), g.NewTensor(67, m)
				rs := g.NewTensor(67, m)
				g.Embed(xs, table, tok)
				g.Embed(rs, rtable, tok)
				g.MatMul(y, xs, w)
				g.MatMul(yk, xs, wk) // fused with the one before where formats allow
				g.MatMulAdd(yr, rs, xs, u)
				g.GateUp(h, xs, w, u)
				g.RMSNorm(xb, xs, nw, 1e-5)
				g.MatMul(yn, xb, w)
				g.RMSNorm(xb, xs, nw, 1e-5)
				g.GateUp(hn, xb, w, u)
				out := map[string][]float32{}
				for name, t := range map[string]ml.Tensor{"matmul": y, "fused k": yk, "matmuladd": yr, "resid": rs, "gateup": h, "norm+matmul": yn, "norm+gateup": hn} {
					out[name] = readAll(g, t)
				}
				return out
			}
			all := products(0, n)
			for _, rg := range [][2]int{{0, 1}, {7, 8}, {n - 1, n}, {3, 5}, {3, 6}, {20, 28}, {20, 37}, {30, 94}} {
				sub := products(rg[0], rg[1])
				for name, v := range sub {
					cw := len(all[name]) / n
					if i, ok := bitsEqual(v, all[name][rg[0]*cw:rg[1]*cw]); !ok {
						t.Errorf("%s %d cols: %s of rows %d..%d differs from the %d-row product at value %d: %g vs %g",
							typ, cols, name, rg[0], rg[1]-1, n, i, v[i], all[name][rg[0]*cw+i])
					}
				}
			}
		}
	}
}

// TestForwardBatchInvariance runs small synthetic models over six
// sequences of mixed prompt lengths (pages shuffled), each alone and all in
// one batch (one prefill launch, then decode steps with a row of each),
// and in chunks of 7 tokens mixed across sequences; the logits must have
// the same bits.
func TestForwardBatchInvariance(t *testing.T) {
	g := device(t)
	for _, o := range []llama.SynthOptions{
		{Dim: 512, Layers: 2, Heads: 8, KVHeads: 2, FFN: 1024, Vocab: 700, Type: "q4_k_m"}, // attn_dec (64 × 4)
		{Dim: 192, Layers: 2, Heads: 6, KVHeads: 3, FFN: 520, Vocab: 333, Type: "f16"},     // attn_gen (32 × 2)
		{Dim: 256, Layers: 2, Heads: 2, KVHeads: 1, FFN: 512, Vocab: 500, Type: "q6_k"},    // attn_dec (128 × 2)
	} {
		for _, kv32 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s-f32cache-%v", o.Type, kv32), func(t *testing.T) {
				g.KVF32 = kv32
				defer func() { g.KVF32 = false }()
				o.Context, o.Seed = 1024, 5
				m := load(t, synthModel(t, o), g)
				V := m.Config.VocabSize
				r := rand.New(rand.NewPCG(23, 1))
				prompts := [][]int32{}
				for _, n := range []int{1, 15, 16, 17, 100, 300} {
					p := make([]int32, n)
					for i := range p {
						p[i] = int32(r.IntN(V))
					}
					prompts = append(prompts, p)
				}
				const steps = 3
				lens := make([]int, len(prompts))
				for i, p := range prompts {
					lens[i] = len(p) + steps
				}
				tables, pages := pagedPool(r, lens)
				newCache := func() ml.KVCache {
					c, err := g.NewKVCache(ml.KVSpec{Layers: m.Config.NLayers, KVDim: m.Config.KVDim(), Pages: pages})
					if err != nil {
						t.Fatal(err)
					}
					return c
				}
				total := 0
				for _, p := range prompts {
					total += len(p)
				}
				st := m.NewBatchState(total, len(prompts))
				// forward runs spans with the given tokens and returns the
				// logits of each span's last row.
				forward := func(cache ml.KVCache, spans []span, toks []int32) [][]float32 {
					bt := batchOf(tables, spans)
					if err := m.ForwardBatch(st, cache, toks, bt); err != nil {
						t.Fatal(err)
					}
					all := readAll(g, st.Logits)
					out := make([][]float32, len(spans))
					for i := range spans {
						out[i] = all[i*V : (i+1)*V]
					}
					return out
				}
				// Greedy continuations: the oracle's choice is not needed;
				// the alone run picks the tokens and the batch run is fed
				// the same ones.
				argmax := func(l []float32) int32 {
					best := 0
					for i, v := range l {
						if v > l[best] {
							best = i
						}
					}
					return int32(best)
				}
				alone := make([][][]float32, len(prompts)) // [seq][step] logits
				next := make([][]int32, len(prompts))
				c1 := newCache()
				for s, p := range prompts {
					l := forward(c1, []span{{s, 0, len(p)}}, p)[0]
					alone[s] = append(alone[s], l)
					for k := 0; k < steps; k++ {
						tok := argmax(l)
						next[s] = append(next[s], tok)
						l = forward(c1, []span{{s, len(p) + k, len(p) + k + 1}}, []int32{tok})[0]
						alone[s] = append(alone[s], l)
					}
				}
				check := func(how string, s, k int, l []float32) {
					if i, ok := bitsEqual(l, alone[s][k]); !ok {
						t.Errorf("%s: sequence %d (prompt %d) step %d: logit %d is %g, %g alone", how, s, len(prompts[s]), k, i, l[i], alone[s][k][i])
					}
				}
				// All together: one prefill, then decode rows of all.
				c2 := newCache()
				var spans []span
				var toks []int32
				for s, p := range prompts {
					spans = append(spans, span{s, 0, len(p)})
					toks = append(toks, p...)
				}
				for s, l := range forward(c2, spans, toks) {
					check("one batch", s, 0, l)
				}
				for k := 0; k < steps; k++ {
					spans, toks = spans[:0], toks[:0]
					for s, p := range prompts {
						spans = append(spans, span{s, len(p) + k, len(p) + k + 1})
						toks = append(toks, next[s][k])
					}
					for s, l := range forward(c2, spans, toks) {
						check("one batch", s, k+1, l)
					}
				}
				// Chunks of at most 7 tokens a step, sequences mixed.
				c3 := newCache()
				done := make([]int, len(prompts))
				for {
					spans, toks = spans[:0], toks[:0]
					budget := 7
					var seqs []int
					for s, p := range prompts {
						if budget == 0 || done[s] == len(p) {
							continue
						}
						k := min(budget, len(p)-done[s])
						spans = append(spans, span{s, done[s], done[s] + k})
						toks = append(toks, p[done[s]:done[s]+k]...)
						seqs = append(seqs, s)
						done[s] += k
						budget -= k
					}
					if len(spans) == 0 {
						break
					}
					for i, l := range forward(c3, spans, toks) {
						if s := seqs[i]; done[s] == len(prompts[s]) {
							check("chunks of 7", s, 0, l)
						}
					}
				}
			})
		}
	}
}

// TestBatchDesc checks the batch description the kernels read
// (kernels/common.cuh batch_row): positions, then each row's table offset,
// then the tables. It needs no GPU.
func TestBatchDesc(t *testing.T) {
	b := &ml.Batch{
		Pos:   []int32{5, 6, 0, 40},
		Seq:   []int32{0, 0, 1, 2},
		Pages: [][]int32{{9}, {3}, {7, 1, 4}},
	}
	h, _, maxPage := batchDesc(b, nil, nil)
	want := []int32{5, 6, 0, 40, 0, 0, 1, 2, 9, 3, 7, 1, 4}
	if fmt.Sprint(h) != fmt.Sprint(want) || maxPage != 9 {
		t.Fatalf("batchDesc = %v (largest page %d), want %v (9)", h, maxPage, want)
	}
	// Row i's page for position p, as the kernels find it.
	rows := len(b.Pos)
	for i := range rows {
		p := int(b.Pos[i])
		got := h[2*rows+int(h[rows+i])+p/ml.PageSize]
		if w := b.Pages[b.Seq[i]][p/ml.PageSize]; got != w {
			t.Errorf("row %d: page %d, want %d", i, got, w)
		}
	}
}

// TestGemm checks the tensor-core GEMM (kernels/gemm.cu) of every format it
// takes against the oracle at 1, 2, 3, 8, 17, 64, 100 and 512 activation
// rows (300 weight rows: three tiles, the last partial), and its bits: a
// row computed alone (the one-row decode kernel) has the same bits inside
// every batch, and forcing the split over classes to 1, 2, 4 or 16 changes
// no bit. Widths: 4096, and a narrow one whose units do not fill the 32
// classes (768 values of the 256-value formats; 96 of Q8_0 and Q4_0: an
// odd number of Q4_0 units).
func TestGemm(t *testing.T) {
	p := newPair(t)
	g := p.g
	if os.Getenv("GRETA_CUDA_GEMM") == "0" {
		t.Skip("GRETA_CUDA_GEMM=0")
	}
	// The GEMM is off by default until it has run on a GPU; this test turns it on.
	was, wasMin := g.Gemm, g.GemmMin
	g.Gemm, g.GemmMin = true, 2
	defer func() { g.Gemm, g.GemmMin = was, wasMin }()
	r := rand.New(rand.NewPCG(23, uint64(os.Getpid())))
	counts := []int{1, 2, 3, 8, 17, 64, 100, 512}
	if testing.Short() {
		counts = []int{1, 2, 17, 100}
	}
	const rows = 300
	const nmax = 512
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q5_K, gguf.Q6_K, gguf.Q8_0, gguf.Q4_0} {
		narrow := 768
		if typ.BlockSize() == 32 {
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
			// Some rows with a wide range inside runs of 16.
			for i := 0; i < len(x); i += 97 {
				x[i] *= 50
			}
			alone := map[int][]float32{}
			for _, i := range []int{0, 1, 2, 7, 16, 63, 99, 511} {
				xi := p.inputFrom(x[i*cols:(i+1)*cols], cols, 1)
				y := g.NewTensor(rows, 1)
				g.MatMul(y, xi.g, w.g)
				alone[i] = readAll(g, y)
			}
			for _, n := range counts {
				xt := p.inputFrom(x[:n*cols], cols, n)
				y := p.tensor(rows, n)
				g.MatMul(y.g, xt.g, w.g)
				p.ref.MatMul(y.r, xt.r, w.r)
				what := fmt.Sprintf("%s %dx%d n=%d", typ, cols, rows, n)
				p.compare(what, y, boundQ16)
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
				for _, s := range []int{1, 2, 4, 16} {
					g.gemmSplit = s
					ys := g.NewTensor(rows, n)
					g.MatMul(ys, xt.g, w.g)
					gs := readAll(g, ys)
					g.gemmSplit = 0
					if k, ok := bitsEqual(gs, got); !ok {
						t.Errorf("%s: split %d differs at output %d: %g vs %g", what, s, k, gs[k], got[k])
					}
				}
			}
		}
	}
}
