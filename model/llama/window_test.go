package llama_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"greta/backend/cpu"
	"greta/backend/ref"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
)

// windowCases are files whose attention runs through a sliding window of
// 16 positions: a llama with llama.attention.sliding_window (Mistral
// v0.1), Gemma 2 (even layers) and Gemma 3 (five layers of six).
var windowCases = []struct {
	name string
	o    llama.SynthOptions
}{
	{"llama", llama.SynthOptions{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128, Context: 256, Vocab: 600, WeightStd: 0.3, Type: "f32", Seed: 21, SlidingWindow: 16}},
	{"gemma2", llama.SynthOptions{Arch: "gemma2", Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, FFN: 128, Context: 256, Vocab: 600, WeightStd: 0.1, Type: "f32", Seed: 22, SlidingWindow: 16, AttnSoftcap: 1.5, FinalSoftcap: 4}},
	{"gemma3", llama.SynthOptions{Arch: "gemma3", Dim: 64, Layers: 6, Heads: 4, KVHeads: 2, FFN: 128, Context: 256, Vocab: 600, WeightStd: 0.1, Type: "f32", Seed: 23, SlidingWindow: 16}},
}

// decodeLogits runs tokens through Forward in chunks of chunk tokens and
// returns the logits of every row.
func decodeLogits(t *testing.T, m *llama.Model, tokens []int32, chunk int) [][]float32 {
	t.Helper()
	s, err := m.NewState(len(tokens), chunk, true)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	var rows [][]float32
	for i := 0; i < len(tokens); i += chunk {
		in := tokens[i:min(i+chunk, len(tokens))]
		if err := m.Forward(s, in); err != nil {
			t.Fatal(err)
		}
		all := make([]float32, len(in)*V)
		m.Backend.Read(s.Logits, all)
		for r := range in {
			rows = append(rows, all[r*V:(r+1)*V])
		}
	}
	return rows
}

func equalRows(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestSlidingWindow runs prompts three times longer than the window: the
// oracle's rows are the same at prefill, decode (one token a call) and in
// chunks of 7, and equal those of the same weights without a window for
// the first 16 positions only (the window is honoured, from the first
// position past it); the CPU's rows, at prefill, decode and in chunks of
// 7 (which start inside and outside the window), sit within 1e-5 of them,
// and its chunked prefill gives the bits of its prefill at once.
func TestSlidingWindow(t *testing.T) {
	for _, c := range windowCases {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(c.o.Seed)))
			tokens := make([]int32, 48)
			for i := range tokens {
				tokens[i] = int32(3 + r.IntN(500))
			}
			oracle := synthLoad(t, c.o, ref.New())
			want := decodeLogits(t, oracle, tokens, len(tokens))
			for _, chunk := range []int{1, 7} {
				for i, row := range decodeLogits(t, oracle, tokens, chunk) {
					if !equalRows(row, want[i]) {
						t.Fatalf("oracle, chunks of %d: row %d differs from the prefill's (NMSE %.3g)", chunk, i, testmodels.NMSE(row, want[i]))
					}
				}
			}
			full := c.o
			full.SlidingWindow = 0
			if c.name == "gemma2" {
				full.SlidingWindow = 4096 // Gemma 2's default when the key is absent
			}
			noWindow := decodeLogits(t, synthLoad(t, full, ref.New()), tokens, len(tokens))
			for i := range tokens {
				same := equalRows(noWindow[i], want[i])
				if i < 16 && !same {
					t.Fatalf("row %d (inside the window) differs from the model without a window", i)
				}
				if i >= 16 && same {
					t.Fatalf("row %d (past the window) equals the model without a window: the window is not applied", i)
				}
			}
			for _, act := range []cpu.Activations{cpu.ActF32, cpu.ActQ8} {
				b := newCPU(t, act)
				m := synthLoad(t, c.o, b)
				prefill := decodeLogits(t, m, tokens, len(tokens))
				for _, chunk := range []int{len(tokens), 1, 7} {
					got := prefill
					if chunk != len(tokens) {
						got = decodeLogits(t, m, tokens, chunk)
					}
					worst := 0.0
					for i := range got {
						worst = max(worst, testmodels.NMSE(got[i], want[i]))
						if chunk == 7 && !equalRows(got[i], prefill[i]) {
							t.Fatalf("cpu chunks of 7: row %d differs from the prefill's", i)
						}
					}
					if worst > 1e-5 {
						t.Errorf("cpu (act %v) chunks of %d: worst NMSE %.3g > 1e-5", act, chunk, worst)
					}
				}
			}
		})
	}
}

// TestWindowOp: Attention with a window on the CPU against the oracle on
// random q, k and v, at every query position of a 70-row prompt for
// windows of 1, 5, 16, 17 and 100 positions, with and without a softcap,
// for head sizes on the assembly path (64) and the vector one (32).
func TestWindowOp(t *testing.T) {
	for _, hd := range []int{32, 64} {
		for _, win := range []int{1, 5, 16, 17, 100} {
			for _, cap := range []float64{0, 0.7} {
				a := ml.Attn{NHeads: 8, NKVHeads: 1, HeadDim: hd, Scale: 1 / math.Sqrt(float64(hd)), Window: win, Softcap: cap}
				n := 70
				batch := ml.Contiguous(0, n, true)
				run := func(b ml.Backend) []float32 {
					spec := ml.KVSpec{Layers: 1, KVDim: hd, Pages: (n + 15) / 16}
					cache, err := b.NewKVCache(spec)
					if err != nil {
						t.Fatal(err)
					}
					rr := rand.New(rand.NewPCG(uint64(hd), uint64(win)))
					fill := func(cols int) ml.Tensor { return randomTensor(t, b, rr, cols, n) }
					q, k, v := fill(8*hd), fill(hd), fill(hd)
					dst := b.NewTensor(8*hd, n)
					b.Begin(batch)
					b.Attention(dst, q, k, v, cache, 0, &a)
					out := make([]float32, 8*hd*n)
					b.Read(dst, out)
					return out
				}
				want, got := run(ref.New()), run(newCPU(t, cpu.ActF32))
				if e := testmodels.NMSE(got, want); e > 1e-10 {
					t.Errorf("head %d window %d softcap %v: NMSE %.3g", hd, win, cap, e)
				}
			}
		}
	}
}

// randomTensor makes a tensor of rows × cols values in [−1, 1), through
// Embed from an F32 table (the backends have no other way in).
func randomTensor(t *testing.T, b ml.Backend, r *rand.Rand, cols, rows int) ml.Tensor {
	t.Helper()
	data := make([]byte, 4*cols*rows)
	ids := make([]int32, rows)
	for i := range cols * rows {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(2*r.Float32()-1))
	}
	for i := range ids {
		ids[i] = int32(i)
	}
	w, err := b.LoadWeight(ml.WeightData{Name: "x", Type: gguf.F32, Shape: []int64{int64(cols), int64(rows)}, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	x := b.NewTensor(cols, rows)
	b.Embed(x, w, ids)
	return x
}
