package llama

import (
	"fmt"
	"regexp"
	"strconv"

	"greta/gguf"
	"greta/quant"
)

// weightType reports whether GRETA computes with weights of type t
// (Q8_K exists only as an activation format).
func weightType(t gguf.Type) bool { return quant.Supported(t) && t != gguf.Q8_K }

// TensorSpec is one tensor the llama architecture reads, with the shape the
// config implies (innermost first).
type TensorSpec struct {
	Name     string
	Shape    []int64
	Optional bool
	Why      string // how the shape follows from the config, for error messages
}

// TensorSpecs lists every tensor of a llama model with the config's shapes.
func (c *Config) TensorSpecs() []TensorSpec {
	d, v, ff := int64(c.Dim), int64(c.VocabSize), int64(c.HiddenDim)
	qd, kvd := int64(c.NHeads*c.HeadDim), int64(c.KVDim())
	specs := []TensorSpec{
		{Name: "token_embd.weight", Shape: []int64{d, v}, Why: "dim, vocab"},
		{Name: "output_norm.weight", Shape: []int64{d}, Why: "dim"},
		{Name: "output.weight", Shape: []int64{d, v}, Optional: true, Why: "dim, vocab"},
		{Name: "rope_freqs.weight", Shape: []int64{int64(c.RopeDim / 2)}, Optional: true, Why: "rope_dim/2"},
	}
	for i := 0; i < c.NLayers; i++ {
		b := "blk." + strconv.Itoa(i) + "."
		specs = append(specs,
			TensorSpec{Name: b + "attn_norm.weight", Shape: []int64{d}, Why: "dim"},
			TensorSpec{Name: b + "attn_q.weight", Shape: []int64{d, qd}, Why: "dim, n_heads·head_dim"},
			TensorSpec{Name: b + "attn_k.weight", Shape: []int64{d, kvd}, Why: "dim, n_kv_heads·head_dim"},
			TensorSpec{Name: b + "attn_v.weight", Shape: []int64{d, kvd}, Why: "dim, n_kv_heads·head_dim"},
			TensorSpec{Name: b + "attn_output.weight", Shape: []int64{qd, d}, Why: "n_heads·head_dim, dim"},
			TensorSpec{Name: b + "ffn_norm.weight", Shape: []int64{d}, Why: "dim"},
			TensorSpec{Name: b + "ffn_gate.weight", Shape: []int64{d, ff}, Why: "dim, hidden_dim"},
			TensorSpec{Name: b + "ffn_up.weight", Shape: []int64{d, ff}, Why: "dim, hidden_dim"},
			TensorSpec{Name: b + "ffn_down.weight", Shape: []int64{ff, d}, Why: "hidden_dim, dim"},
		)
	}
	return specs
}

// ignoredTensor matches tensors that old converters wrote and that carry no
// information the forward pass needs (llama.cpp skips them too).
var ignoredTensor = regexp.MustCompile(`^blk\.\d+\.attn_rot_embd$`)

// Validate checks f against the llama architecture. It returns the config
// (nil if the metadata itself is unusable) and every problem found, each one
// line naming the key or tensor, what was expected and what was found.
// Nothing is allocated from the model's sizes before this passes.
func Validate(f *gguf.File) (*Config, []error) {
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	want := map[string]bool{}
	for _, s := range c.TensorSpecs() {
		want[s.Name] = true
		t, ok := f.Tensor(s.Name)
		if !ok {
			if !s.Optional {
				errs = append(errs, fmt.Errorf("tensor %q is missing (expected shape %v = [%s])", s.Name, s.Shape, s.Why))
			}
			continue
		}
		if !equalShape(t.Shape, s.Shape) {
			errs = append(errs, fmt.Errorf("tensor %q: shape %v, expected %v = [%s]", s.Name, t.Shape, s.Shape, s.Why))
			continue
		}
		if !weightType(t.Type) {
			errs = append(errs, fmt.Errorf("tensor %q: type %s is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)", s.Name, t.Type))
		}
	}
	for _, t := range f.Tensors {
		if !want[t.Name] && !ignoredTensor.MatchString(t.Name) {
			errs = append(errs, fmt.Errorf("tensor %q (%s %v) is not part of the llama architecture; refusing to guess what it does", gguf.Clip(t.Name), t.Type, t.Shape))
		}
	}
	if n, ok, _ := f.Array("tokenizer.ggml.tokens"); ok && n.Len() != c.VocabSize {
		errs = append(errs, fmt.Errorf("tokenizer.ggml.tokens has %d entries, expected vocab_size = %d", n.Len(), c.VocabSize))
	}
	return c, errs
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
