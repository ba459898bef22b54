package llama

import (
	"fmt"

	"greta/ml"
)

// The llama family: Llama 2/3/3.1, TinyLlama, Mistral. Normal-mode rope,
// SwiGLU, untied or tied output. A file with llama.attention.sliding_window
// (Mistral v0.1's 4096) attends through that window in every layer; note
// that llama.cpp ignores the key, and its converter does not write it.
var llamaFamily = family{
	config: llamaConfig,
	globals: []tensorRow{
		rowTokEmbd, rowOutputNorm, rowOutput,
		{name: "rope_freqs.weight", shape: "rope_dim/2", optional: true}, // Llama 3.1's frequency factors
	},
	layer: []tensorRow{
		{name: "attn_norm.weight", shape: "dim"},
		{name: "attn_q.weight", shape: "dim, q_dim"},
		{name: "attn_k.weight", shape: "dim, kv_dim"},
		{name: "attn_v.weight", shape: "dim, kv_dim"},
		{name: "attn_output.weight", shape: "q_dim, dim"},
		{name: "ffn_norm.weight", shape: "dim"},
		{name: "ffn_gate.weight", shape: "dim, hidden_dim"},
		{name: "ffn_up.weight", shape: "dim, hidden_dim"},
		{name: "ffn_down.weight", shape: "hidden_dim, dim"},
	},
	forward: llamaForward,
}

func llamaConfig(c *Config, m *meta) error {
	w, err := m.window()
	c.SlidingWindow = w
	return err
}

// window reads {arch}.attention.sliding_window (0 when absent).
func (m *meta) window() (int, error) {
	if _, ok := m.f.Value(m.key("attention.sliding_window")); !ok {
		return 0, nil
	}
	w, err := m.required("attention.sliding_window", maxContext)
	if err != nil {
		return 0, fmt.Errorf("%w (the sliding window)", err)
	}
	return w, nil
}

// llamaForward is the llama block, as llama2.c's forward() and llama.cpp's
// llm_build_llama: pre-norm attention and SwiGLU feed-forward, each added
// to the residual stream.
func llamaForward(m *Model, s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch) {
	c, b := m.Config, m.Backend
	eps := float32(c.NormEps)
	b.Embed(s.x, m.TokEmbd, tokens)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections, rope, attention over the
		// cache, output projection added to the residual stream.
		b.RMSNorm(s.xb, s.x, w.AttnNorm, eps)
		m.trace(l, "norm_out", s.xb)
		b.MatMul(s.q, s.xb, w.Wq)
		b.MatMul(s.k, s.xb, w.Wk)
		b.MatMul(s.v, s.xb, w.Wv)
		b.Rope(s.q, m.layerRope(l))
		b.Rope(s.k, m.layerRope(l))
		m.trace(l, "q", s.q)
		m.trace(l, "k", s.k)
		m.trace(l, "v", s.v)
		b.Attention(s.att, s.q, s.k, s.v, cache, l, m.layerAttn(l))
		m.trace(l, "kqv_out", s.att)
		b.MatMulAdd(s.xb2, s.x, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)

		// Feed-forward: rmsnorm, SwiGLU, down projection added to the
		// residual stream.
		b.RMSNorm(s.xb, s.x, w.FFNNorm, eps)
		m.trace(l, "ffn_norm", s.xb)
		b.GateUp(s.hb, s.xb, w.Gate, w.Up)
		b.MatMulAdd(s.xb2, s.x, s.hb, w.Down)
		m.trace(l, "mlp_out", s.xb2)
		m.trace(l, "x_out", s.x)
	}
	m.head(s, batch)
}
