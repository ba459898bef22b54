package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"greta/gguf"
	"greta/internal/testmodels"
	"greta/ml"
)

// Long contexts: the tensor-core attention of the f16 cache
// (kernels/flash.cu) and the scalar kernels of the f32 one, against the
// float64 oracle and for batch invariance, at lengths 4097 and 16384.

// faCases are head layouts of the long tests: four query heads a KV head
// at head size 128 (Llama-3's grouping), eight at 64 (TinyLlama's), seven
// at 64 (Qwen2's odd group), with few heads so that the oracle keeps up.
var faCases = []attnCase{{8, 2, 128}, {16, 2, 64}, {14, 2, 64}}

// TestAttentionLong prefills sequences of 4097, 16384, 17 and 1 positions
// (all but the last position of each) in one launch over shuffled pages,
// without rope; checks rows at chunk and tile boundaries and the last rows
// against the oracle; recomputes them alone (the decode kernel), in
// another chunking (the last 100 positions as one chunk after a cached
// prefix) and in a launch mixing a decode row and a chunk, for the same
// bits; then decodes the last position of every sequence with the rope
// folded in, against the oracle. The oracle's cache is filled cheaply: the
// keys and values go in through sequences of one page whose table names
// the page of the real one, so that the float64 attention runs only for
// the checked rows.
func TestAttentionLong(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(31, uint64(os.Getpid())))
	defer func() { p.g.KVF32 = false }()
	lens := []int{4097, 16384, 17, 1}
	cases := faCases
	if testing.Short() {
		lens = []int{1100, 17, 1}
		cases = cases[:2]
	}
	for _, kv32 := range []bool{false, true} {
		p.g.KVF32 = kv32
		bound, typ := 2e-6, "f16"
		if kv32 {
			bound, typ = 1e-11, "f32"
		}
		for _, c := range cases {
			what := fmt.Sprintf("long attention (%s cache) %d/%d heads × %d", typ, c.nh, c.nkv, c.hd)
			faLong(t, p, r, c, lens, bound, what)
		}
	}
}

