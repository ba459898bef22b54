package llama

import "fmt"

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
	layer:   blockRows(rowsQKNorm, rowsPostAttnNorm, rowsPostFFNNorm),
	forward: gemmaForward,
}

func gemma3Config(c *Config, m *meta) error {
	err := gemmaConfig(c, m)
	if err != nil {
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
