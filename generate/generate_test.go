package generate_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"greta/backend/cpu"
	"greta/backend/ref"
	"greta/generate"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

type loaded struct {
	m   *llama.Model
	tok *tokenizer.Tokenizer
}

func load(t testing.TB, path string, b ml.Backend) *loaded {
	t.Helper()
	m, tok := testmodels.Load(t, path, b)
	return &loaded{m, tok}
}

func newCPU(t testing.TB) *cpu.Backend {
	b := cpu.New(0)
	t.Cleanup(func() { b.Close() })
	return b
}

// Greedy decoding reproduces llama.cpp's tokens up to the first step where
// llama.cpp's own top two are within 0.05 (a near-tie either way is right).
// llama.cpp feeds 8-bit activations to quantized matmuls, which moves its
// logits by up to ~0.2 on these models; where it parts from us at a wider
// gap, the float64 oracle decides: our token must be the oracle's, and the
// comparison stops there since the sequences then differ.
func TestGreedyMatchesLlamaCpp(t *testing.T) {
	shared := testmodels.SharedDir(t, 1)
	for _, r := range testmodels.RefRuns(t, shared) {
		t.Run(r.Tag, func(t *testing.T) {
			l := load(t, r.ModelPath, newCPU(t))
			s, err := l.m.NewState(512, 512, false)
			if err != nil {
				t.Fatal(err)
			}
			res, err := generate.Run(l.m, l.tok, s, r.PromptTokens, generate.Options{MaxTokens: len(r.Generated), Sampling: sample.Params{Greedy: true}})
			if err != nil {
				t.Fatal(err)
			}
			matched := 0
			for i, want := range r.Generated {
				top := r.Steps[i].Top
				if i >= len(res.Generated) {
					t.Fatalf("stopped after %d tokens (%s), llama.cpp made %d", len(res.Generated), res.StopReason, len(r.Generated))
				}
				got := res.Generated[i]
				if len(top) > 1 && top[0][1]-top[1][1] < 0.05 {
					if got != want && got != int32(top[1][0]) {
						t.Fatalf("step %d (near-tie): got %d, want %d or %d", i, got, want, int32(top[1][0]))
					}
					t.Logf("near-tie at step %d", i)
					break
				}
				if got != want {
					oracle := oracleNext(t, r.ModelPath, append(append([]int32{}, r.PromptTokens...), r.Generated[:i]...))
					if got != oracle {
						t.Fatalf("step %d: got %d, llama.cpp %d (gap %.3f), oracle %d", i, got, want, top[0][1]-top[1][1], oracle)
					}
					t.Logf("step %d: llama.cpp took %d (gap %.3f), we and the float64 oracle take %d", i, want, top[0][1]-top[1][1], got)
					break
				}
				matched++
			}
			t.Logf("matched %d of %d greedy tokens", matched, len(r.Generated))
		})
	}
}