func faLong(t *testing.T, p *pair, r *rand.Rand, c attnCase, lens []int, bound float64, what string) {
	a := &ml.Attn{NHeads: c.nh, NKVHeads: c.nkv, HeadDim: c.hd, Scale: 1 / math.Sqrt(float64(c.hd))}
	rope := &ml.Rope{HeadDim: c.hd, PosScale: 1}
	for i := 0; i < c.hd/2-1; i++ { // the last pair unrotated
		rope.Freqs = append(rope.Freqs, math.Pow(500000, -2*float64(i)/float64(c.hd)))
	}
	kvDim, qDim := c.nkv*c.hd, c.nh*c.hd
	tables, pages := pagedPool(r, lens)
	spec := ml.KVSpec{Layers: 1, KVDim: kvDim, Pages: pages}
	gc, err := p.g.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := p.ref.NewKVCache(spec)
	// A table row per position of every sequence.
	rowOf := make([]int, len(lens))
	total := 0
	for s, n := range lens {
		rowOf[s] = total
		total += n
	}
	table := func(cols int) twoW {
		x := make([]float32, cols*total)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return p.weight(ml.WeightData{Name: "table", Type: gguf.F32, Shape: []int64{int64(cols), int64(total)}, Data: f32Bytes(x)})
	}
	qT, kT, vT := table(qDim), table(kvDim), table(kvDim)
	tokOf := func(spans []span) []int32 {
		var tok []int32
		for _, sp := range spans {
			for pos := sp.lo; pos < sp.hi; pos++ {
				tok = append(tok, int32(rowOf[sp.seq]+pos))
			}
		}
		return tok
	}
	// runG runs attention on the GPU over spans (rope first when rot) and
	// returns the output rows.
	runG := func(spans []span, rot bool) []float32 {
		n := rows(spans)
		tok := tokOf(spans)
		q, k, v, out := p.g.NewTensor(qDim, n), p.g.NewTensor(kvDim, n), p.g.NewTensor(kvDim, n), p.g.NewTensor(qDim, n)
		p.g.Embed(q, qT.g, tok)
		p.g.Embed(k, kT.g, tok)
		p.g.Embed(v, vT.g, tok)
		p.g.Begin(batchOf(tables, spans))
		if rot {
			p.g.Rope(q, rope)
			p.g.Rope(k, rope)
		}
		p.g.Attention(out, q, k, v, gc, 0, a)
		return readAll(p.g, out)
	}

	// The prefill, in one launch.
	var prefill []span
	for s, n := range lens {
		if n > 1 {
			prefill = append(prefill, span{s, 0, n - 1})
		}
	}
	big := runG(prefill, false)
	bigRow := func(s, pos int) []float32 {
		i := 0
		for _, sp := range prefill {
			if sp.seq == s {
				i += pos - sp.lo
				return big[i*qDim : (i+1)*qDim]
			}
			i += sp.hi - sp.lo
		}
		panic("no such row")
	}

	// The oracle's cache: a sequence of one page for each page of the
	// prompts, its table naming the real page.
	fill := &ml.Batch{}
	var ftok []int32
	for _, sp := range prefill {
		for lo := 0; lo < sp.hi; lo += ml.PageSize {
			for pos := lo; pos < min(lo+ml.PageSize, sp.hi); pos++ {
				fill.Pos = append(fill.Pos, int32(pos-lo))
				fill.Seq = append(fill.Seq, int32(len(fill.Pages)))
				ftok = append(ftok, int32(rowOf[sp.seq]+pos))
			}
			fill.Pages = append(fill.Pages, []int32{tables[sp.seq][lo/ml.PageSize]})
		}
	}
	{
		n := len(ftok)
		q, k, v, out := p.ref.NewTensor(qDim, n), p.ref.NewTensor(kvDim, n), p.ref.NewTensor(kvDim, n), p.ref.NewTensor(qDim, n)
		p.ref.Embed(q, qT.r, ftok)
		p.ref.Embed(k, kT.r, ftok)
		p.ref.Embed(v, vT.r, ftok)
		p.ref.Begin(fill)
		p.ref.Attention(out, q, k, v, rc, 0, a)
	}

	// The checked rows: chunk and tile boundaries, and the end.
	type row struct{ s, pos int }
	var checked []row
	for _, sp := range prefill {
		seen := map[int]bool{}
		for _, pos := range []int{0, 1, 15, 16, 63, 64, 255, 256, 257, 1023, 4095, 4096, 8191, 8192, sp.hi - 17, sp.hi - 2, sp.hi - 1} {
			if pos >= 0 && pos < sp.hi && !seen[pos] {
				seen[pos] = true
				checked = append(checked, row{sp.seq, pos})
			}
		}
	}
	// The oracle on the checked rows (positions need not be consecutive
	// for it).
	{
		sel := &ml.Batch{Pages: tables}
		var tok []int32
		for _, cr := range checked {
			sel.Pos = append(sel.Pos, int32(cr.pos))
			sel.Seq = append(sel.Seq, int32(cr.s))
			tok = append(tok, int32(rowOf[cr.s]+cr.pos))
		}
		n := len(tok)
		q, k, v, out := p.ref.NewTensor(qDim, n), p.ref.NewTensor(kvDim, n), p.ref.NewTensor(kvDim, n), p.ref.NewTensor(qDim, n)
		p.ref.Embed(q, qT.r, tok)
		p.ref.Embed(k, kT.r, tok)
		p.ref.Embed(v, vT.r, tok)
		p.ref.Begin(sel)
		p.ref.Attention(out, q, k, v, rc, 0, a)
		want := readAll(p.ref, out)
		got := make([]float32, 0, len(want))
		for _, cr := range checked {
			got = append(got, bigRow(cr.s, cr.pos)...)
		}
		for i, v := range got {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%s: prefill row %v value %d is %v", what, checked[i/qDim], i%qDim, v)
			}
		}
		e := testmodels.NMSE(got, want)
		if e > bound || math.IsNaN(e) {
			t.Errorf("%s: prefill of %v, %d rows checked: NMSE %.3g > %.0g", what, lens, len(checked), e, bound)
		}
		// Row by row too, so that one bad row is not averaged away.
		worst := 0.0
		for i := range checked {
			worst = max(worst, testmodels.NMSE(got[i*qDim:(i+1)*qDim], want[i*qDim:(i+1)*qDim]))
		}
		if worst > 10*bound {
			t.Errorf("%s: worst checked row NMSE %.3g > %.0g", what, worst, 10*bound)
		}
		t.Logf("%s: prefill of %v in one launch: NMSE %.3g over %d rows (worst row %.3g)", what, lens, e, len(checked), worst)
	}

	same := func(how string, s, pos int, got []float32) {
		want := bigRow(s, pos)
		if i, ok := bitsEqual(got, want); !ok {
			t.Errorf("%s: sequence %d position %d %s: value %d is %g, %g in the prefill", what, s, pos, how, i, got[i], want[i])
		}
	}
	// Alone: one row of one sequence (the decode kernel).
	for _, cr := range checked {
		same("alone", cr.s, cr.pos, runG([]span{{cr.s, cr.pos, cr.pos + 1}}, false))
	}
	// Another chunking: the last 100 prompt positions of the long
	// sequences as one chunk after their cached prefix, in one launch.
	var tail []span
	for _, sp := range prefill {
		if sp.hi > 200 {
			tail = append(tail, span{sp.seq, sp.hi - 100, sp.hi})
		}
	}
	if len(tail) > 0 {
		out := runG(tail, false)
		i := 0
		for _, sp := range tail {
			for pos := sp.lo; pos < sp.hi; pos++ {
				same("in a chunk of the last 100", sp.seq, pos, out[i*qDim:(i+1)*qDim])
				i++
			}
		}
		// Mixed: the first long sequence's last prompt row alone, beside
		// the chunk of the other (or of itself, earlier).
		sp0 := tail[0]
		other := span{sp0.seq, sp0.lo - 37, sp0.lo - 10}
		if len(tail) > 1 {
			other = span{tail[1].seq, tail[1].hi - 30, tail[1].hi - 1}
		}
		mixed := []span{{sp0.seq, sp0.hi - 1, sp0.hi}, other}
		if other.seq < sp0.seq {
			mixed = []span{other, {sp0.seq, sp0.hi - 1, sp0.hi}}
		}
		out = runG(mixed, false)
		i = 0
		for _, sp := range mixed {
			for pos := sp.lo; pos < sp.hi; pos++ {
				same("in a mixed launch", sp.seq, pos, out[i*qDim:(i+1)*qDim])
				i++
			}
		}
	}

	// Decode: the last position of every sequence, the rope folded in.
	var decode []span
	for s, n := range lens {
		decode = append(decode, span{s, n - 1, n})
	}
	got := runG(decode, true)
	{
		n := len(decode)
		tok := tokOf(decode)
		q, k, v, out := p.ref.NewTensor(qDim, n), p.ref.NewTensor(kvDim, n), p.ref.NewTensor(kvDim, n), p.ref.NewTensor(qDim, n)
		p.ref.Embed(q, qT.r, tok)
		p.ref.Embed(k, kT.r, tok)
		p.ref.Embed(v, vT.r, tok)
		p.ref.Begin(batchOf(tables, decode))
		p.ref.Rope(q, rope)
		p.ref.Rope(k, rope)
		p.ref.Attention(out, q, k, v, rc, 0, a)
		want := readAll(p.ref, out)
		e := testmodels.NMSE(got, want)
		if e > bound || math.IsNaN(e) {
			t.Errorf("%s: decode of %v: NMSE %.3g > %.0g", what, lens, e, bound)
		}
		t.Logf("%s: decode with rope: NMSE %.3g", what, e)
	}
}

