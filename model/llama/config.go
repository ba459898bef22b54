// Package llama holds the decoder-only transformers GRETA runs: a config
// from GGUF metadata, the checks that a file describes a model that makes
// sense, its weights and its forward pass. The llama architecture (Llama
// 2/3, TinyLlama, Mistral) is the base; each other family (Qwen2, Qwen3,
// Gemma 2 and 3, Phi-3) is one file holding its tensor table and its
// forward pass (family.go says how they plug in).
package llama

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"greta/gguf"
)

// Config holds every shape and constant of a llama model. Each comes from the
// file's metadata; where a key is optional, the default is llama.cpp's.
type Config struct {
	Arch          string  `json:"-"`
	Dim           int     `json:"dim"`        // {arch}.embedding_length
	HiddenDim     int     `json:"hidden_dim"` // {arch}.feed_forward_length
	NLayers       int     `json:"n_layers"`   // {arch}.block_count
	NHeads        int     `json:"n_heads"`    // {arch}.attention.head_count
	NKVHeads      int     `json:"n_kv_heads"` // {arch}.attention.head_count_kv (default n_heads)
	HeadDim       int     `json:"head_dim"`   // dim / n_heads ({arch}.attention.key_length if present)
	VocabSize     int     `json:"vocab_size"` // {arch}.vocab_size, else the token list's length, else token_embd
	ContextLength int     `json:"context_length"`
	RopeFreqBase  float64 `json:"rope_freq_base"` // {arch}.rope.freq_base (default 10000)
	RopeDim       int     `json:"rope_dim"`       // {arch}.rope.dimension_count (default head_dim)
	NormEps       float64 `json:"norm_eps"`       // {arch}.attention.layer_norm_rms_epsilon

	// Rope scaling ({arch}.rope.scaling.*). RopeScaling is "none", "linear"
	// or "llama3". Linear divides positions by RopeScaleFactor; llama3
	// rescales frequencies as Llama 3.1 does (when the file has no
	// rope_freqs.weight holding those factors already).
	RopeScaling        string  `json:"rope_scaling,omitempty"`
	RopeScaleFactor    float64 `json:"rope_scale_factor,omitempty"`
	RopeOrigContext    int     `json:"rope_orig_context,omitempty"`
	RopeLowFreqFactor  float64 `json:"rope_low_freq_factor,omitempty"`
	RopeHighFreqFactor float64 `json:"rope_high_freq_factor,omitempty"`
	TiedEmbeddings     bool    `json:"tied_embeddings"`      // no output.weight: logits use token_embd.weight
	HasRopeFreqs       bool    `json:"rope_freqs,omitempty"` // rope_freqs.weight present

	// What the families beyond llama add (each family's file says which it
	// reads). Zero values are llama's.
	RopeNeox        bool    `json:"rope_neox,omitempty"`          // NEOX rope: pairs (i, i+rope_dim/2)
	SlidingWindow   int     `json:"sliding_window,omitempty"`     // {arch}.attention.sliding_window: positions a windowed layer sees
	SWALayers       []bool  `json:"swa_layers,omitempty"`         // which layers use the window (nil: all, when SlidingWindow > 0)
	RopeFreqBaseSWA float64 `json:"rope_freq_base_swa,omitempty"` // the windowed layers' rope base ({arch}.rope.freq_base_swa)
	RopeSWAScaled   bool    `json:"rope_swa_scaled,omitempty"`    // the windowed layers' rope takes the rope scaling too (Gemma 2; not Gemma 3)
	AttnScale       float64 `json:"attn_scale,omitempty"`         // score scale (0: 1/sqrt(head_dim))
	AttnSoftcap     float64 `json:"attn_softcap,omitempty"`       // {arch}.attn_logit_softcapping
	FinalSoftcap    float64 `json:"final_softcap,omitempty"`      // {arch}.final_logit_softcapping
	EmbedScale      float64 `json:"embed_scale,omitempty"`        // embeddings × this (0: 1; Gemma: sqrt(dim))
	FusedQKV        bool    `json:"fused_qkv,omitempty"`          // blk.N.attn_qkv.weight instead of attn_q/k/v (Phi-3)
}

// QDim is the width of the queries of one position: n_heads·head_dim,
// which is dim for most models but not for Gemma.
func (c *Config) QDim() int { return c.NHeads * c.HeadDim }

// IsSWA reports whether layer l attends through the sliding window.
func (c *Config) IsSWA(l int) bool {
	return c.SlidingWindow > 0 && (c.SWALayers == nil || c.SWALayers[l])
}

// KVDim is the width of one position's keys (or values): n_kv_heads·head_dim.
func (c *Config) KVDim() int { return c.NKVHeads * c.HeadDim }

// Limits that keep a hostile or broken header from asking for absurd
// allocations. Real models sit far inside them (Llama-3-405B: dim 16384,
// 126 layers, ffn 53248, vocab 128256).
const (
	maxDim     = 1 << 16
	maxLayers  = 1 << 10
	maxHidden  = 1 << 20
	maxVocab   = 1 << 22
	maxContext = 1 << 24
)

