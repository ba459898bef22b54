package llama

import "greta/ml"

// The qwen3 family (dense Qwen3): llama with an RMSNorm over each head of
// q and of k before the rope, NEOX rope, no biases (llama.cpp's
// llm_build_qwen3). Qwen3's mixture-of-experts files are another
// architecture (qwen3moe), refused as unsupported.
var qwen3Family = family{
	config:  neoxRope,
	globals: []tensorRow{rowTokEmbd, rowOutputNorm, rowOutput},
	layer:   blockRows(rowsQKNorm, nil, nil),
	forward: qwen3Forward,
}

func qwen3Forward(m *Model, s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch) {
	b := m.Backend
	eps := float32(m.Config.NormEps)
	b.Embed(s.x, m.TokEmbd, tokens)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections, per-head RMSNorm of q and
		// k (their weights are head_dim long), NEOX rope, attention,
		// output projection added to the residual.
		m.attnQKV(s, w, l)
		b.RMSNorm(s.q, s.q, w.QNorm, eps)
		b.RMSNorm(s.k, s.k, w.KNorm, eps)
		m.attend(s, cache, l)
		b.MatMulAdd(s.xb2, s.x, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)

		// Feed-forward: rmsnorm, SwiGLU, down projection added.
		m.swiGLU(s, w, l)
		m.trace(l, "x_out", s.x)
	}
	m.head(s, batch)
}
