package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"greta/backend/ref"
	"greta/gguf"
	"greta/ml"
	"greta/model/llama"
)

// The family ops (family.go) against the float64 oracle, on fresh random
// inputs; they skip without a GPU.

func TestFamilyNorms(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(41, uint64(os.Getpid())))
	for _, c := range []struct{ heads, hd int }{{16, 128}, {4, 32}, {8, 256}, {3, 72}} {
		for _, rows := range []int{1, 5} {
			// Per-head RMSNorm in place (Qwen3's q and k norms).
			x := p.input(r, c.heads*c.hd, rows, 3)
			w := p.weight(vectorWeight(r, c.hd))
			p.g.RMSNorm(x.g, x.g, w.g, 1e-6)
			p.ref.RMSNorm(x.r, x.r, w.r, 1e-6)
			p.compare(fmt.Sprintf("per-head RMSNorm %d×%d rows %d", c.heads, c.hd, rows), x, boundF32)

			// RMSNormAdd (Gemma's post-norms).
			dim := c.heads * c.hd
			resid := p.input(r, dim, rows, 1)
			y := p.input(r, dim, rows, 5)
			wd := p.weight(vectorWeight(r, dim))
			p.g.RMSNormAdd(resid.g, y.g, wd.g, 1e-6)
			p.ref.RMSNormAdd(resid.r, y.r, wd.r, 1e-6)
			p.compare(fmt.Sprintf("RMSNormAdd %d rows %d", dim, rows), resid, boundF32)
		}
	}
}

func TestFamilyBiasScaleGeGLU(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(42, uint64(os.Getpid())))
	for _, rows := range []int{1, 3, 33} {
		// Three biases in one launch (q, k, v), then a fourth alone.
		var xs []twoT
		for _, cols := range []int{896, 128, 128, 77} {
			x := p.input(r, cols, rows, 1)
			b := p.weight(ml.WeightData{Name: "test.bias", Type: gguf.F32, Shape: []int64{int64(cols)}, Data: f32Bytes(randomFloats(r, cols))})
			p.g.AddBias(x.g, b.g)
			p.ref.AddBias(x.r, b.r)
			xs = append(xs, x)
		}
		for i, x := range xs {
			p.compare(fmt.Sprintf("AddBias %d rows %d", i, rows), x, boundF32)
		}
		// Scale with and without a softcap.
		for _, c := range []float32{0, 30, 0.5} {
			x := p.input(r, 1000, rows, 4)
			p.g.Scale(x.g, 1.7, c)
			p.ref.Scale(x.r, 1.7, c)
			p.compare(fmt.Sprintf("Scale softcap %v rows %d", c, rows), x, 1e-12)
		}
		// GeGLU, with the RMSNorm before it (fused where the format has
		// staged kernels).
		for _, typ := range []gguf.Type{gguf.F32, gguf.Q8_0, gguf.Q4_K} {
			cols := colsFor(typ)[1]
			x := p.input(r, cols, rows, 1)
			xn := p.tensor(cols, rows)
			nw := p.weight(vectorWeight(r, cols))
			g := p.weight(randomWeight(r, typ, cols, 131))
			u := p.weight(randomWeight(r, typ, cols, 131))
			h := p.tensor(131, rows)
			for _, b := range []ml.Backend{p.g, p.ref} {
				b.RMSNorm(xn.of(b), x.of(b), nw.of(b), 1e-6)
				b.GeGLU(h.of(b), xn.of(b), g.of(b), u.of(b))
			}
			p.compare(fmt.Sprintf("GeGLU %s rows %d", typ, rows), h, 4*boundFor(p.g, typ, rows))
		}
	}
}