// ConfigFromGGUF reads the config from f's metadata. It checks the metadata
// alone; Validate also checks the tensors against it.
func ConfigFromGGUF(f *gguf.File) (*Config, error) {
	arch, ok, err := f.String("general.architecture")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New(`metadata "general.architecture" is missing`)
	}
	fam, ok := families[arch]
	if !ok {
		return nil, fmt.Errorf(`metadata "general.architecture" = %q: unsupported architecture (supported: %s)`, gguf.Clip(arch), strings.Join(Architectures(), ", "))
	}
	c := &Config{Arch: arch}
	m := &meta{f: f, arch: arch}
	k := m.key

	if n, ok, _ := f.Int(k("expert_count")); ok && n > 0 {
		return nil, fmt.Errorf("metadata %q = %d: mixture-of-experts models are not supported", k("expert_count"), n)
	}
	if c.Dim, err = m.required("embedding_length", maxDim); err != nil {
		return nil, err
	}
	if c.HiddenDim, err = m.required("feed_forward_length", maxHidden); err != nil {
		return nil, err
	}
	if c.NLayers, err = m.required("block_count", maxLayers); err != nil {
		return nil, err
	}
	if c.NHeads, err = m.required("attention.head_count", maxDim); err != nil {
		return nil, err
	}
	if c.NKVHeads, err = m.optional("attention.head_count_kv", c.NHeads, maxDim); err != nil {
		return nil, err
	}
	if c.ContextLength, err = m.required("context_length", maxContext); err != nil {
		return nil, err
	}
	// The head size: dim/n_heads unless the file says otherwise (Gemma's
	// heads are wider than dim/n_heads, so its queries are not dim wide).
	if _, ok := f.Value(k("attention.key_length")); ok {
		if c.HeadDim, err = m.required("attention.key_length", maxDim); err != nil {
			return nil, err
		}
	} else if c.Dim%c.NHeads != 0 {
		return nil, fmt.Errorf("metadata %q = %d does not divide %q = %d", k("attention.head_count"), c.NHeads, k("embedding_length"), c.Dim)
	} else {
		c.HeadDim = c.Dim / c.NHeads
	}
	if vl, err := m.optional("attention.value_length", c.HeadDim, maxDim); err != nil {
		return nil, err
	} else if vl != c.HeadDim {
		return nil, fmt.Errorf("metadata %q = %d differs from the key length %d: unsupported", k("attention.value_length"), vl, c.HeadDim)
	}
	if int64(c.NHeads)*int64(c.HeadDim) > maxDim {
		return nil, fmt.Errorf("n_heads·head_dim = %d·%d is over the limit of %d", c.NHeads, c.HeadDim, maxDim)
	}
	if c.NHeads%c.NKVHeads != 0 {
		return nil, fmt.Errorf("metadata %q = %d does not divide %q = %d", k("attention.head_count_kv"), c.NKVHeads, k("attention.head_count"), c.NHeads)
	}
	if c.HeadDim%2 != 0 {
		return nil, fmt.Errorf("head_dim = %d is odd; rope needs pairs", c.HeadDim)
	}
	if c.RopeDim, err = m.optional("rope.dimension_count", c.HeadDim, maxDim); err != nil {
		return nil, err
	}
	if c.RopeDim > c.HeadDim || c.RopeDim%2 != 0 {
		return nil, fmt.Errorf("metadata %q = %d, expected an even number ≤ head_dim = %d", k("rope.dimension_count"), c.RopeDim, c.HeadDim)
	}
	if c.RopeFreqBase, _, err = m.float("rope.freq_base", 10000); err != nil {
		return nil, err
	}
	if c.RopeFreqBase <= 1 {
		return nil, fmt.Errorf("metadata %q = %v, expected > 1", k("rope.freq_base"), c.RopeFreqBase)
	}
	eps, ok, err := m.float("attention.layer_norm_rms_epsilon", 0)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("metadata %q is missing", k("attention.layer_norm_rms_epsilon"))
	}
	if eps <= 0 || eps >= 1 {
		return nil, fmt.Errorf("metadata %q = %v, expected 0 < eps < 1", k("attention.layer_norm_rms_epsilon"), eps)
	}
	c.NormEps = eps
	if err := c.readRopeScaling(f, k, m.floatKey); err != nil {
		return nil, err
	}

	// Vocabulary size: the explicit key, else the token list's length. The
	// embedding's shape is checked against it in Validate.
	if v, ok, err := f.Int(k("vocab_size")); err != nil {
		return nil, err
	} else if ok {
		if v < 1 || v > maxVocab {
			return nil, fmt.Errorf("metadata %q = %d, expected 1..%d", k("vocab_size"), v, maxVocab)
		}
		c.VocabSize = int(v)
	} else if a, ok, err := f.Array("tokenizer.ggml.tokens"); err != nil {
		return nil, err
	} else if ok {
		c.VocabSize = a.Len()
	} else if t, ok := f.Tensor("token_embd.weight"); ok && len(t.Shape) == 2 {
		c.VocabSize = int(t.Shape[1])
	}
	if c.VocabSize < 1 || c.VocabSize > maxVocab {
		return nil, fmt.Errorf("vocabulary size %d, expected 1..%d (from %q or tokenizer.ggml.tokens)", c.VocabSize, maxVocab, k("vocab_size"))
	}
	_, hasOut := f.Tensor("output.weight")
	c.TiedEmbeddings = !hasOut
	_, c.HasRopeFreqs = f.Tensor("rope_freqs.weight")
	if err := fam.config(c, m); err != nil {
		return nil, err
	}
	return c, nil
}

