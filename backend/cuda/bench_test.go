package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"

	"greta/gguf"
	"greta/ml"
)

// TestKernelBandwidth measures the decode matvec kernels against a
// device-to-device copy (GRETA_CUDA_BENCH=1, or =Q4_K for one format;
// prints a table). Each kernel
// reads its weight once, so bytes read / time is its bandwidth; several
// copies of the weight are rotated so that L2 (50 MB) holds none of them.
func TestKernelBandwidth(t *testing.T) {
	if os.Getenv("GRETA_CUDA_BENCH") == "" {
		t.Skip("GRETA_CUDA_BENCH=1 runs it")
	}
	g := device(t)
	g.Graphs = false
	defer func() { g.Graphs = true }()
	g.enter()
	defer g.exit()
	start, stop := mustEvent(t, g), mustEvent(t, g)
	elapsed := func(f func(), reps int) float64 { // median ms per rep
		var ms []float64
		for i := 0; i < 5; i++ {
			g.d.EventRecord(start, g.stream)
			for j := 0; j < reps; j++ {
				f()
			}
			if err := g.runQueue(); err != nil {
				t.Fatal(err)
			}
			g.d.EventRecord(stop, g.stream)
			g.d.EventSynchronize(stop)
			v, _ := g.d.EventElapsed(start, stop)
			ms = append(ms, float64(v)/float64(reps))
		}
		sort.Float64s(ms)
		return ms[len(ms)/2]
	}

	// The copy: 1 GiB each way.
	const n = 1 << 30
	src, _ := g.alloc(n, "bench")
	dst, _ := g.alloc(n, "bench")
	copyMs := elapsed(func() { g.d.MemcpyDtoDAsync(dst, src, n, g.stream) }, 5)
	copyBW := 2 * n / copyMs / 1e6 // GB/s, read + write
	g.free(src)
	g.free(dst)
	fmt.Printf("BENCH copy: %.0f GB/s (1 GiB device to device, read+write)\n", copyBW)

	r := rand.New(rand.NewPCG(9, 9))
	type shape struct{ cols, rows int }
	for _, c := range []struct {
		typ gguf.Type
		s   shape
		gu  bool
	}{
		{gguf.Q4_K, shape{4096, 14336}, false}, // ffn_gate/up of Llama-3-8B
		{gguf.Q4_K, shape{4096, 14336}, true},  // both, fused with SwiGLU
		{gguf.Q4_K, shape{14336, 4096}, false}, // ffn_down
		{gguf.Q4_K, shape{4096, 6144}, false},  // q, k, v
		{gguf.Q4_K, shape{4096, 4096}, false},  // attn_output
		{gguf.Q6_K, shape{14336, 4096}, false},
		{gguf.Q6_K, shape{4096, 128256}, false}, // output
		{gguf.Q5_K, shape{4096, 14336}, false},
		{gguf.Q8_0, shape{4096, 14336}, false},
		{gguf.Q4_0, shape{4096, 14336}, false},
		{gguf.F16, shape{4096, 14336}, false},
		{gguf.BF16, shape{4096, 14336}, false},
		{gguf.F32, shape{4096, 4096}, false},
	} {
		if only := os.Getenv("GRETA_CUDA_BENCH"); only != "1" && !strings.EqualFold(only, c.typ.String()) {
			continue
		}
		wd := randomWeight(r, c.typ, c.s.cols, c.s.rows)
		copies := max(2, int((200<<20)/len(wd.Data))+1)
		var ws []ml.Weight
		for i := 0; i < copies; i++ {
			w, err := g.LoadWeight(wd)
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		x := g.NewTensor(c.s.cols, 1)
		y := g.NewTensor(c.s.rows, 1)
		xv := make([]float32, c.s.cols)
		for i := range xv {
			xv[i] = float32(r.NormFloat64())
		}
		if err := g.d.MemcpyHtoD(x.(*Tensor).ptr, f32Bytes(xv)); err != nil {
			t.Fatal(err)
		}
		variants := mvsVariants
		if c.gu {
			variants = gusVariants
		}
		for _, v := range variants {
			if c.gu {
				g.GUB = v
			} else {
				g.MVB = v
			}
			i := 0
			f := func() {
				if c.gu {
					g.GateUp(y, x, ws[i%copies], ws[(i+1)%copies])
				} else {
					g.MatMul(y, x, ws[i%copies])
				}
				i++
			}
			ms := elapsed(f, 40)
			bytes := float64(len(wd.Data) + 4*c.s.cols + 4*c.s.rows)
			if c.gu {
				bytes += float64(len(wd.Data))
			}
			bw := bytes / ms / 1e6
			name := fmt.Sprintf("%s %dx%d", c.typ, c.s.cols, c.s.rows)
			if c.gu {
				name += " gate+up"
			}
			fmt.Printf("BENCH matvec %-26s %s %8.1f us %7.0f GB/s %5.1f%% of copy\n", name, v, ms*1000, bw, 100*bw/copyBW)
		}
		g.MVB, g.GUB = "", ""
		for _, w := range ws {
			g.free(w.(*Weight).ptr)
		}
		g.free(x.(*Tensor).ptr)
		g.free(y.(*Tensor).ptr)
	}
}

func mustEvent(t *testing.T, g *Backend) cuEvent {
	e, err := g.d.EventCreate()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestAttentionDecodeTime times the decode attention of Llama-3-8B's heads
// (32 query heads, 8 KV heads of 128) with the rope folded in, one layer,
// at several positions, launches back to back (GRETA_CUDA_BENCH=1).
func TestAttentionDecodeTime(t *testing.T) {
	if os.Getenv("GRETA_CUDA_BENCH") != "1" {
		t.Skip("GRETA_CUDA_BENCH=1 runs it")
	}
	g := device(t)
	g.Graphs = false
	defer func() { g.Graphs, g.FA = true, true }()
	const nh, nkv, hd, ctx = 32, 8, 128, 16384
	a := &ml.Attn{NHeads: nh, NKVHeads: nkv, HeadDim: hd, Scale: 1 / math.Sqrt(hd)}
	cache, err := g.NewKVCache(ml.KVSpec{Layers: 1, KVDim: nkv * hd, Pages: (ctx + ml.PageSize - 1) / ml.PageSize})
	if err != nil {
		t.Fatal(err)
	}
	rope := &ml.Rope{HeadDim: hd, PosScale: 1}
	for i := 0; i < hd/2; i++ {
		rope.Freqs = append(rope.Freqs, math.Pow(500000, -2*float64(i)/hd))
	}
	r := rand.New(rand.NewPCG(5, 5))
	fill := func(n int) ml.Tensor {
		x := g.NewTensor(n, 1)
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		if err := g.d.MemcpyHtoD(x.(*Tensor).ptr, f32Bytes(v)); err != nil {
			t.Fatal(err)
		}
		return x
	}
	q, k, v, out := fill(nh*hd), fill(nkv*hd), fill(nkv*hd), g.NewTensor(nh*hd, 1)
	g.enter()
	start, stop := mustEvent(t, g), mustEvent(t, g)
	g.exit()
	for _, c := range []struct {
		fa  bool
		pos int
	}{{true, 0}, {true, 63}, {true, 127}, {true, 511}, {true, 1023}, {true, 4095}, {true, 8191}, {true, 16383},
		{false, 0}, {false, 63}, {false, 127}, {false, 511}, {false, 1023}, {false, 4095}, {false, 8191}, {false, 16383}} {
		pos := c.pos
		g.FA = c.fa
		var best float64
		for rep := 0; rep < 5; rep++ {
			g.enter()
			g.d.EventRecord(start, g.stream)
			g.exit()
			const n = 40
			for i := 0; i < n; i++ {
				g.Begin(ml.Contiguous(pos, 1, false))
				g.Rope(q, rope)
				g.Rope(k, rope)
				g.Attention(out, q, k, v, cache, 0, a)
			}
			if err := g.Sync(); err != nil {
				t.Fatal(err)
			}
			g.enter()
			g.d.EventRecord(stop, g.stream)
			g.d.EventSynchronize(stop)
			ms, _ := g.d.EventElapsed(start, stop)
			g.exit()
			if us := float64(ms) * 1000 / n; rep == 0 || us < best {
				best = us
			}
		}
		fmt.Printf("BENCH attn decode 32/8x128 (fa %v) pos %5d %6.1f us\n", c.fa, pos, best)
	}
}

// TestGemmTime times the many-row products of Llama-3-8B's shapes
// (GRETA_CUDA_BENCH=1 or =gemm): the tensor-core GEMM against mvn/gun
// (GRETA_CUDA_GEMM=0's path), at 2 to 512 activation rows, launches back to
// back, weights rotated through more than L2 holds. Prints µs, the
// weights' GB/s and the multiply-adds' rate.
func TestGemmTime(t *testing.T) {
	if b := os.Getenv("GRETA_CUDA_BENCH"); b != "1" && b != "gemm" {
		t.Skip("GRETA_CUDA_BENCH=1 or =gemm runs it")
	}
	g := device(t)
	g.Graphs = false
	defer func() { g.Graphs, g.Gemm = true, true }()
	g.enter()
	defer g.exit()
	start, stop := mustEvent(t, g), mustEvent(t, g)
	elapsed := func(f func(), reps int) float64 { return medianMs(t, g, start, stop, 3, reps, f, g.runQueue) }
	r := rand.New(rand.NewPCG(10, 10))
	for _, c := range []struct {
		typ        gguf.Type
		cols, rows int
		gu         bool
	}{
		{gguf.Q4_K, 4096, 4096, false},  // attn_output
		{gguf.Q4_K, 4096, 14336, true},  // gate+up with SwiGLU
		{gguf.Q4_K, 14336, 4096, false}, // ffn_down
		{gguf.Q6_K, 14336, 4096, false},
		{gguf.Q6_K, 4096, 1024, false}, // v
		{gguf.Q5_K, 4096, 14336, false},
		{gguf.Q8_0, 4096, 14336, false},
		{gguf.Q4_0, 4096, 14336, false},
	} {
		wd := randomWeight(r, c.typ, c.cols, c.rows)
		copies := max(2, int((200<<20)/len(wd.Data))+1)
		var ws []ml.Weight
		for i := 0; i < copies; i++ {
			w, err := g.LoadWeight(wd)
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		const nmax = 512
		x := g.NewTensor(c.cols, nmax)
		xv := make([]float32, c.cols*nmax)
		for i := range xv {
			xv[i] = float32(r.NormFloat64())
		}
		if err := g.d.MemcpyHtoD(x.(*Tensor).ptr, f32Bytes(xv)); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{2, 4, 8, 16, 32, 64, 128, 256, 512} {
			xs := g.NewTensor(c.cols, n)
			xs.(*Tensor).ptr = x.(*Tensor).ptr
			y := g.NewTensor(c.rows, n)
			line := fmt.Sprintf("BENCH gemm %-5s %5dx%-5d gu=%-5v n=%3d", c.typ, c.cols, c.rows, c.gu, n)
			g.GemmMin = 2
			for _, gemm := range []bool{true, false} {
				g.Gemm = gemm
				i := 0
				f := func() {
					if c.gu {
						g.GateUp(y, xs, ws[i%copies], ws[(i+1)%copies])
					} else {
						g.MatMul(y, xs, ws[i%copies])
					}
					i++
				}
				reps := 20
				if n >= 128 {
					reps = 5
				}
				if !gemm && n >= 256 {
					reps = 2
				}
				ms := elapsed(f, reps)
				wb := float64(len(wd.Data))
				macs := float64(n) * float64(c.cols) * float64(c.rows)
				if c.gu {
					wb, macs = 2*wb, 2*macs
				}
				name := "gemm"
				if !gemm {
					name = "mvn"
				}
				line += fmt.Sprintf(" | %s %8.1f us %5.0f GB/s %5.1f TMAC/s", name, ms*1000, wb/ms/1e6, macs/ms/1e9)
			}
			fmt.Println(line)
		}
		g.Gemm = true
		for _, w := range ws {
			g.free(w.(*Weight).ptr)
		}
	}
}

// TestHGemmTime times every hgemm kernel (the reference hgemm, hgemm_n64
// and hgemm.go's hgemmVariants) on Llama-3-8B's product shapes at 512,
// 2048 and 4096 x rows (GRETA_CUDA_BENCH=1 or =hgemm): the hgemm launch
// alone, over f16 inputs prepared once, median of 5 runs of back-to-back
// launches; and cuBLAS's f16 GEMM on the same inputs where it loads (not
// batch-invariant: a ceiling, not a candidate). One line a kernel and
// shape, "BENCH hgemm <kernel> n= r= k= us= TMACs=", then per shape the
// fastest kernel and what hgemmPick takes.
func TestHGemmTime(t *testing.T) {
	if b := os.Getenv("GRETA_CUDA_BENCH"); b != "1" && b != "hgemm" {
		t.Skip("GRETA_CUDA_BENCH=1 or =hgemm runs it")
	}
	g := device(t)
	g.Graphs = false
	defer func() { g.Graphs, g.UseBLAS = true, false }()
	g.enter()
	defer g.exit()
	g.UseBLAS = true
	blas := g.blasReady()
	start, stop := mustEvent(t, g), mustEvent(t, g)
	elapsed := func(f func(), reps int) float64 { return medianMs(t, g, start, stop, 5, reps, f, nil) }
	const maxX, maxW, maxY = 4096 * 14336, 14336 * 4096, 4096 * 14336
	r := rand.New(rand.NewPCG(11, 11))
	alloc := func(n int) devPtr {
		p, err := g.alloc(uint64(n), "bench")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.free(p) })
		return p
	}
	x16, w16, y := alloc(2*maxX), alloc(2*maxW), alloc(4*maxY)
	if err := g.d.MemcpyHtoD(x16, randomHalves(r, maxX)); err != nil {
		t.Fatal(err)
	}
	if err := g.d.MemcpyHtoD(w16, randomHalves(r, maxW)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{512, 2048, 4096} {
		for _, s := range []struct {
			what string
			r, k int
		}{{"q,o", 4096, 4096}, {"k,v", 1024, 4096}, {"gate,up", 14336, 4096}, {"down", 4096, 14336}} {
			macs := float64(n) * float64(s.r) * float64(s.k)
			reps := max(3, min(50, int(2e11/macs)))
			best, bestUs := "", 0.0
			for _, name := range hgemmNames() {
				if _, _, _, smem, _ := hgemmKernel(name); smem > g.maxSmem {
					continue
				}
				ms := elapsed(func() { g.hgemmLaunch(name, x16, w16, y, 0, n, s.r, s.k, s.r, "TestHGemmTime") }, reps)
				us := ms * 1000
				fmt.Printf("BENCH hgemm %-30s n=%d r=%d k=%d us=%.1f TMACs=%.1f (%s)\n", name, n, s.r, s.k, us, macs/ms/1e9, s.what)
				if best == "" || us < bestUs {
					best, bestUs = name, us
				}
			}
			if blas {
				ms := elapsed(func() {
					if err := g.blas.gemm(s.r, n, s.k, w16, x16, y, s.r); err != nil {
						t.Fatal(err)
					}
				}, reps)
				fmt.Printf("BENCH hgemm %-30s n=%d r=%d k=%d us=%.1f TMACs=%.1f (%s)\n", "cublas", n, s.r, s.k, ms*1000, macs/ms/1e9, s.what)
			}
			fmt.Printf("BENCH hgemm best n=%d r=%d k=%d: %s %.1f us; hgemmPick takes %s\n", n, s.r, s.k, best, bestUs, g.hgemmPick(n, s.r))
		}
	}
}

// medianMs is the median over rounds of the time between events start and
// stop around reps calls of f (then flush, when not nil, which sends what
// the calls queued), in ms a call. The caller holds the context (enter).
func medianMs(t *testing.T, g *Backend, start, stop cuEvent, rounds, reps int, f func(), flush func() error) float64 {
	var ms []float64
	for i := 0; i < rounds; i++ {
		g.d.EventRecord(start, g.stream)
		for j := 0; j < reps; j++ {
			f()
		}
		if flush != nil {
			if err := flush(); err != nil {
				t.Fatal(err)
			}
		}
		g.d.EventRecord(stop, g.stream)
		if err := g.d.EventSynchronize(stop); err != nil {
			t.Fatalf("%s: %v", g.lastLaunch, err)
		}
		v, _ := g.d.EventElapsed(start, stop)
		ms = append(ms, float64(v)/float64(reps))
	}
	sort.Float64s(ms)
	return ms[len(ms)/2]
}
