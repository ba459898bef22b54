package cpu

import (
	"testing"

	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
)

// TestAutoLogitsAgainstOracle measures what ActAuto, the default, costs in
// accuracy on the shared reference models, against the float64 oracle's
// logits (NMSE per row):
//
//   - decode: every token fed alone (15-bit activations into K-quant
//     matrices, float32 elsewhere): bound 1e-6, an order of magnitude
//     under the 1e-5 that float32 activations must meet;
//   - prefill: the prompt and teacher tokens in one batch (8-bit
//     activations, as llama.cpp): bound 3e-3, llama.cpp's level.
//
// -v logs the worst row of each.
func TestAutoLogitsAgainstOracle(t *testing.T) {
	shared := testmodels.SharedDir(t, 2)
	for _, r := range testmodels.RefRuns(t, shared) {
		t.Run(r.Tag, func(t *testing.T) {
			f, err := gguf.Open(r.ModelPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := New(2)
			defer b.Close()
			m, err := llama.Load(f, b, llama.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			n := len(r.F64Rows)
			toks := r.TeacherTokens(n)
			V := m.Config.VocabSize
			logits := make([]float32, V)

			// Decode: one token at a time.
			s, err := m.NewState(len(toks), 1, false)
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for i, tok := range toks {
				if err := m.Forward(s, []int32{tok}); err != nil {
					t.Fatal(err)
				}
				row := i - (len(toks) - n)
				if row < 0 {
					continue
				}
				b.Read(s.Logits, logits)
				e := testmodels.NMSE(logits, r.F64Rows[row])
				worst = max(worst, e)
				if e > 1e-6 {
					t.Errorf("decode row %d: NMSE %.3g > 1e-6", row, e)
				}
			}
			t.Logf("decode (one token per step): worst NMSE over %d rows %.3g", n, worst)

			// Prefill: all tokens in one batch.
			s, err = m.NewState(len(toks), len(toks), true)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Forward(s, toks); err != nil {
				t.Fatal(err)
			}
			all := make([]float32, len(toks)*V)
			b.Read(s.Logits, all)
			worst = 0
			for i := range n {
				k := len(toks) - n + i
				e := testmodels.NMSE(all[k*V:(k+1)*V], r.F64Rows[i])
				worst = max(worst, e)
				if e > 3e-3 {
					t.Errorf("prefill row %d: NMSE %.3g > 3e-3", i, e)
				}
			}
			t.Logf("prefill (one batch of %d): worst NMSE over %d rows %.3g (llama.cpp vs oracle row 0: %.3g)", len(toks), n, worst, testmodels.NMSE(r.LlamaRows[0], r.F64Rows[0]))
		})
	}
}