// meta reads one architecture's metadata keys ({arch}.name), checking
// ranges, for ConfigFromGGUF and the families' own keys.
type meta struct {
	f    *gguf.File
	arch string
}

func (m *meta) key(s string) string { return m.arch + "." + s }

// required reads the integer key {arch}.name, in 1..max.
func (m *meta) required(name string, max int64) (int, error) {
	key := m.key(name)
	v, ok, err := m.f.Int(key)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("metadata %q is missing", key)
	}
	if v < 1 || v > max {
		return 0, fmt.Errorf("metadata %q = %d, expected 1..%d", key, v, max)
	}
	return int(v), nil
}

// optional is required with a default for a missing key.
func (m *meta) optional(name string, def int, max int64) (int, error) {
	if _, ok := m.f.Value(m.key(name)); !ok {
		return def, nil
	}
	return m.required(name, max)
}

// float reads the finite number {arch}.name (def when missing).
func (m *meta) float(name string, def float64) (float64, bool, error) {
	return m.floatKey(m.key(name), def)
}

func (m *meta) floatKey(key string, def float64) (float64, bool, error) {
	v, ok, err := m.f.Float(key)
	if err != nil {
		return 0, ok, err
	}
	if !ok {
		return def, false, nil
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, true, fmt.Errorf("metadata %q = %v, expected a finite number", key, v)
	}
	return v, true, nil
}

// positive reads an optional number that must be > 0 when present (0 when
// missing): softcaps, window sizes.
func (m *meta) positive(name string) (float64, error) {
	v, ok, err := m.float(name, 0)
	if err != nil {
		return 0, err
	}
	if ok && v <= 0 {
		return 0, fmt.Errorf("metadata %q = %v, expected > 0", m.key(name), v)
	}
	return v, nil
}

func (c *Config) readRopeScaling(f *gguf.File, k func(string) string, float func(string, float64) (float64, bool, error)) error {
	typ, hasType, err := f.String(k("rope.scaling.type"))
	if err != nil {
		return err
	}
	factor, hasFactor, err := float(k("rope.scaling.factor"), 0)
	if err != nil {
		return err
	}
	if !hasFactor {
		// Older files store the inverse as rope.scale_linear.
		if lin, ok, err := float(k("rope.scale_linear"), 0); err != nil {
			return err
		} else if ok {
			factor, hasFactor = lin, true
			if !hasType {
				typ, hasType = "linear", true
			}
		}
	}
	_, hasLow := f.Value(k("rope.scaling.low_freq_factor"))
	if !hasType {
		typ = "none"
		if hasLow {
			typ = "llama3"
		} else if hasFactor && factor != 1 && factor != 0 {
			typ = "linear" // llama.cpp's default when only a factor is given
		}
	}
	switch strings.ToLower(typ) {
	case "none", "":
		c.RopeScaling = "none"
	case "linear":
		c.RopeScaling = "linear"
		if factor <= 0 {
			return fmt.Errorf("metadata %q = %v, expected > 0 for linear rope scaling", k("rope.scaling.factor"), factor)
		}
		c.RopeScaleFactor = factor
	case "llama3":
		c.RopeScaling = "llama3"
		if factor <= 0 {
			factor = 8
		}
		c.RopeScaleFactor = factor
		orig, err := optionalInt(f, k("rope.scaling.original_context_length"), 8192)
		if err != nil {
			return err
		}
		c.RopeOrigContext = orig
		if c.RopeLowFreqFactor, _, err = float(k("rope.scaling.low_freq_factor"), 1); err != nil {
			return err
		}
		if c.RopeHighFreqFactor, _, err = float(k("rope.scaling.high_freq_factor"), 4); err != nil {
			return err
		}
		if c.RopeHighFreqFactor <= c.RopeLowFreqFactor {
			return fmt.Errorf("rope llama3 scaling: high_freq_factor %v must exceed low_freq_factor %v", c.RopeHighFreqFactor, c.RopeLowFreqFactor)
		}
	default:
		return fmt.Errorf("metadata %q = %q: unsupported rope scaling (supported: none, linear, llama3)", k("rope.scaling.type"), gguf.Clip(typ))
	}
	return nil
}

func optionalInt(f *gguf.File, key string, def int) (int, error) {
	v, ok, err := f.Int(key)
	if err != nil || !ok {
		return def, err
	}
	if v < 1 || v > maxContext {
		return 0, fmt.Errorf("metadata %q = %d, expected 1..%d", key, v, maxContext)
	}
	return int(v), nil
}
