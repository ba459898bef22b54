package llama

import "fmt"

// The phi3 family (Phi-3, Phi-3.5, Phi-4-mini): llama with q, k and v in
// one fused tensor (attn_qkv) and gate and up in another (ffn_up, gate
// first), NEOX rope, partial rotary where rope.dimension_count < head_dim
// (llama.cpp's llm_build_phi3). Load slices the fused tensors by rows, so
// the forward pass is llama's. The 128k-context files' LongRoPE
// (rope_factors_long/short.weight) is refused; {arch}.attention.
// sliding_window is ignored, as llama.cpp does (its Phi-3 SWA is off).
var phi3Family = family{
	config:  phi3Config,
	globals: []tensorRow{rowTokEmbd, rowOutputNorm, rowOutput},
	layer: []tensorRow{
		{name: "attn_norm.weight", shape: "dim"},
		{name: "attn_qkv.weight", shape: "dim, q_dim+2·kv_dim", only: fusedQKV,
			parts: []tensorPart{{"attn_q.weight", "q_dim"}, {"attn_k.weight", "kv_dim"}, {"attn_v.weight", "kv_dim"}}},
		{name: "attn_q.weight", shape: "dim, q_dim", only: separateQKV},
		{name: "attn_k.weight", shape: "dim, kv_dim", only: separateQKV},
		{name: "attn_v.weight", shape: "dim, kv_dim", only: separateQKV},
		{name: "attn_output.weight", shape: "q_dim, dim"},
		{name: "ffn_norm.weight", shape: "dim"},
		{name: "ffn_up.weight", shape: "dim, 2·hidden_dim",
			parts: []tensorPart{{"ffn_gate.weight", "hidden_dim"}, {"ffn_up.weight", "hidden_dim"}}},
		{name: "ffn_down.weight", shape: "hidden_dim, dim"},
	},
	forward: llamaForward,
}

func fusedQKV(c *Config) bool    { return c.FusedQKV }
func separateQKV(c *Config) bool { return !c.FusedQKV }

func phi3Config(c *Config, m *meta) error {
	c.RopeNeox = true
	for _, n := range []string{"rope_factors_long.weight", "rope_factors_short.weight"} {
		if _, ok := m.f.Tensor(n); ok {
			return fmt.Errorf("tensor %q: LongRoPE (Phi-3's 128k-context rope scaling) is not supported", n)
		}
	}
	// q, k and v come fused (as the converter writes them) or apart (as
	// llama.cpp also accepts).
	_, c.FusedQKV = m.f.Tensor("blk.0.attn_qkv.weight")
	return nil
}
