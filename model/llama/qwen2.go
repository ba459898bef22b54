package llama

import "greta/ml"

// The qwen2 family (Qwen2, Qwen2.5): llama with biases on q, k and v, NEOX
// rope, and the output tied to the embeddings in the small sizes
// (llama.cpp's llm_build_qwen2).
var qwen2Family = family{
	config: func(c *Config, m *meta) error {
		c.RopeNeox = true
		return nil
	},
	globals: []tensorRow{
		rowTokEmbd, rowOutputNorm, rowOutput,
		{name: "output.bias", shape: "vocab", optional: true},
	},
	layer: []tensorRow{
		{name: "attn_norm.weight", shape: "dim"},
		{name: "attn_q.weight", shape: "dim, q_dim"},
		{name: "attn_k.weight", shape: "dim, kv_dim"},
		{name: "attn_v.weight", shape: "dim, kv_dim"},
		{name: "attn_q.bias", shape: "q_dim", optional: true},
		{name: "attn_k.bias", shape: "kv_dim", optional: true},
		{name: "attn_v.bias", shape: "kv_dim", optional: true},
		{name: "attn_output.weight", shape: "q_dim, dim"},
		{name: "ffn_norm.weight", shape: "dim"},
		{name: "ffn_gate.weight", shape: "dim, hidden_dim"},
		{name: "ffn_up.weight", shape: "dim, hidden_dim"},
		{name: "ffn_down.weight", shape: "hidden_dim, dim"},
	},
	forward: qwen2Forward,
}

func qwen2Forward(m *Model, s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch) {
	c, b := m.Config, m.Backend
	eps := float32(c.NormEps)
	b.Embed(s.x, m.TokEmbd, tokens)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections plus their biases, NEOX
		// rope, attention, output projection added to the residual.
		b.RMSNorm(s.xb, s.x, w.AttnNorm, eps)
		m.trace(l, "norm_out", s.xb)
		b.MatMul(s.q, s.xb, w.Wq)
		b.MatMul(s.k, s.xb, w.Wk)
		b.MatMul(s.v, s.xb, w.Wv)
		if w.Bq != nil {
			b.AddBias(s.q, w.Bq)
		}
		if w.Bk != nil {
			b.AddBias(s.k, w.Bk)
		}
		if w.Bv != nil {
			b.AddBias(s.v, w.Bv)
		}
		b.Rope(s.q, m.layerRope(l))
		b.Rope(s.k, m.layerRope(l))
		m.trace(l, "q", s.q)
		m.trace(l, "k", s.k)
		m.trace(l, "v", s.v)
		b.Attention(s.att, s.q, s.k, s.v, cache, l, m.layerAttn(l))
		m.trace(l, "kqv_out", s.att)
		b.MatMulAdd(s.xb2, s.x, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)

		// Feed-forward: rmsnorm, SwiGLU, down projection added.
		b.RMSNorm(s.xb, s.x, w.FFNNorm, eps)
		m.trace(l, "ffn_norm", s.xb)
		b.GateUp(s.hb, s.xb, w.Gate, w.Up)
		b.MatMulAdd(s.xb2, s.x, s.hb, w.Down)
		m.trace(l, "mlp_out", s.xb2)
		m.trace(l, "x_out", s.x)
	}
	m.head(s, batch)
}