// timeLaunches returns the best of 5 of the mean time of n runs of f
// back to back, in µs.
func timeLaunches(t *testing.T, g *Backend, n int, f func()) float64 {
	g.enter()
	start, stop := mustEvent(t, g), mustEvent(t, g)
	g.exit()
	defer func() {
		g.enter()
		g.d.EventDestroy(start)
		g.d.EventDestroy(stop)
		g.exit()
	}()
	f() // warm up
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	var best float64
	for rep := 0; rep < 5; rep++ {
		g.enter()
		g.d.EventRecord(start, g.stream)
		g.exit()
		for i := 0; i < n; i++ {
			f()
		}
		if err := g.Sync(); err != nil {
			t.Fatal(err)
		}
		g.enter()
		g.d.EventRecord(stop, g.stream)
		g.d.EventSynchronize(stop)
		ms, _ := g.d.EventElapsed(start, stop)
		g.exit()
		if us := float64(ms) * 1000 / float64(n); rep == 0 || us < best {
			best = us
		}
	}
	return best
}

// copyBandwidth measures a device-to-device copy of 1 GiB, bytes read plus
// written a second.
func copyBandwidth(t *testing.T, g *Backend) float64 {
	const n = 1 << 30
	g.enter()
	src, err1 := g.alloc(n, "bench")
	dst, err2 := g.alloc(n, "bench")
	g.exit()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	defer func() {
		g.enter()
		g.free(src)
		g.free(dst)
		g.exit()
	}()
	us := timeLaunches(t, g, 10, func() {
		g.enter()
		g.d.MemcpyDtoDAsync(dst, src, n, g.stream)
		g.exit()
	})
	return 2 * n / (us * 1e-6)
}

