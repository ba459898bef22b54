package llama

import (
	"slices"

	"greta/ml"
)

// The pieces of a block that the families share: their tensor table rows
// and the steps of their forward passes. Each family's file strings them
// together with its own between, so that its forward still reads top to
// bottom as llama2.c's does.

// The rows of a llama block, in the order llama.cpp's converter writes
// them: the attention's pre-norm and q, k and v projections, its output
// projection, and the SwiGLU feed-forward.
var (
	rowsAttnQKV = []tensorRow{
		{name: "attn_norm.weight", shape: "dim"},
		{name: "attn_q.weight", shape: "dim, q_dim"},
		{name: "attn_k.weight", shape: "dim, kv_dim"},
		{name: "attn_v.weight", shape: "dim, kv_dim"},
	}
	rowAttnOut = tensorRow{name: "attn_output.weight", shape: "q_dim, dim"}
	rowsFFN    = []tensorRow{
		{name: "ffn_norm.weight", shape: "dim"},
		{name: "ffn_gate.weight", shape: "dim, hidden_dim"},
		{name: "ffn_up.weight", shape: "dim, hidden_dim"},
		{name: "ffn_down.weight", shape: "hidden_dim, dim"},
	}
	// Qwen3's and Gemma 3's RMSNorms of each head of q and of k.
	rowsQKNorm = []tensorRow{
		{name: "attn_q_norm.weight", shape: "head_dim"},
		{name: "attn_k_norm.weight", shape: "head_dim"},
	}
)

// blockRows is the llama block's table with a family's own rows where its
// files put them: afterQKV after the v projection (Qwen2's biases, the
// per-head norms), afterAttn after the output projection and afterFFN
// after the down projection (Gemma's norms). Synthesize writes the
// tensors in this order.
func blockRows(afterQKV, afterAttn, afterFFN []tensorRow) []tensorRow {
	return slices.Concat(rowsAttnQKV, afterQKV, []tensorRow{rowAttnOut}, afterAttn, rowsFFN, afterFFN)
}

// neoxRope is the config of a family whose own keys are none and whose
// rope is NEOX-mode (qwen2, qwen3).
func neoxRope(c *Config, m *meta) error {
	c.RopeNeox = true
	return nil
}

// attnQKV starts layer l's attention: the rmsnorm of the residual stream
// into s.xb and the q, k and v projections of it.
func (m *Model) attnQKV(s *State, w *Layer, l int) {
	b := m.Backend
	b.RMSNorm(s.xb, s.x, w.AttnNorm, float32(m.Config.NormEps))
	m.trace(l, "norm_out", s.xb)
	b.MatMul(s.q, s.xb, w.Wq)
	b.MatMul(s.k, s.xb, w.Wk)
	b.MatMul(s.v, s.xb, w.Wv)
}

// attend ropes q and k with layer l's rope, stores k and v in the cache
// and attends over it (through the layer's window, if any) into s.att.
func (m *Model) attend(s *State, cache ml.KVCache, l int) {
	b := m.Backend
	b.Rope(s.q, m.layerRope(l))
	b.Rope(s.k, m.layerRope(l))
	m.trace(l, "q", s.q)
	m.trace(l, "k", s.k)
	m.trace(l, "v", s.v)
	b.Attention(s.att, s.q, s.k, s.v, cache, l, m.layerAttn(l))
	m.trace(l, "kqv_out", s.att)
}

// swiGLU is the llama feed-forward of layer l: rmsnorm, SwiGLU, down
// projection added to the residual stream.
func (m *Model) swiGLU(s *State, w *Layer, l int) {
	b := m.Backend
	b.RMSNorm(s.xb, s.x, w.FFNNorm, float32(m.Config.NormEps))
	m.trace(l, "ffn_norm", s.xb)
	b.GateUp(s.hb, s.xb, w.Gate, w.Up)
	b.MatMulAdd(s.xb2, s.x, s.hb, w.Down)
	m.trace(l, "mlp_out", s.xb2)
}
