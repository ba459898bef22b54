package llama

import (
	"fmt"
	"regexp"

	"greta/gguf"
	"greta/quant"
)

// weightType reports whether GRETA computes with weights of type t
// (Q8_K exists only as an activation format).
func weightType(t gguf.Type) bool { return quant.Supported(t) && t != gguf.Q8_K }

// ignoredTensor matches tensors that old converters wrote and that carry no
// information the forward pass needs (llama.cpp skips them too).
var ignoredTensor = regexp.MustCompile(`^blk\.\d+\.attn_rot_embd$`)

// Validate checks f against its family (general.architecture). It returns the config
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
			errs = append(errs, fmt.Errorf("tensor %q (%s %v) is not part of the %s architecture; refusing to guess what it does", gguf.Clip(t.Name), t.Type, t.Shape, c.Arch))
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