func randomFloats(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestFamilyRope: NEOX rope, whole and partial (rope_dim < head_dim), of q
// and k alone (rope_neox) and with the KV store (rope_kv_neox, read back
// through attention).
func TestFamilyRope(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(43, uint64(os.Getpid())))
	for _, c := range []struct{ heads, hd, pairs int }{{4, 16, 8}, {16, 128, 64}, {8, 128, 48}, {4, 96, 16}} {
		rp := &ml.Rope{HeadDim: c.hd, PosScale: 1, Freqs: make([]float64, c.pairs), Neox: true}
		for i := range rp.Freqs {
			rp.Freqs[i] = math.Pow(1e6, -2*float64(i)/float64(2*c.pairs))
		}
		for _, rows := range []int{1, 7} {
			for _, pos := range []int{0, 3000} {
				q := p.input(r, c.heads*c.hd, rows, 1)
				k := p.input(r, c.hd, rows, 1)
				p.g.Begin(ml.Contiguous(pos, rows, false))
				p.ref.Begin(ml.Contiguous(pos, rows, false))
				for _, b := range []ml.Backend{p.g, p.ref} {
					b.Rope(q.of(b), rp)
					b.Rope(k.of(b), rp)
				}
				what := fmt.Sprintf("NEOX rope %d heads × %d (%d pairs) rows %d pos %d", c.heads, c.hd, c.pairs, rows, pos)
				p.compare(what+" q", q, 1e-11)
				p.compare(what+" k", k, 1e-11)
			}
		}
		// Rope then attention: the rope of k is fused with the KV store.
		a := &ml.Attn{NHeads: c.heads, NKVHeads: 1, HeadDim: c.hd, Scale: 1 / math.Sqrt(float64(c.hd))}
		spec := ml.KVSpec{Layers: 1, KVDim: c.hd, Pages: 4}
		gc, err := p.g.NewKVCache(spec)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := p.ref.NewKVCache(spec)
		pos := 0
		for _, n := range []int{9, 1, 1} {
			q := p.input(r, c.heads*c.hd, n, 1)
			k := p.input(r, c.hd, n, 1)
			v := p.input(r, c.hd, n, 1)
			out := p.tensor(c.heads*c.hd, n)
			for _, b := range []ml.Backend{p.g, p.ref} {
				cache := ml.KVCache(gc)
				if b == ml.Backend(p.ref) {
					cache = rc
				}
				b.Begin(ml.Contiguous(pos, n, false))
				b.Rope(q.of(b), rp)
				b.Rope(k.of(b), rp)
				b.Attention(out.of(b), q.of(b), k.of(b), v.of(b), cache, 0, a)
			}
			p.compare(fmt.Sprintf("NEOX rope + attention %d×%d (%d pairs) rows %d at %d", c.heads, c.hd, c.pairs, n, pos), out, 2e-6)
			pos += n
		}
	}
}

// TestFamilyAttention: attention through a sliding window and with a
// softcap (attn_window), at prefill and decode, for windows shorter and
// longer than the sequence, with f16 and f32 caches.
func TestFamilyAttention(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(44, uint64(os.Getpid())))
	defer func() { p.g.KVF32 = false }()
	for _, kv32 := range []bool{false, true} {
		p.g.KVF32 = kv32
		bound := 2e-6
		if kv32 {
			bound = 1e-11
		}
		for _, c := range []struct {
			nh, nkv, hd, window int
			softcap             float64
		}{{8, 2, 32, 16, 0}, {8, 4, 256, 0, 50}, {4, 1, 64, 5, 1.5}, {16, 8, 128, 4096, 0}, {6, 2, 96, 1, 0}} {
			a := &ml.Attn{NHeads: c.nh, NKVHeads: c.nkv, HeadDim: c.hd, Scale: 1 / math.Sqrt(float64(c.hd)), Window: c.window, Softcap: c.softcap}
			kvDim := c.nkv * c.hd
			spec := ml.KVSpec{Layers: 1, KVDim: kvDim, Pages: 8}
			gc, err := p.g.NewKVCache(spec)
			if err != nil {
				t.Fatal(err)
			}
			rc, _ := p.ref.NewKVCache(spec)
			pos := 0
			for _, n := range []int{40, 1, 1, 30, 1} {
				q := p.input(r, c.nh*c.hd, n, 1)
				k := p.input(r, kvDim, n, 1)
				v := p.input(r, kvDim, n, 1)
				out := p.tensor(c.nh*c.hd, n)
				p.g.Begin(ml.Contiguous(pos, n, false))
				p.ref.Begin(ml.Contiguous(pos, n, false))
				p.g.Attention(out.g, q.g, k.g, v.g, gc, 0, a)
				p.ref.Attention(out.r, q.r, k.r, v.r, rc, 0, a)
				p.compare(fmt.Sprintf("windowed attention (kv32 %v) %d/%d×%d window %d softcap %v rows %d at %d", kv32, c.nh, c.nkv, c.hd, c.window, c.softcap, n, pos), out, bound)
				pos += n
			}
		}
	}
}

