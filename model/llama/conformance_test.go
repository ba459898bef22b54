package llama_test

import (
	"os"
	"testing"

	"greta/backend/cpu"
	"greta/backend/ref"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
)

// backends lists every backend the conformance tests run on, with the
// NMSE bound each must meet against the float64 oracle's logits.
type backendCase struct {
	name  string
	new   func(t *testing.T) ml.Backend
	bound float64
}

var backends = []backendCase{
	// The oracle against the stored float64 rows: only summation order and
	// the float32 storage of the rows differ.
	{"ref", func(t *testing.T) ml.Backend { return ref.New() }, 1e-9},
	// float32 activations throughout: rounding of float32 sums only.
	{"cpu-f32", func(t *testing.T) ml.Backend { return newCPU(t, cpu.ActF32) }, 1e-5},
	// 8-bit activations into quantized matmuls, as llama.cpp does; its own
	// logits sit at NMSE up to 2.3e-3 from the oracle.
	{"cpu-q8", func(t *testing.T) ml.Backend { return newCPU(t, cpu.ActQ8) }, 3e-3},
}

func newCPU(t *testing.T, act cpu.Activations) ml.Backend {
	b := cpu.New(0)
	b.Pool().Act = act
	t.Cleanup(func() { b.Close() })
	return b
}

// teacherLogits runs tokens through the model in one prefill and returns
// the logits of the last n positions.
func teacherLogits(t *testing.T, b ml.Backend, path string, tokens []int32, n int) [][]float32 {
	t.Helper()
	m, _ := testmodels.Load(t, path, b)
	s, err := m.NewState(len(tokens), len(tokens), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Forward(s, tokens); err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	all := make([]float32, len(tokens)*V)
	b.Read(s.Logits, all)
	rows := make([][]float32, n)
	for i := range rows {
		r := len(tokens) - n + i
		rows[i] = all[r*V : (r+1)*V]
	}
	return rows
}

func TestTeacherForcedLogitsAgainstOracle(t *testing.T) {
	shared := testmodels.SharedDir(t, 2)
	runs := testmodels.RefRuns(t, shared)
	for _, bc := range backends {
		for _, r := range runs {
			t.Run(bc.name+"/"+r.Tag, func(t *testing.T) {
				if _, err := os.Stat(r.ModelPath); err != nil {
					t.Skipf("%s is absent", r.ModelPath) // a partial copy of ../shared (the device runs)
				}
				n := len(r.F64Rows)
				rows := teacherLogits(t, bc.new(t), r.ModelPath, r.TeacherTokens(n), n)
				worst := 0.0
				for i := range rows {
					e := testmodels.NMSE(rows[i], r.F64Rows[i])
					worst = max(worst, e)
					if e > bc.bound {
						t.Errorf("row %d: NMSE %.3g > %.0g", i, e, bc.bound)
					}
				}
				t.Logf("worst NMSE over %d rows: %.3g (llama.cpp vs oracle row 0: %.3g)", n, worst, testmodels.NMSE(r.LlamaRows[0], r.F64Rows[0]))
			})
		}
	}
}

// INT8 mode requantizes the F32 matrices of stories260K to Q8_0 at load.
// Q8_0 keeps 8 bits per weight with a scale per 32: NMSE of the weights
// ≈ 1e-5, and of the logits a little more after 5 layers.
func TestInt8Mode(t *testing.T) {
	shared := testmodels.SharedDir(t, 2)
	var run *testmodels.RefRun
	for _, r := range testmodels.RefRuns(t, shared) {
		if r.Tag == "st-f32-once" {
			run = r
		}
	}
	f, err := gguf.Open(run.ModelPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := newCPU(t, cpu.ActF32)
	m, err := llama.Load(f, b, llama.LoadOptions{Int8: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.Layers[0].Wq.Type() != gguf.Q8_0 || m.Layers[0].AttnNorm.Type() != gguf.F32 {
		t.Fatalf("INT8 mode: wq is %s, attn_norm %s", m.Layers[0].Wq.Type(), m.Layers[0].AttnNorm.Type())
	}
	tokens := run.TeacherTokens(len(run.F64Rows))
	s, _ := m.NewState(len(tokens), len(tokens), true)
	if err := m.Forward(s, tokens); err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	all := make([]float32, len(tokens)*V)
	b.Read(s.Logits, all)
	worst := 0.0
	for i := range run.F64Rows {
		r := len(tokens) - len(run.F64Rows) + i
		worst = max(worst, testmodels.NMSE(all[r*V:(r+1)*V], run.F64Rows[i]))
	}
	t.Logf("INT8 mode logits: worst NMSE %.2e", worst)
	if worst > 1e-3 {
		t.Fatalf("INT8 mode NMSE %.2e > 1e-3", worst)
	}
}
