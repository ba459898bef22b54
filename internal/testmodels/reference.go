package testmodels

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// RefRun is one greedy run of llama.cpp from ../shared/reference/llamacpp,
// with the float64 oracle's logits for its first steps.
type RefRun struct {
	Tag          string
	Model        string  `json:"model"` // file name in models/
	Prompt       string  `json:"prompt"`
	NVocab       int     `json:"n_vocab"`
	PromptTokens []int32 `json:"prompt_tokens"`
	Generated    []int32 `json:"generated"`
	Steps        []struct {
		Top       [][2]float64 `json:"top"` // [id, logit]
		LogSumExp float64      `json:"logsumexp"`
	} `json:"steps"`

	ModelPath string
	F64Rows   [][]float32 // the oracle's logits rows (8 of them)
	LlamaRows [][]float32 // llama.cpp's logits rows
}

// RefRuns loads every reference run under shared.
func RefRuns(t testing.TB, shared string) []*RefRun {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(shared, "reference/llamacpp/*.json"))
	sort.Strings(paths)
	var runs []*RefRun
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		r := &RefRun{Tag: strings.TrimSuffix(filepath.Base(p), ".json")}
		if err := json.Unmarshal(b, r); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		r.ModelPath = filepath.Join(shared, "models", r.Model)
		r.F64Rows = readRows(t, filepath.Join(shared, "reference/f64", r.Tag+".f64ref.bin"), r.NVocab)
		r.LlamaRows = readRows(t, filepath.Join(shared, "reference/llamacpp", r.Tag+".logits.bin"), r.NVocab)
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		t.Skip("no reference runs under " + shared)
	}
	return runs
}

// TeacherTokens is the prompt followed by the first n−1 generated tokens:
// feeding them gives the n logits rows of the reference.
func (r *RefRun) TeacherTokens(n int) []int32 {
	return append(append([]int32{}, r.PromptTokens...), r.Generated[:n-1]...)
}

func readRows(t testing.TB, path string, nVocab int) [][]float32 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := len(b) / 4 / nVocab
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = make([]float32, nVocab)
		for j := range rows[i] {
			rows[i][j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*(i*nVocab+j):]))
		}
	}
	return rows
}

// NMSE is Σ(a−b)² / Σb², the normalized error used everywhere in GRETA.
func NMSE(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	if den == 0 {
		return num
	}
	return num / den
}