// familyShapes are small random-weight files of every family, for the
// model tests on the GPU.
var familyShapes = []struct {
	name string
	o    llama.SynthOptions
}{
	{"llama", llama.SynthOptions{Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 512, Vocab: 700, Type: "q4_k_m", WeightStd: 0.1}},
	{"llama-swa", llama.SynthOptions{Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 512, Vocab: 700, Type: "f32", SlidingWindow: 16, WeightStd: 0.1}},
	{"qwen2", llama.SynthOptions{Arch: "qwen2", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 512, Vocab: 700, Type: "q8_0", WeightStd: 0.1}},
	{"qwen3", llama.SynthOptions{Arch: "qwen3", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 128, FFN: 512, Vocab: 700, Type: "q4_k_m", WeightStd: 0.1}},
	{"gemma2", llama.SynthOptions{Arch: "gemma2", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 128, FFN: 512, Vocab: 700, Type: "q8_0", SlidingWindow: 16, AttnSoftcap: 5, FinalSoftcap: 10, WeightStd: 0.05}},
	{"gemma3", llama.SynthOptions{Arch: "gemma3", Dim: 256, Layers: 6, Heads: 4, KVHeads: 1, HeadDim: 128, FFN: 512, Vocab: 700, Type: "q4_k_m", SlidingWindow: 16, RopeBase: 1e6, Tied: true, WeightStd: 0.05}},
	{"phi3", llama.SynthOptions{Arch: "phi3", Dim: 256, Layers: 2, Heads: 4, KVHeads: 4, RopeDim: 32, FFN: 512, Vocab: 700, Type: "f16", WeightStd: 0.1}},
}

// TestFamilyModels: every family's greedy ids on the GPU equal the CPU's
// (teacher-forced on the oracle's, so a near tie of the oracle's top two
// ends nothing), and its logits sit near the oracle's, over a prompt
// longer than the windows and 8 decode steps.
func TestFamilyModels(t *testing.T) {
	g := device(t)
	for _, c := range familyShapes {
		t.Run(c.name, func(t *testing.T) {
			c.o.Context, c.o.Seed = 256, 5
			f := synthModel(t, c.o)
			mg, mr := load(t, f, g), load(t, f, ref.New())
			prompt := make([]int32, 40)
			for i := range prompt {
				prompt[i] = int32(3 + (i*37)%600)
			}
			sg, err := mg.NewState(64, 64, false)
			if err != nil {
				t.Fatal(err)
			}
			sr, _ := mr.NewState(64, 64, false)
			V := mg.Config.VocabSize
			lg, lr := make([]float32, V), make([]float32, V)
			in := prompt
			worst := 0.0
			for step := range 8 {
				if err := mg.Forward(sg, in); err != nil {
					t.Fatal(err)
				}
				if err := mr.Forward(sr, in); err != nil {
					t.Fatal(err)
				}
				g.Read(sg.Logits, lg)
				mr.Backend.Read(sr.Logits, lr)
				e := nmse(lg, lr)
				worst = max(worst, e)
				bg, br, second := argmax2(lg, lr)
				if bg != br && math.Abs(float64(lr[br]-lr[second])) > 0.05 && bg != second {
					t.Errorf("step %d: GPU argmax %d, oracle %d (gap %.3g)", step, bg, br, lr[br]-lr[second])
				}
				in = []int32{int32(br)}
			}
			// f16 KV cache and 16-bit decode activations: the model bounds
			// of model_test.go.
			if worst > 1e-3 {
				t.Errorf("worst logits NMSE against the oracle %.3g > 1e-3", worst)
			}
			t.Logf("%s: worst NMSE against the oracle %.3g", c.name, worst)
		})
	}
}

