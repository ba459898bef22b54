package llama

import "greta/ml"

// The qwen2 family (Qwen2, Qwen2.5): llama with biases on q, k and v, NEOX
// rope, and the output tied to the embeddings in the small sizes
// (llama.cpp's llm_build_qwen2).
var qwen2Family = family{
	config: neoxRope,
	globals: []tensorRow{
		rowTokEmbd, rowOutputNorm, rowOutput,
		{name: "output.bias", shape: "vocab", optional: true},
	},
	layer: blockRows([]tensorRow{
		{name: "attn_q.bias", shape: "q_dim", optional: true},
		{name: "attn_k.bias", shape: "kv_dim", optional: true},
		{name: "attn_v.bias", shape: "kv_dim", optional: true},
	}, nil, nil),
	forward: qwen2Forward,
}

func qwen2Forward(m *Model, s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch) {
	b := m.Backend
	b.Embed(s.x, m.TokEmbd, tokens)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections plus their biases, NEOX
		// rope, attention, output projection added to the residual.
		m.attnQKV(s, w, l)
		if w.Bq != nil {
			b.AddBias(s.q, w.Bq)
		}
		if w.Bk != nil {
			b.AddBias(s.k, w.Bk)
		}
		if w.Bv != nil {
			b.AddBias(s.v, w.Bv)
		}
		m.attend(s, cache, l)
		b.MatMulAdd(s.xb2, s.x, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)

		// Feed-forward: rmsnorm, SwiGLU, down projection added.
		m.swiGLU(s, w, l)
		m.trace(l, "x_out", s.x)
	}
	m.head(s, batch)
}