// oracleNext is the float64 oracle's greedy token after tokens.
func oracleNext(t *testing.T, path string, tokens []int32) int32 {
	l := load(t, path, ref.New())
	s, err := l.m.NewState(len(tokens), len(tokens), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.m.Forward(s, tokens); err != nil {
		t.Fatal(err)
	}
	out := make([]int32, 1)
	l.m.Backend.Argmax(s.Logits, out)
	return out[0]
}

func TestStories260KStory(t *testing.T) {
	shared := testmodels.SharedDir(t, 1)
	var run *testmodels.RefRun
	for _, r := range testmodels.RefRuns(t, shared) {
		if r.Tag == "st-f32-once" {
			run = r
		}
	}
	l := load(t, filepath.Join(shared, "models/stories260K.gguf"), newCPU(t))
	s, _ := l.m.NewState(256, 64, false)
	prompt := l.tok.Encode("Once upon a time", true, true)
	res, err := generate.Run(l.m, l.tok, s, prompt, generate.Options{MaxTokens: 64, Sampling: sample.Params{Greedy: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Generated) < 64 || len(res.Generated) != 64 {
		t.Fatalf("lengths: ours %d, llama.cpp %d", len(res.Generated), len(run.Generated))
	}
	for i := range res.Generated {
		if res.Generated[i] != run.Generated[i] {
			t.Fatalf("token %d: %d vs llama.cpp %d", i, res.Generated[i], run.Generated[i])
		}
	}
	if !strings.HasPrefix(res.Text, ", there was a little girl") {
		t.Errorf("story: %q", res.Text)
	}
}

// tiny returns a small random model and its tokenizer.
func tiny(t testing.TB) *loaded {
	path := testmodels.Synth(t, t.TempDir(), "tiny.gguf", testmodels.Tiny)
	return load(t, path, newCPU(t))
}

func TestSameSeedBitwiseIdentical(t *testing.T) {
	l := tiny(t)
	var outs [2]*generate.Result
	for i := range outs {
		s, _ := l.m.NewState(128, 32, false)
		p := sample.Defaults()
		p.Seed = 1234
		p.Temp = 1.5
		r, err := generate.Run(l.m, l.tok, s, []int32{1, 50, 60, 70}, generate.Options{MaxTokens: 40, Sampling: p})
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = r
	}
	if len(outs[0].Generated) != len(outs[1].Generated) {
		t.Fatalf("lengths differ")
	}
	for i := range outs[0].Generated {
		if outs[0].Generated[i] != outs[1].Generated[i] {
			t.Fatalf("token %d differs", i)
		}
	}
}

func TestContextErrors(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(16, 16, false)
	long := make([]int32, 17)
	_, err := generate.Run(l.m, l.tok, s, long, generate.Options{MaxTokens: 1, Sampling: sample.Params{Greedy: true}})
	if !errors.Is(err, generate.ErrContext) || !strings.Contains(err.Error(), "17 tokens") {
		t.Fatalf("prompt past the context: %v", err)
	}
	s, _ = l.m.NewState(16, 16, false)
	_, err = generate.Run(l.m, l.tok, s, make([]int32, 10), generate.Options{MaxTokens: 10, Sampling: sample.Params{Greedy: true}})
	if !errors.Is(err, generate.ErrContext) {
		t.Fatalf("generation past the context: %v", err)
	}
	s, _ = l.m.NewState(16, 16, false)
	r, err := generate.Run(l.m, l.tok, s, make([]int32, 10), generate.Options{MaxTokens: 10, StopAtContext: true, Sampling: sample.Params{Greedy: true}})
	if err != nil || (r.StopReason != "context" && r.StopReason != "eos") || s.Pos > 16 {
		t.Fatalf("stop at context: %v %+v pos %d", err, r, s.Pos)
	}
}

// The decode step allocates nothing: activations and the KV cache are
// allocated once in NewState.
func TestDecodeStepDoesNotAllocate(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(256, 8, false)
	if err := l.m.Forward(s, []int32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	tok := []int32{5}
	argmax := make([]int32, 1)
	allocs := testing.AllocsPerRun(50, func() {
		if err := l.m.Forward(s, tok); err != nil {
			t.Fatal(err)
		}
		l.m.Backend.Argmax(s.Logits, argmax)
	})
	if allocs != 0 {
		t.Fatalf("decode step allocates %.1f times", allocs)
	}
}

// BenchmarkDecodeStep reports allocs/op of one decode step on a small model.
func BenchmarkDecodeStep(b *testing.B) {
	l := tiny(b)
	s, _ := l.m.NewState(4096, 8, false)
	tok := []int32{5}
	argmax := make([]int32, 1)
	b.ReportAllocs()
	for b.Loop() {
		if s.Pos == s.Context {
			s.Pos = 0
		}
		l.m.Forward(s, tok)
		l.m.Backend.Argmax(s.Logits, argmax)
	}
}