func argmax2(g, r []float32) (bg, br, second int) {
	for i := range g {
		if g[i] > g[bg] {
			bg = i
		}
		if r[i] > r[br] {
			br = i
		}
	}
	second = -1
	for i := range r {
		if i != br && (second < 0 || r[i] > r[second]) {
			second = i
		}
	}
	return
}

func nmse(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return num / den
}

// familyLaunches is the number of kernel launches of one decode step (one
// sequence, one token, graphs off) of each family's 2-layer file (gemma3:
// 6 layers), with the fusions on. A change here is a fusion turned on or
// off: update the count and say why in the commit.
//
// Per layer, llama: the q/k/v matvec with the RMSNorm fused (1), attn_dec
// with the rope and KV store folded (1), wo+residual (1), gate/up with the
// norm fused (1), down+residual (1) = 5. Qwen2: + add_bias of q, k and v
// (1), and NEOX rope is rope_kv_neox (1) beside attn_dec = 7. Qwen3: no
// bias, the q and k norms (2) = 8. Gemma 2: q/k/v (1), rope_kv_neox (1),
// attn_window (softcap on every layer) (1), wo (1), rmsnorm_seg add (1),
// gate+up with the norm fused (1), gelu_mul (1), down (1), rmsnorm_seg add
// (1) = 9. Gemma 3: Gemma 2's with the q and k norms (2) = 11, its global
// layers taking attn_dec instead of attn_window (the same count). Phi-3:
// llama's with NEOX rope (rope_kv_neox + attn_dec) = 6. Llama with a
// window: rope_kv + attn_window for attn_dec = 6.
// Around the layers: embed (1), the final RMSNorm (1), the output matvec
// (1), argmax (1); Gemma adds the embedding scale (1), Gemma 2 the final
// softcap (1).
var familyLaunches = map[string]int{
	"llama":     4 + 2*5,
	"llama-swa": 4 + 2*6,
	"qwen2":     4 + 2*7,
	"qwen3":     4 + 2*8,
	"gemma2":    4 + 2 + 2*9,
	"gemma3":    4 + 1 + 6*11,
	"phi3":      4 + 2*6,
}

// TestFamilyDecodeLaunches asserts familyLaunches, so that no fusion
// silently turns off (or on).
func TestFamilyDecodeLaunches(t *testing.T) {
	g := device(t)
	g.Graphs = false
	defer func() { g.Graphs = true }()
	for _, c := range familyShapes {
		t.Run(c.name, func(t *testing.T) {
			c.o.Context, c.o.Seed = 256, 6
			m := load(t, synthModel(t, c.o), g)
			s, err := m.NewState(64, 64, false)
			if err != nil {
				t.Fatal(err)
			}
			prompt := []int32{5, 6, 7, 8, 9, 10, 11, 12}
			if err := m.Forward(s, prompt); err != nil {
				t.Fatal(err)
			}
			ids := make([]int32, 1)
			g.Argmax(s.Logits, ids)
			for step := range 3 {
				before := g.Stats.Launches
				if err := m.Forward(s, ids); err != nil {
					t.Fatal(err)
				}
				g.Argmax(s.Logits, ids)
				if err := g.Sync(); err != nil {
					t.Fatal(err)
				}
				n := g.Stats.Launches - before
				if want := familyLaunches[c.name]; n != want {
					t.Errorf("decode step %d: %d launches, want %d", step, n, want)
				}
			}
		})
	}
}
