package llama

import (
	"fmt"
	"math"
	"strconv"

	"greta/gguf"
	"greta/ml"
	"greta/quant"
	"greta/trace"
)

// Layer holds one transformer block's weights (GGUF names beside them).
// Shapes are GGUF order, innermost first.
type Layer struct {
	AttnNorm ml.Weight // blk.N.attn_norm.weight   [dim]
	Wq       ml.Weight // blk.N.attn_q.weight      [dim, n_heads·head_dim]
	Wk       ml.Weight // blk.N.attn_k.weight      [dim, n_kv_heads·head_dim]
	Wv       ml.Weight // blk.N.attn_v.weight      [dim, n_kv_heads·head_dim]
	Wo       ml.Weight // blk.N.attn_output.weight [n_heads·head_dim, dim]
	FFNNorm  ml.Weight // blk.N.ffn_norm.weight    [dim]
	Gate     ml.Weight // blk.N.ffn_gate.weight    [dim, hidden_dim]
	Up       ml.Weight // blk.N.ffn_up.weight      [dim, hidden_dim]
	Down     ml.Weight // blk.N.ffn_down.weight    [hidden_dim, dim]
}

// Model is a llama model loaded onto a backend.
type Model struct {
	Config     *Config
	Backend    ml.Backend
	CacheType  string    // the value type of NewState's KV cache: "" (the backend's default), "f16" or "f32"
	TokEmbd    ml.Weight // token_embd.weight  [dim, vocab]
	OutputNorm ml.Weight // output_norm.weight [dim]
	Output     ml.Weight // output.weight      [dim, vocab], or TokEmbd when tied
	Layers     []Layer

	Rope ml.Rope
	Attn ml.Attn

	// Trace, when set, records the activations at every trace point.
	Trace *trace.Recorder
}

// LoadOptions tune loading.
type LoadOptions struct {
	// Int8 quantizes F32/F16/BF16 weight matrices to Q8_0 at load, halving
	// (or quartering) the bytes read per token. Norms stay as they are.
	Int8 bool
	// Progress, if set, is called after each tensor with bytes done and total.
	Progress func(done, total int64)
}

// Load validates f and uploads its weights to b. Nothing is allocated from
// the file's sizes before validation passes.
func Load(f *gguf.File, b ml.Backend, o LoadOptions) (*Model, error) {
	cfg, errs := Validate(f)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	m := &Model{Config: cfg, Backend: b}
	var total, done, int8Bytes int64
	for i := range f.Tensors {
		t := &f.Tensors[i]
		total += t.Size()
		if o.Int8 && int8Convertible(t) {
			int8Bytes += t.NumElements() / 32 * 34
		}
	}
	// INT8 mode copies the float matrices, requantized, onto the heap.
	if err := checkMemory("INT8 mode's Q8_0 copy of the float weight matrices", "load without INT8 mode", int8Bytes); int8Bytes > 0 && err != nil {
		return nil, err
	}
	load := func(name string) (ml.Weight, error) {
		t, ok := f.Tensor(name)
		if !ok {
			return nil, nil
		}
		wd := ml.WeightData{Name: name, Type: t.Type, Shape: t.Shape, Data: f.TensorData(t)}
		if o.Int8 && int8Convertible(t) {
			var err error
			if wd, err = toQ8_0(wd); err != nil {
				return nil, fmt.Errorf("tensor %q: INT8 mode: %w", name, err)
			}
		}
		w, err := b.LoadWeight(wd)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		done += t.Size()
		if o.Progress != nil {
			o.Progress(done, total)
		}
		return w, nil
	}
	var err error
	must := func(dst *ml.Weight, name string) {
		if err == nil {
			*dst, err = load(name)
		}
	}
	must(&m.TokEmbd, "token_embd.weight")
	must(&m.OutputNorm, "output_norm.weight")
	must(&m.Output, "output.weight")
	m.Layers = make([]Layer, cfg.NLayers)
	for i := range m.Layers {
		l, p := &m.Layers[i], "blk."+strconv.Itoa(i)+"."
		must(&l.AttnNorm, p+"attn_norm.weight")
		must(&l.Wq, p+"attn_q.weight")
		must(&l.Wk, p+"attn_k.weight")
		must(&l.Wv, p+"attn_v.weight")
		must(&l.Wo, p+"attn_output.weight")
		must(&l.FFNNorm, p+"ffn_norm.weight")
		must(&l.Gate, p+"ffn_gate.weight")
		must(&l.Up, p+"ffn_up.weight")
		must(&l.Down, p+"ffn_down.weight")
	}
	if err != nil {
		return nil, err
	}
	if m.Output == nil {
		m.Output = m.TokEmbd
	}
	var freqFactors []float32
	if t, ok := f.Tensor("rope_freqs.weight"); ok {
		freqFactors = make([]float32, t.NumElements())
		if err := quant.Dequantize(t.Type, freqFactors, f.TensorData(t)); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
	}
	m.Rope = cfg.rope(freqFactors)
	m.Attn = ml.Attn{NHeads: cfg.NHeads, NKVHeads: cfg.NKVHeads, HeadDim: cfg.HeadDim, Scale: 1 / math.Sqrt(float64(cfg.HeadDim))}
	return m, nil
}

// int8Convertible reports whether INT8 mode requantizes t: a float matrix
// whose rows are whole Q8_0 blocks.
func int8Convertible(t *gguf.TensorInfo) bool {
	return len(t.Shape) == 2 && (t.Type == gguf.F32 || t.Type == gguf.F16 || t.Type == gguf.BF16) && t.Shape[0]%32 == 0
}

// toQ8_0 requantizes a float weight matrix to Q8_0 (INT8 mode).
func toQ8_0(w ml.WeightData) (ml.WeightData, error) {
	n := int(w.Shape[0] * w.Shape[1])
	data, err := quant.Convert(gguf.Q8_0, w.Type, w.Data, n)
	if err != nil {
		return w, err
	}
	w.Type, w.Data = gguf.Q8_0, data
	return w, nil
}

// rope computes the rotation frequency of every pair of a head: theta_i =
// base^(−2i/rope_dim), divided by the file's frequency factors (Llama 3.1's
// rope_freqs.weight) or rescaled by the llama3 rule when the file gives only
// the scaling keys.
func (c *Config) rope(factors []float32) ml.Rope {
	r := ml.Rope{HeadDim: c.HeadDim, PosScale: 1, Freqs: make([]float64, c.RopeDim/2)}
	for i := range r.Freqs {
		r.Freqs[i] = math.Pow(c.RopeFreqBase, -2*float64(i)/float64(c.RopeDim))
		if factors != nil {
			r.Freqs[i] /= float64(factors[i])
		}
	}
	switch c.RopeScaling {
	case "linear":
		r.PosScale = 1 / c.RopeScaleFactor
	case "llama3":
		if factors != nil {
			break // the factors already hold the scaling
		}
		lowWave := float64(c.RopeOrigContext) / c.RopeLowFreqFactor
		highWave := float64(c.RopeOrigContext) / c.RopeHighFreqFactor
		for i, f := range r.Freqs {
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave:
			case wave > lowWave:
				r.Freqs[i] = f / c.RopeScaleFactor
			default:
				s := (float64(c.RopeOrigContext)/wave - c.RopeLowFreqFactor) / (c.RopeHighFreqFactor - c.RopeLowFreqFactor)
				r.Freqs[i] = (1-s)*f/c.RopeScaleFactor + s*f
			}
		}
	}
	return r
}
