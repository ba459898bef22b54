package llama

import (
	"fmt"
	"math"
)

// The gemma3 family (Gemma 3, text): Gemma 2's block without the
// attention softcap, with a per-head RMSNorm of q and k, five windowed
// layers to one global (layer l is global when l%6 == 5), and two rope
// bases: {arch}.rope.freq_base for the global layers (with the file's
// rope scaling) and {arch}.rope.freq_base_swa (default 10000, unscaled)
// for the windowed ones (llama.cpp's llm_build_gemma3). A file without
// {arch}.attention.sliding_window attends globally everywhere. The forward
// pass is gemmaForward (gemma2.go).
var gemma3Family = family{
	config:  gemma3Config,
	globals: []tensorRow{rowTokEmbd, rowOutputNorm, rowOutput},
	layer: []tensorRow{
		{name: "attn_norm.weight", shape: "dim"},
		{name: "attn_q.weight", shape: "dim, q_dim"},
		{name: "attn_k.weight", shape: "dim, kv_dim"},
		{name: "attn_v.weight", shape: "dim, kv_dim"},
		{name: "attn_q_norm.weight", shape: "head_dim"},
		{name: "attn_k_norm.weight", shape: "head_dim"},
		{name: "attn_output.weight", shape: "q_dim, dim"},
		{name: "post_attention_norm.weight", shape: "dim"},
		{name: "ffn_norm.weight", shape: "dim"},
		{name: "ffn_gate.weight", shape: "dim, hidden_dim"},
		{name: "ffn_up.weight", shape: "dim, hidden_dim"},
		{name: "ffn_down.weight", shape: "hidden_dim, dim"},
		{name: "post_ffw_norm.weight", shape: "dim"},
	},
	forward: gemmaForward,
}

func gemma3Config(c *Config, m *meta) error {
	c.RopeNeox = true
	c.EmbedScale = math.Sqrt(float64(c.Dim))
	var err error
	if c.SlidingWindow, err = m.window(); err != nil {
		return err
	}
	if c.SlidingWindow > 0 {
		if c.SWALayers, err = m.swaPattern(c.NLayers, 6); err != nil {
			return err
		}
		if c.RopeFreqBaseSWA, _, err = m.float("rope.freq_base_swa", 10000); err != nil {
			return err
		}
		if c.RopeFreqBaseSWA <= 1 {
			return fmt.Errorf("metadata %q = %v, expected > 1", m.key("rope.freq_base_swa"), c.RopeFreqBaseSWA)
		}
	}
	if c.FinalSoftcap, err = m.positive("final_logit_softcapping"); err != nil {
		return err
	}
	c.AttnScale = gemmaQueryScale(c, 62)
	return nil
}
