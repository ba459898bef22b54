package cuda

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"greta/backend/ref"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
	"greta/trace"
)

// Whole models: teacher-forced logits and greedy decoding against the
// float64 oracle, on random-weight models at the shapes of real ones (the
// GQA and head-size cases that crashed the first engine included), and on
// every ../shared reference model.

func synthModel(t *testing.T, o llama.SynthOptions) *gguf.File {
	t.Helper()
	var buf bytes.Buffer
	if err := llama.Synthesize(&buf, o); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func load(t *testing.T, f *gguf.File, b ml.Backend) *llama.Model {
	t.Helper()
	m, err := llama.Load(f, b, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readAll(b ml.Backend, x ml.Tensor) []float32 {
	v := make([]float32, x.Rows()*x.Cols())
	b.Read(x, v)
	return v
}

// checkModel prefills prompt on the GPU and on the oracle with all logits,
// then decodes steps tokens greedily (the oracle's choice fed to both), and
// checks every logits row. It returns the worst NMSE.
func checkModel(t *testing.T, f *gguf.File, prompt []int32, steps int, bound float64) float64 {
	t.Helper()
	g := device(t)
	mg, mr := load(t, f, g), load(t, f, ref.New())
	V := mg.Config.VocabSize
	ctx := len(prompt) + steps + 1
	sg, err := mg.NewState(ctx, len(prompt), true)
	if err != nil {
		t.Fatal(err)
	}
	sr, _ := mr.NewState(ctx, len(prompt), true)
	if err := mg.Forward(sg, prompt); err != nil {
		t.Fatal(err)
	}
	if err := mr.Forward(sr, prompt); err != nil {
		t.Fatal(err)
	}
	lg, lr := readAll(g, sg.Logits), readAll(mr.Backend, sr.Logits)
	worst := 0.0
	for i := range prompt {
		e := testmodels.NMSE(lg[i*V:(i+1)*V], lr[i*V:(i+1)*V])
		worst = max(worst, e)
		if e > bound {
			t.Errorf("prefill row %d: NMSE %.3g > %.0g", i, e, bound)
		}
	}
	before := g.Stats
	tok := []int32{0}
	am := make([]int32, len(prompt))
	mr.Backend.Argmax(sr.Logits, am)
	am[0] = am[len(prompt)-1]
	for s := 0; s < steps; s++ {
		tok[0] = am[0]
		if err := mg.Forward(sg, tok); err != nil {
			t.Fatal(err)
		}
		if err := mr.Forward(sr, tok); err != nil {
			t.Fatal(err)
		}
		gid := make([]int32, 1)
		g.Argmax(sg.Logits, gid)
		lg, lr := readAll(g, sg.Logits)[:V], readAll(mr.Backend, sr.Logits)[:V]
		e := testmodels.NMSE(lg, lr)
		worst = max(worst, e)
		if e > bound {
			t.Errorf("decode step %d: NMSE %.3g > %.0g", s, e, bound)
		}
		mr.Backend.Argmax(sr.Logits, am)
		if gid[0] != am[0] && nearTie(lr, am[0], gid[0]) > 0.05 {
			t.Errorf("decode step %d: greedy id %d, oracle %d", s, gid[0], am[0])
		}
	}
	t.Logf("worst NMSE %.3g over %d prefill rows and %d decode steps; runs %d, graph captures %d, replays %d",
		worst, len(prompt), steps, g.Stats.Runs-before.Runs, g.Stats.Captures-before.Captures, g.Stats.Replays-before.Replays)
	return worst
}

// nearTie is the oracle's logit gap between ids a and b.
func nearTie(logits []float32, a, b int32) float64 {
	d := float64(logits[a]) - float64(logits[b])
	if d < 0 {
		d = -d
	}
	return d
}

func prompt(n, vocab int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32((i*7919 + 13) % vocab)
	}
	return p
}

// TestModelShapes runs random-weight models at real models' head layouts.
// The first engine hard-coded Llama-2-7B's dimensions and crashed on
// TinyLlama's (32 heads, 4 KV heads, head size 64).
func TestModelShapes(t *testing.T) {
	device(t)
	cases := []struct {
		name string
		o    llama.SynthOptions
	}{
		{"tiny-gqa-f32", llama.SynthOptions{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 172, Vocab: 300, Type: "f32"}},
		{"tinyllama-shape-q4_k_m", llama.SynthOptions{Dim: 2048, Layers: 2, Heads: 32, KVHeads: 4, FFN: 5632, Vocab: 512, Type: "q4_k_m"}},
		{"llama2-7b-shape-q4_0", llama.SynthOptions{Dim: 4096, Layers: 1, Heads: 32, KVHeads: 32, FFN: 11008, Vocab: 512, Type: "q4_0"}},
		{"llama3-8b-shape-q4_k_m", llama.SynthOptions{Dim: 4096, Layers: 1, Heads: 32, KVHeads: 8, FFN: 14336, Vocab: 1024, RopeBase: 500000, Type: "q4_k_m", Tied: true}},
		{"q8_0", llama.SynthOptions{Dim: 256, Layers: 2, Heads: 8, KVHeads: 2, FFN: 768, Vocab: 700, Type: "q8_0"}},
		{"q5_k_m", llama.SynthOptions{Dim: 512, Layers: 2, Heads: 8, KVHeads: 8, FFN: 1024, Vocab: 700, Type: "q5_k_m"}},
		{"q6_k", llama.SynthOptions{Dim: 256, Layers: 2, Heads: 2, KVHeads: 1, FFN: 512, Vocab: 700, Type: "q6_k"}},
		{"f16", llama.SynthOptions{Dim: 192, Layers: 2, Heads: 6, KVHeads: 3, FFN: 520, Vocab: 333, Type: "f16"}},
		{"bf16", llama.SynthOptions{Dim: 128, Layers: 2, Heads: 4, KVHeads: 4, FFN: 344, Vocab: 333, Type: "bf16"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.o.Context, c.o.Seed = 512, 11
			f := synthModel(t, c.o)
			checkModel(t, f, prompt(12, c.o.Vocab), 6, 1e-4)
		})
	}
}

// TestGraphReplayAndTracing: decode steps after the second replay a graph;
// a step with a trace (a Read in the middle) runs launch by launch, and is
// as right.
func TestGraphReplayAndTracing(t *testing.T) {
	g := device(t)
	f := synthModel(t, llama.SynthOptions{Dim: 256, Layers: 3, Heads: 8, KVHeads: 2, FFN: 512, Vocab: 500, Context: 256, Type: "q4_k_m", Seed: 3})
	mg, mr := load(t, f, g), load(t, f, ref.New())
	sg, _ := mg.NewState(64, 8, false)
	sr, _ := mr.NewState(64, 8, false)
	p := prompt(5, 500)
	mg.Forward(sg, p)
	mr.Forward(sr, p)
	step := func(tok int32, traced bool) float64 {
		if traced {
			rec, err := trace.NewRecorder(trace.Options{Path: filepath.Join(t.TempDir(), "t.jsonl"), Values: 4, Points: map[string]bool{"q": true, "x_out": true}}, g, trace.Header{})
			if err != nil {
				t.Fatal(err)
			}
			mg.Trace = rec
			defer func() { rec.Close(); mg.Trace = nil }()
		}
		mg.Forward(sg, []int32{tok})
		mr.Forward(sr, []int32{tok})
		id := make([]int32, 1)
		g.Argmax(sg.Logits, id)
		return testmodels.NMSE(readAll(g, sg.Logits), readAll(mr.Backend, sr.Logits))
	}
	for i := 0; i < 4; i++ {
		if e := step(int32(10+i), false); e > 1e-5 {
			t.Errorf("step %d: NMSE %.3g", i, e)
		}
	}
	replays := g.Stats.Replays
	if replays < 1 {
		t.Errorf("no graph replay after 4 decode steps (stats %+v)", g.Stats)
	}
	if e := step(20, true); e > 1e-5 {
		t.Errorf("traced step: NMSE %.3g", e)
	}
	if g.Stats.Replays != replays {
		t.Errorf("a traced step was replayed")
	}
	if e := step(21, false); e > 1e-5 {
		t.Errorf("step after the trace: NMSE %.3g", e)
	}
	if g.Stats.Replays != replays+1 {
		t.Errorf("the step after a trace did not replay (replays %d → %d)", replays, g.Stats.Replays)
	}
	// And with graphs and fusion off, the same results.
	g.Graphs, g.Fuse = false, false
	if e := step(22, false); e > 1e-5 {
		t.Errorf("step without graphs or fusion: NMSE %.3g", e)
	}
}

// TestSharedModels: teacher-forced logits of every ../shared reference run
// (GRETA_SHARED names the folder where it is not ../shared) within NMSE 1e-4
// of the float64 rows.
func TestSharedModels(t *testing.T) {
	g := device(t)
	shared := os.Getenv("GRETA_SHARED")
	if shared == "" {
		shared = testmodels.SharedDir(t, 2)
	}
	runs := testmodels.RefRuns(t, shared)
	for _, r := range runs {
		t.Run(r.Tag, func(t *testing.T) {
			if _, err := os.Stat(r.ModelPath); err != nil {
				t.Skipf("%s is absent", r.ModelPath)
			}
			f, err := gguf.Open(r.ModelPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m := load(t, f, g)
			n := len(r.F64Rows)
			toks := r.TeacherTokens(n)
			s, err := m.NewState(len(toks), len(toks), true)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Forward(s, toks); err != nil {
				t.Fatal(err)
			}
			V := m.Config.VocabSize
			all := readAll(g, s.Logits)
			worst := 0.0
			for i := 0; i < n; i++ {
				row := all[(len(toks)-n+i)*V : (len(toks)-n+i+1)*V]
				e := testmodels.NMSE(row, r.F64Rows[i])
				worst = max(worst, e)
				if e > 1e-4 {
					t.Errorf("row %d: NMSE %.3g > 1e-4", i, e)
				}
			}
			fmt.Printf("SHARED %s: worst NMSE %.3g over %d rows (llama.cpp row 0: %.3g)\n", r.Tag, worst, n, testmodels.NMSE(r.LlamaRows[0], r.F64Rows[0]))
		})
	}
}
