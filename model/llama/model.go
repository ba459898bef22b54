package llama

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"greta/gguf"
	"greta/ml"
	"greta/quant"
	"greta/trace"
)

// Layer holds one transformer block's weights (GGUF names beside them;
// each family's table says which it has). Shapes are GGUF order,
// innermost first; q_dim = n_heads·head_dim, kv_dim = n_kv_heads·head_dim.
type Layer struct {
	AttnNorm     ml.Weight // blk.N.attn_norm.weight           [dim]
	Wq           ml.Weight // blk.N.attn_q.weight              [dim, q_dim]
	Wk           ml.Weight // blk.N.attn_k.weight              [dim, kv_dim]
	Wv           ml.Weight // blk.N.attn_v.weight              [dim, kv_dim]
	Bq, Bk, Bv   ml.Weight // blk.N.attn_{q,k,v}.bias          [q_dim], [kv_dim] (qwen2)
	QNorm, KNorm ml.Weight // blk.N.attn_{q,k}_norm.weight     [head_dim], per head (qwen3, gemma3)
	Wo           ml.Weight // blk.N.attn_output.weight         [q_dim, dim]
	PostAttnNorm ml.Weight // blk.N.post_attention_norm.weight [dim] (gemma)
	FFNNorm      ml.Weight // blk.N.ffn_norm.weight            [dim]
	Gate         ml.Weight // blk.N.ffn_gate.weight            [dim, hidden_dim]
	Up           ml.Weight // blk.N.ffn_up.weight              [dim, hidden_dim]
	Down         ml.Weight // blk.N.ffn_down.weight            [hidden_dim, dim]
	PostFFNNorm  ml.Weight // blk.N.post_ffw_norm.weight       [dim] (gemma)
}

// Model is a model of one of the families loaded onto a backend.
type Model struct {
	Config     *Config
	Backend    ml.Backend
	CacheType  string    // the value type of NewState's KV cache: "" (the backend's default), "f16" or "f32"
	TokEmbd    ml.Weight // token_embd.weight  [dim, vocab]
	OutputNorm ml.Weight // output_norm.weight [dim]
	Output     ml.Weight // output.weight      [dim, vocab], or TokEmbd when tied
	OutputBias ml.Weight // output.bias        [vocab] (qwen2, optional)
	Layers     []Layer

	// Rope and Attn are every layer's settings; the layers that attend
	// through a sliding window (Config.IsSWA) take RopeSWA and AttnSWA
	// (another rope base in Gemma 3, a window).
	Rope, RopeSWA ml.Rope
	Attn, AttnSWA ml.Attn

	// Trace, when set, records the activations at every trace point.
	Trace *trace.Recorder

	fam *family
}

// layerRope and layerAttn are layer l's rope and attention settings.
func (m *Model) layerRope(l int) *ml.Rope {
	if m.Config.IsSWA(l) {
		return &m.RopeSWA
	}
	return &m.Rope
}

func (m *Model) layerAttn(l int) *ml.Attn {
	if m.Config.IsSWA(l) {
		return &m.AttnSWA
	}
	return &m.Attn
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
	m.fam = families[cfg.Arch]
	m.Layers = make([]Layer, cfg.NLayers)
	upload := func(name string, wd ml.WeightData) (ml.Weight, error) {
		if o.Int8 && len(wd.Shape) == 2 && (wd.Type == gguf.F32 || wd.Type == gguf.F16 || wd.Type == gguf.BF16) && wd.Shape[0]%32 == 0 {
			var err error
			if wd, err = toQ8_0(wd); err != nil {
				return nil, fmt.Errorf("tensor %q: INT8 mode: %w", name, err)
			}
		}
		w, err := b.LoadWeight(wd)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		return w, nil
	}
	// The tensor table says where each tensor goes; a fused one is sliced
	// by rows (whole rows of blocks, so any type slices exactly).
	for _, sp := range cfg.TensorSpecs() {
		t, ok := f.Tensor(sp.Name)
		if !ok {
			continue // optional (Validate checked the others)
		}
		wd := ml.WeightData{Name: sp.Name, Type: t.Type, Shape: t.Shape, Data: f.TensorData(t)}
		if sp.parts == nil {
			dst := m.field(sp.layer, strings.TrimPrefix(sp.Name, layerPrefix(sp.layer)))
			if dst == nil {
				continue // read elsewhere (rope_freqs.weight)
			}
			w, err := upload(sp.Name, wd)
			if err != nil {
				return nil, err
			}
			*dst = w
		} else {
			rb := int64(t.Type.RowBytes(int(t.Shape[0])))
			var r0 int64
			for _, p := range sp.parts {
				part := ml.WeightData{Name: layerPrefix(sp.layer) + p.field, Type: t.Type, Shape: []int64{t.Shape[0], p.rows}, Data: wd.Data[r0*rb : (r0+p.rows)*rb]}
				w, err := upload(sp.Name, part)
				if err != nil {
					return nil, err
				}
				*m.field(sp.layer, p.field) = w
				r0 += p.rows
			}
		}
		done += t.Size()
		if o.Progress != nil {
			o.Progress(done, total)
		}
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
	m.Rope = cfg.rope(freqFactors, cfg.RopeFreqBase, true)
	m.RopeSWA = m.Rope
	if cfg.RopeFreqBaseSWA > 0 {
		// The windowed layers' own base; Gemma 3's take none of the
		// global layers' scaling.
		m.RopeSWA = cfg.rope(freqFactors, cfg.RopeFreqBaseSWA, cfg.RopeSWAScaled)
	}
	scale := cfg.AttnScale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(cfg.HeadDim))
	}
	m.Attn = ml.Attn{NHeads: cfg.NHeads, NKVHeads: cfg.NKVHeads, HeadDim: cfg.HeadDim, Scale: scale, Softcap: cfg.AttnSoftcap}
	m.AttnSWA = m.Attn
	m.AttnSWA.Window = cfg.SlidingWindow
	return m, nil
}

// layerPrefix is "blk.N." for a layer's tensors, "" for the model's.
func layerPrefix(layer int) string {
	if layer < 0 {
		return ""
	}
	return "blk." + strconv.Itoa(layer) + "."
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
// the scaling keys (when scaled).
func (c *Config) rope(factors []float32, base float64, scaled bool) ml.Rope {
	r := ml.Rope{HeadDim: c.HeadDim, PosScale: 1, Freqs: make([]float64, c.RopeDim/2), Neox: c.RopeNeox}
	for i := range r.Freqs {
		r.Freqs[i] = math.Pow(base, -2*float64(i)/float64(c.RopeDim))
		if factors != nil {
			r.Freqs[i] /= float64(factors[i])
		}
	}
	if !scaled {
		return r
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
