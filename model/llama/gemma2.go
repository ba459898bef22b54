package llama

import (
	"fmt"
	"math"

	"greta/ml"
)

// The gemma2 family (Gemma 2): embeddings scaled by √dim, NEOX rope,
// attention scores and final logits softcapped, a sliding window on
// alternate layers (the even ones), norms after the attention and the
// feed-forward as well as before, and a GELU-gated feed-forward
// (llama.cpp's llm_build_gemma2_iswa). The output is always the embedding
// matrix. Gemma's converter stores every norm weight as 1 + w, so the
// norms here are plain RMSNorms.
var gemma2Family = family{
	config:  gemma2Config,
	globals: []tensorRow{rowTokEmbd, rowOutputNorm},
	layer:   blockRows(nil, rowsPostAttnNorm, rowsPostFFNNorm),
	forward: gemmaForward,
}

// Gemma's norms after the attention and after the feed-forward.
var (
	rowsPostAttnNorm = []tensorRow{{name: "post_attention_norm.weight", shape: "dim"}}
	rowsPostFFNNorm  = []tensorRow{{name: "post_ffw_norm.weight", shape: "dim"}}
)

// gemmaConfig reads what Gemma 2 and Gemma 3 share: NEOX rope, the
// embeddings scaled by √dim, and {arch}.attention.sliding_window.
func gemmaConfig(c *Config, m *meta) error {
	c.RopeNeox = true
	c.EmbedScale = math.Sqrt(float64(c.Dim))
	var err error
	c.SlidingWindow, err = m.window()
	return err
}

func gemma2Config(c *Config, m *meta) error {
	err := gemmaConfig(c, m)
	if err != nil {
		return err
	}
	if c.SlidingWindow == 0 {
		c.SlidingWindow = 4096 // Gemma 2's, as llama.cpp assumes
	}
	if c.SWALayers, err = m.swaPattern(c.NLayers, 2); err != nil {
		return err
	}
	if c.RopeFreqBaseSWA, _, err = m.float("rope.freq_base_swa", 0); err != nil {
		return err
	}
	c.RopeSWAScaled = true
	// The softcaps: llama.cpp applies both, with these defaults, whether
	// the keys are there or not.
	if c.AttnSoftcap, err = m.positive("attn_logit_softcapping"); err != nil {
		return err
	} else if c.AttnSoftcap == 0 {
		c.AttnSoftcap = 50
	}
	if c.FinalSoftcap, err = m.positive("final_logit_softcapping"); err != nil {
		return err
	} else if c.FinalSoftcap == 0 {
		c.FinalSoftcap = 30
	}
	c.AttnScale = gemmaQueryScale(c, 46)
	return nil
}

// gemmaQueryScale is the scale of Gemma's attention scores, which the
// file does not hold: 1/sqrt(head_dim), except in the 27B models (46
// layers for Gemma 2, 62 for Gemma 3), whose query_pre_attn_scalar is
// dim/n_heads (llama.cpp decides by the layer count too).
func gemmaQueryScale(c *Config, layers27B int) float64 {
	if c.NLayers == layers27B {
		return 1 / math.Sqrt(float64(c.Dim/c.NHeads))
	}
	return 1 / math.Sqrt(float64(c.HeadDim))
}

// swaPattern reads {arch}.attention.sliding_window_pattern: which layers
// use the window. It is an array of booleans, one a layer, or a period n:
// layer l is windowed unless l%n == n−1 (def when absent; n = 0 windows
// every layer, n = 1 none), as llama.cpp's set_swa_pattern.
func (m *meta) swaPattern(layers, def int) ([]bool, error) {
	key := m.key("attention.sliding_window_pattern")
	n := def
	if a, ok, err := m.f.Array(key); err != nil {
		return nil, err
	} else if ok {
		if a.Len() != layers {
			return nil, fmt.Errorf("metadata %q has %d entries, expected block_count = %d", key, a.Len(), layers)
		}
		bs, ok := a.Data.([]bool)
		if !ok {
			return nil, fmt.Errorf("metadata %q is an array of %v, expected booleans", key, a.Type)
		}
		return append([]bool(nil), bs...), nil
	} else if v, ok, err := m.f.Int(key); err != nil {
		return nil, err
	} else if ok {
		if v < 0 || v > int64(layers)+1 {
			return nil, fmt.Errorf("metadata %q = %d, expected 0..%d", key, v, layers+1)
		}
		n = int(v)
	}
	swa := make([]bool, layers)
	for l := range swa {
		swa[l] = n == 0 || l%n < n-1
	}
	return swa, nil
}

// gemmaForward is the Gemma 2 and Gemma 3 block (Gemma 3 adds the
// per-head norms of q and k, present only there).
func gemmaForward(m *Model, s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch) {
	c, b := m.Config, m.Backend
	eps := float32(c.NormEps)
	b.Embed(s.x, m.TokEmbd, tokens)
	b.Scale(s.x, float32(c.EmbedScale), 0)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections, (Gemma 3) per-head
		// RMSNorm of q and k, NEOX rope (the windowed layers' own in Gemma
		// 3), attention through the window on the windowed layers with
		// softcapped scores (Gemma 2), output projection, rmsnorm, added
		// to the residual.
		m.attnQKV(s, w, l)
		if w.QNorm != nil {
			b.RMSNorm(s.q, s.q, w.QNorm, eps)
			b.RMSNorm(s.k, s.k, w.KNorm, eps)
		}
		m.attend(s, cache, l)
		b.MatMul(s.xb2, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)
		b.RMSNormAdd(s.x, s.xb2, w.PostAttnNorm, eps)

		// Feed-forward: rmsnorm, GELU-gated, down projection, rmsnorm,
		// added to the residual.
		b.RMSNorm(s.xb, s.x, w.FFNNorm, eps)
		m.trace(l, "ffn_norm", s.xb)
		b.GeGLU(s.hb, s.xb, w.Gate, w.Up)
		b.MatMul(s.xb2, s.hb, w.Down)
		m.trace(l, "mlp_out", s.xb2)
		b.RMSNormAdd(s.x, s.xb2, w.PostFFNNorm, eps)
		m.trace(l, "x_out", s.x)
	}
	m.head(s, batch)
}
