package cpu

import (
	"path/filepath"
	"testing"

	"greta/backend/ref"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
	"greta/trace"
)

// A bug planted in layer 2 (query heads read the wrong KV head) must be
// named by trace diff against the oracle: layer 2, attn_out, with the
// reports' list of points.
func TestPlantedBugIsBisected(t *testing.T) {
	dir := t.TempDir()
	o := testmodels.Tiny
	o.Layers = 4
	path := testmodels.Synth(t, dir, "m.gguf", o)
	points, _ := trace.ParsePoints("x,norm_out,q,k,v,attn_out,ffn_norm,mlp_out,x_out")
	run := func(b ml.Backend, name string) *trace.Trace {
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		m, err := llama.Load(f, b, llama.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, name+".jsonl")
		m.Trace, err = trace.NewRecorder(trace.Options{Path: out, Points: points, Values: -1}, b, trace.Header{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := m.NewState(32, 32, false)
		if err := m.Forward(s, []int32{1, 20, 30, 40, 50}); err != nil {
			t.Fatal(err)
		}
		if err := m.Forward(s, []int32{60}); err != nil {
			t.Fatal(err)
		}
		m.Trace.Close()
		tr, err := trace.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	oracle := run(ref.New(), "ref")
	b := New(0)
	b.Pool().Act = ActF32
	defer b.Close()
	plantedBugLayer = 2
	defer func() { plantedBugLayer = -1 }()
	buggy := run(b, "cpu")
	rep := trace.Diff(buggy, oracle, 1e-4)
	if rep.First == nil {
		t.Fatal("no divergence found")
	}
	if rep.First.Step != 0 || rep.First.Layer != 2 || rep.First.Point != "attn_out" {
		t.Fatalf("%s; want step 0, layer 2, attn_out", rep.FirstLine())
	}
	t.Log(rep.FirstLine())
}