// TestAttentionBatchTime (GRETA_CUDA_BENCH=1) times Llama-3-8B's
// attention (32 query heads, 8 KV heads of 128, f16 cache), one layer:
// the prefill of 16 sequences of 100 to 8000 positions in one launch,
// then their decode step (one row each, the rope folded in), against the
// time the step's keys and values take at the copy bandwidth; a 4096-row
// prompt alone; each with the tensor-core kernels and with the scalar ones.
func TestAttentionBatchTime(t *testing.T) {
	if os.Getenv("GRETA_CUDA_BENCH") != "1" {
		t.Skip("GRETA_CUDA_BENCH=1 runs it")
	}
	g := device(t)
	g.Graphs = false
	defer func() { g.Graphs, g.FA = true, true }()
	const nh, nkv, hd = 32, 8, 128
	const qDim, kvDim = nh * hd, nkv * hd
	a := &ml.Attn{NHeads: nh, NKVHeads: nkv, HeadDim: hd, Scale: 1 / math.Sqrt(hd)}
	rope := &ml.Rope{HeadDim: hd, PosScale: 1}
	for i := 0; i < hd/2; i++ {
		rope.Freqs = append(rope.Freqs, math.Pow(500000, -2*float64(i)/hd))
	}
	r := rand.New(rand.NewPCG(7, 7))
	var lens []int
	for i := 0; i < 16; i++ {
		lens = append(lens, 100+i*(8000-100)/15)
	}
	tables, pages := pagedPool(r, lens)
	cache, err := g.NewKVCache(ml.KVSpec{Layers: 1, KVDim: kvDim, Pages: pages})
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]float32, 1<<20+7)
	for i := range noise {
		noise[i] = float32(r.NormFloat64())
	}
	fill := func(cols, rows int) ml.Tensor {
		x := g.NewTensor(cols, rows)
		v := make([]float32, cols*rows)
		o := r.IntN(len(noise))
		for i := range v {
			v[i] = noise[(o+i)%len(noise)]
		}
		g.enter()
		err := g.d.MemcpyHtoD(x.(*Tensor).ptr, f32Bytes(v))
		g.exit()
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	bw := copyBandwidth(t, g)
	fmt.Printf("BENCH copy %.0f GB/s (1 GiB device to device, read + write)\n", bw/1e9)
	var prefill, decode []span
	kvBytes, flops := 0.0, 0.0
	for s, n := range lens {
		prefill = append(prefill, span{s, 0, n - 1})
		decode = append(decode, span{s, n - 1, n})
		kvBytes += float64(n) * kvDim * 2 * 2
		flops += 4 * float64(n-1) * float64(n) / 2 * hd * nh
	}
	np := rows(prefill)
	pq, pk, pv, po := fill(qDim, np), fill(kvDim, np), fill(kvDim, np), g.NewTensor(qDim, np)
	dq, dk, dv, do := fill(qDim, 16), fill(kvDim, 16), fill(kvDim, 16), g.NewTensor(qDim, 16)
	pb, db := batchOf(tables, prefill), batchOf(tables, decode)
	one := []span{{15, 0, 4096}}
	oq, ok, ov, oo := fill(qDim, 4096), fill(kvDim, 4096), fill(kvDim, 4096), g.NewTensor(qDim, 4096)
	ob := batchOf(tables, one)
	for _, fa := range []bool{true, false} {
		g.FA = fa
		name := map[bool]string{true: "tensor cores", false: "scalar"}[fa]
		us := timeLaunches(t, g, 1, func() {
			g.Begin(pb)
			g.Attention(po, pq, pk, pv, cache, 0, a)
		})
		fmt.Printf("BENCH attn prefill 16 seqs 100..8000 (%s): %.0f us a layer, %.1f TFLOP/s\n", name, us, flops/us/1e6)
		us1 := timeLaunches(t, g, 5, func() {
			g.Begin(ob)
			g.Attention(oo, oq, ok, ov, cache, 0, a)
		})
		f1 := 4 * 4096.0 * 4097 / 2 * hd * nh
		fmt.Printf("BENCH attn prefill 4096 rows (%s): %.0f us a layer, %.1f TFLOP/s\n", name, us1, f1/us1/1e6)
		usd := timeLaunches(t, g, 40, func() {
			g.Begin(db)
			g.Rope(dq, rope)
			g.Rope(dk, rope)
			g.Attention(do, dq, dk, dv, cache, 0, a)
		})
		floor := kvBytes / bw * 1e6
		fmt.Printf("BENCH attn decode 16 seqs 100..8000 (%s): %.1f us a layer (%.2f ms a 32-layer step); KV %.1f MB a layer: %.1f us at the copy's rate, %.2fx\n",
			name, usd, usd*32/1000, kvBytes/1e6, floor, usd/floor)
	}
}
