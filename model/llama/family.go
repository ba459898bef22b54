package llama

import (
	"slices"
	"strconv"
	"strings"

	"greta/gguf"
	"greta/ml"
)

// A family is one general.architecture: the metadata keys it reads beyond
// the common ones, its tensor table (which drives Validate, Load and
// Synthesize alike), and its forward pass. Each lives in its own file
// (llama.go, qwen2.go, ...); adding one is a new file and a line in
// families (docs/MODELS.md).
type family struct {
	// config reads the family's own keys into c, after the common ones.
	config func(c *Config, m *meta) error
	// globals and layer are the tensor table: the model-level tensors and
	// those of every block (names within blk.N.).
	globals, layer []tensorRow
	// forward runs the blocks and the output head over a batch whose
	// rows are set (ForwardBatch checks it first).
	forward func(m *Model, s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch)
	// synth is what Synthesize writes beyond the common keys (nil: none).
	synth func(o *SynthOptions) []gguf.KV
}

// families maps general.architecture to its family: the one place where
// architectures are registered.
var families = map[string]*family{
	"llama":  &llamaFamily,
	"qwen2":  &qwen2Family,
	"qwen3":  &qwen3Family,
	"gemma2": &gemma2Family,
	"gemma3": &gemma3Family,
	"phi3":   &phi3Family,
}

// Architectures lists the supported general.architecture values.
func Architectures() []string {
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// tensorRow is one row of a family's tensor table: a GGUF name, its shape
// in the config's named dimensions (innermost first; see dims), and
// whether a file may leave it out. A fused tensor (Phi-3's attn_qkv)
// names the fields its consecutive blocks of rows fill (parts), each with
// its own row count; Load slices the rows, so the forward pass sees
// separate q, k and v weights.
type tensorRow struct {
	name     string
	shape    string
	optional bool
	parts    []tensorPart
	only     func(c *Config) bool // the row applies only when this holds (nil: always)
}

type tensorPart struct{ name, rows string }

// dims gives the named dimensions of a tensor table's shapes.
func (c *Config) dims() map[string]int64 {
	q, kv := int64(c.QDim()), int64(c.KVDim())
	return map[string]int64{
		"dim":            int64(c.Dim),
		"vocab":          int64(c.VocabSize),
		"hidden_dim":     int64(c.HiddenDim),
		"2·hidden_dim":   2 * int64(c.HiddenDim),
		"head_dim":       int64(c.HeadDim),
		"q_dim":          q,
		"kv_dim":         kv,
		"q_dim+2·kv_dim": q + 2*kv,
		"rope_dim/2":     int64(c.RopeDim / 2),
	}
}

// TensorSpec is one tensor the model's family reads, with the shape the
// config implies (innermost first).
type TensorSpec struct {
	Name     string
	Shape    []int64
	Optional bool
	Why      string // how the shape follows from the config, for error messages

	parts []partSpec // a fused tensor's blocks of rows
	layer int        // its block, or −1
}

type partSpec struct {
	field string // the GGUF name (within blk.N.) of the field it fills
	rows  int64
}

// TensorSpecs lists every tensor of the config's family with its shapes.
func (c *Config) TensorSpecs() []TensorSpec {
	fam := families[c.Arch]
	d := c.dims()
	eval := func(shape string) []int64 {
		var out []int64
		for _, n := range strings.Split(shape, ", ") {
			v, ok := d[n]
			if !ok {
				panic("llama: unknown dimension " + strconv.Quote(n) + " in a tensor table")
			}
			out = append(out, v)
		}
		return out
	}
	spec := func(r tensorRow, prefix string, layer int) TensorSpec {
		s := TensorSpec{Name: prefix + r.name, Shape: eval(r.shape), Optional: r.optional, Why: r.shape, layer: layer}
		for _, p := range r.parts {
			s.parts = append(s.parts, partSpec{field: p.name, rows: d[p.rows]})
		}
		return s
	}
	var specs []TensorSpec
	for _, r := range fam.globals {
		specs = append(specs, spec(r, "", -1))
	}
	for i := range c.NLayers {
		for _, r := range fam.layer {
			if r.only != nil && !r.only(c) {
				continue
			}
			specs = append(specs, spec(r, "blk."+strconv.Itoa(i)+".", i))
		}
	}
	return specs
}

// The tensor table rows every family shares.
var (
	rowTokEmbd    = tensorRow{name: "token_embd.weight", shape: "dim, vocab"}
	rowOutputNorm = tensorRow{name: "output_norm.weight", shape: "dim"}
	rowOutput     = tensorRow{name: "output.weight", shape: "dim, vocab", optional: true} // absent: tied to token_embd
)

// field returns the Model field that tensor name (with layer's blk.N.
// prefix stripped) fills, or nil.
func (m *Model) field(layer int, name string) *ml.Weight {
	if layer < 0 {
		switch name {
		case "token_embd.weight":
			return &m.TokEmbd
		case "output_norm.weight":
			return &m.OutputNorm
		case "output.weight":
			return &m.Output
		case "output.bias":
			return &m.OutputBias
		}
		return nil
	}
	l := &m.Layers[layer]
	switch name {
	case "attn_norm.weight":
		return &l.AttnNorm
	case "attn_q.weight":
		return &l.Wq
	case "attn_k.weight":
		return &l.Wk
	case "attn_v.weight":
		return &l.Wv
	case "attn_q.bias":
		return &l.Bq
	case "attn_k.bias":
		return &l.Bk
	case "attn_v.bias":
		return &l.Bv
	case "attn_q_norm.weight":
		return &l.QNorm
	case "attn_k_norm.weight":
		return &l.KNorm
	case "attn_output.weight":
		return &l.Wo
	case "post_attention_norm.weight":
		return &l.PostAttnNorm
	case "ffn_norm.weight":
		return &l.FFNNorm
	case "ffn_gate.weight":
		return &l.Gate
	case "ffn_up.weight":
		return &l.Up
	case "ffn_down.weight":
		return &l.Down
	case "post_ffw_norm.weight":
		return &l.PostFFNNorm
	}
	return nil
}
