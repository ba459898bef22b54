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
	layer:   blockRows(nil, nil, nil), // the llama block's own rows, nothing added
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
	b := m.Backend
	b.Embed(s.x, m.TokEmbd, tokens)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections, rope, attention over the
		// cache, output projection added to the residual stream.
		m.attnQKV(s, w, l)
		m.attend(s, cache, l)
		b.MatMulAdd(s.xb2, s.x, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)

		// Feed-forward: rmsnorm, SwiGLU, down projection added to the
		// residual stream.
		m.swiGLU(s, w, l)
		m.trace(l, "x_out", s.x)
	}
	m.head(s, batch)
}
