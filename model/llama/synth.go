package llama

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"

	"greta/gguf"
	"greta/quant"
)

// SynthOptions describes a random-weight model for `greta synth`.
type SynthOptions struct {
	// Arch is general.architecture: llama (the default), qwen2, qwen3,
	// gemma2, gemma3 or phi3. The file has the tensors and keys that
	// llama.cpp's converter writes for that family.
	Arch                                      string
	Dim, Layers, Heads, KVHeads, FFN, Context int
	HeadDim                                   int // {arch}.attention.key_length (0: dim/heads, not written)
	RopeDim                                   int // {arch}.rope.dimension_count (0: head_dim): partial rotary below it
	RopeBase                                  float64
	RopeBaseSWA                               float64 // {arch}.rope.freq_base_swa (0: not written)
	SlidingWindow                             int     // {arch}.attention.sliding_window (0: not written)
	SWAPattern                                int     // {arch}.attention.sliding_window_pattern (0: not written)
	AttnSoftcap, FinalSoftcap                 float64 // {arch}.attn/final_logit_softcapping (0: not written)
	NormEps                                   float64
	WeightStd                                 float64 // the weights' standard deviation (0: 0.02); larger spreads the logits of a small model
	Tied                                      bool    // no output.weight
	Type                                      string  // f32|f16|bf16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k
	Seed                                      uint64
	Name                                      string

	// The vocabulary: copy every tokenizer.* key of VocabFrom, or else make
	// a vocabulary of Vocab tokens in the family's style: SentencePiece
	// with byte fallback (llama, phi3, and gemma without a space prefix)
	// or byte-level BPE with Qwen2's pre-tokenizer (qwen2, qwen3), with
	// the family's chat tokens.
	VocabFrom *gguf.File
	Vocab     int
}

// Presets hold the real dimensions of well-known models.
var Presets = map[string]SynthOptions{
	"tinyllama-1.1b":  {Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFN: 5632, Context: 2048, RopeBase: 10000, NormEps: 1e-5, Vocab: 32000},
	"llama2-7b":       {Dim: 4096, Layers: 32, Heads: 32, KVHeads: 32, FFN: 11008, Context: 4096, RopeBase: 10000, NormEps: 1e-5, Vocab: 32000},
	"llama3-8b":       {Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, FFN: 14336, Context: 8192, RopeBase: 500000, NormEps: 1e-5, Vocab: 128256},
	"llama3-70b":      {Dim: 8192, Layers: 80, Heads: 64, KVHeads: 8, FFN: 28672, Context: 8192, RopeBase: 500000, NormEps: 1e-5, Vocab: 128256},
	"mistral-7b-v0.1": {Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, FFN: 14336, Context: 32768, RopeBase: 10000, NormEps: 1e-5, Vocab: 32000, SlidingWindow: 4096},
	"qwen2.5-0.5b":    {Arch: "qwen2", Dim: 896, Layers: 24, Heads: 14, KVHeads: 2, FFN: 4864, Context: 32768, RopeBase: 1000000, NormEps: 1e-6, Vocab: 1500, Tied: true},
	"qwen3-0.6b":      {Arch: "qwen3", Dim: 1024, Layers: 28, Heads: 16, KVHeads: 8, HeadDim: 128, FFN: 3072, Context: 40960, RopeBase: 1000000, NormEps: 1e-6, Vocab: 1500, Tied: true},
	"gemma2-2b":       {Arch: "gemma2", Dim: 2304, Layers: 26, Heads: 8, KVHeads: 4, HeadDim: 256, FFN: 9216, Context: 8192, RopeBase: 10000, NormEps: 1e-6, Vocab: 2000, SlidingWindow: 4096, AttnSoftcap: 50, FinalSoftcap: 30},
	"gemma3-1b":       {Arch: "gemma3", Dim: 1152, Layers: 26, Heads: 4, KVHeads: 1, HeadDim: 256, FFN: 6912, Context: 32768, RopeBase: 1000000, NormEps: 1e-6, Vocab: 2000, SlidingWindow: 512, Tied: true},
	"phi3-mini":       {Arch: "phi3", Dim: 3072, Layers: 32, Heads: 32, KVHeads: 32, FFN: 8192, Context: 4096, RopeBase: 10000, NormEps: 1e-5, Vocab: 32064, SlidingWindow: 2047},
}

// llama.cpp's general.file_type ids for the synth types.
var synthFileTypes = map[string]uint32{
	"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "bf16": 32,
}

// SynthTypes lists the accepted --type values.
func SynthTypes() []string {
	return []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"}
}

// Synthesize writes a llama GGUF model with random weights to w. Quantized
// blocks hold random bytes with small, finite fp16 scales chosen so weights
// have a standard deviation near 0.02; norms are near 1. The same options
// and seed always give the same file.
func Synthesize(w io.Writer, o SynthOptions) error {
	o.setDefaults()
	kv, err := SynthMetadata(o)
	if err != nil {
		return err
	}
	// Check the shapes with the same code that checks files on load.
	cfg, err := configFromKV(kv)
	if err != nil {
		return err
	}
	var infos []gguf.TensorInfo
	for _, s := range cfg.TensorSpecs() {
		// The optional tensors the converters write: the biases of q, k
		// and v (Qwen2), output.weight unless tied.
		if s.Name == "rope_freqs.weight" || s.Name == "output.bias" || (s.Name == "output.weight" && o.Tied) {
			continue
		}
		infos = append(infos, gguf.TensorInfo{Name: s.Name, Shape: s.Shape, Type: o.tensorType(s.Name, s.Shape, cfg.NLayers)})
	}
	gw, err := gguf.NewWriter(w, 3, kv, infos)
	if err != nil {
		return err
	}
	var buf []byte
	for i, t := range gw.Tensors() {
		size := int(t.Size())
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		fillRandom(buf, &t, o.Seed*0x9E3779B97F4A7C15+uint64(i)+1, o.WeightStd)
		if err := gw.WriteTensor(buf); err != nil {
			return err
		}
	}
	return gw.Close()
}

// configFromKV runs ConfigFromGGUF over metadata alone.
func configFromKV(kv []gguf.KV) (*Config, error) {
	f, err := gguf.FromMetadata(kv)
	if err != nil {
		return nil, err
	}
	return ConfigFromGGUF(f)
}

func (o *SynthOptions) setDefaults() {
	if o.WeightStd == 0 {
		o.WeightStd = defaultWeightStd
	}
	if o.Arch == "" {
		o.Arch = "llama"
	}
	if o.NormEps == 0 {
		o.NormEps = 1e-5
	}
	if o.RopeBase == 0 {
		o.RopeBase = 10000
	}
	if o.KVHeads == 0 {
		o.KVHeads = o.Heads
	}
}

// SynthMetadata returns the metadata Synthesize writes for o.
func SynthMetadata(o SynthOptions) ([]gguf.KV, error) {
	o.setDefaults()
	if _, ok := synthFileTypes[o.Type]; !ok {
		return nil, fmt.Errorf("unknown type %q (expected one of %s)", o.Type, strings.Join(SynthTypes(), ", "))
	}
	if _, ok := families[o.Arch]; !ok {
		return nil, fmt.Errorf("unknown architecture %q (expected one of %s)", o.Arch, strings.Join(Architectures(), ", "))
	}
	name := o.Name
	if name == "" {
		name = fmt.Sprintf("greta-synth %s d%d l%d h%d kv%d ff%d %s", o.Arch, o.Dim, o.Layers, o.Heads, o.KVHeads, o.FFN, o.Type)
		if o.Arch == "llama" {
			name = fmt.Sprintf("greta-synth d%d l%d h%d kv%d ff%d %s", o.Dim, o.Layers, o.Heads, o.KVHeads, o.FFN, o.Type)
		}
	}
	a := o.Arch + "."
	kv := []gguf.KV{
		{Key: "general.architecture", Value: o.Arch},
		{Key: "general.name", Value: name},
		{Key: a + "context_length", Value: uint32(o.Context)},
		{Key: a + "embedding_length", Value: uint32(o.Dim)},
		{Key: a + "block_count", Value: uint32(o.Layers)},
		{Key: a + "feed_forward_length", Value: uint32(o.FFN)},
		{Key: a + "attention.head_count", Value: uint32(o.Heads)},
		{Key: a + "attention.head_count_kv", Value: uint32(o.KVHeads)},
		{Key: a + "rope.freq_base", Value: float32(o.RopeBase)},
		{Key: a + "attention.layer_norm_rms_epsilon", Value: float32(o.NormEps)},
		{Key: "general.file_type", Value: synthFileTypes[o.Type]},
	}
	headDim := o.HeadDim
	if headDim > 0 {
		kv = append(kv, gguf.KV{Key: a + "attention.key_length", Value: uint32(headDim)}, gguf.KV{Key: a + "attention.value_length", Value: uint32(headDim)})
	} else if o.Heads > 0 && o.Dim%o.Heads == 0 {
		headDim = o.Dim / o.Heads
	}
	if o.RopeDim > 0 {
		kv = append(kv, gguf.KV{Key: a + "rope.dimension_count", Value: uint32(o.RopeDim)})
	} else if headDim > 0 {
		kv = append(kv, gguf.KV{Key: a + "rope.dimension_count", Value: uint32(headDim)})
	}
	if o.RopeBaseSWA > 0 {
		kv = append(kv, gguf.KV{Key: a + "rope.freq_base_swa", Value: float32(o.RopeBaseSWA)})
	}
	if o.SlidingWindow > 0 {
		kv = append(kv, gguf.KV{Key: a + "attention.sliding_window", Value: uint32(o.SlidingWindow)})
	}
	if o.SWAPattern > 0 {
		kv = append(kv, gguf.KV{Key: a + "attention.sliding_window_pattern", Value: uint32(o.SWAPattern)})
	}
	if o.AttnSoftcap > 0 {
		kv = append(kv, gguf.KV{Key: a + "attn_logit_softcapping", Value: float32(o.AttnSoftcap)})
	}
	if o.FinalSoftcap > 0 {
		kv = append(kv, gguf.KV{Key: a + "final_logit_softcapping", Value: float32(o.FinalSoftcap)})
	}
	if o.VocabFrom != nil {
		n := 0
		for _, e := range o.VocabFrom.KV {
			if strings.HasPrefix(e.Key, "tokenizer.") {
				kv = append(kv, e)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("--vocab-from: %s has no tokenizer.* metadata", o.VocabFrom.Path)
		}
		toks, ok, err := o.VocabFrom.Strings("tokenizer.ggml.tokens")
		if err != nil || !ok {
			return nil, fmt.Errorf("--vocab-from: %s has no tokenizer.ggml.tokens", o.VocabFrom.Path)
		}
		kv = append(kv, gguf.KV{Key: a + "vocab_size", Value: uint32(len(toks))})
		return kv, nil
	}
	var vocab []gguf.KV
	var err error
	switch o.Arch {
	case "qwen2", "qwen3":
		vocab, err = bpeVocab(o.Vocab, []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
	case "gemma2", "gemma3":
		vocab, err = plainVocab(o.Vocab, []string{"<start_of_turn>", "<end_of_turn>"}, false)
	case "phi3":
		vocab, err = plainVocab(o.Vocab, []string{"<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"}, true)
	default:
		vocab, err = plainVocab(o.Vocab, nil, true)
	}
	if err != nil {
		return nil, err
	}
	if t, ok := synthChatTemplates[o.Arch]; ok {
		vocab = append(vocab, gguf.KV{Key: "tokenizer.chat_template", Value: t})
	}
	return append(append(kv, gguf.KV{Key: a + "vocab_size", Value: uint32(o.Vocab)}), vocab...), nil
}

// synthChatTemplates are short Jinja templates in each family's chat format
// (GRETA's own, equal to the publishers' on plain conversations: ChatML for
// Qwen, turns of user and model for Gemma with the system text before the
// first user turn, Phi-3's role markers), so that a synthesized file chats
// as the family does.
var synthChatTemplates = map[string]string{
	"qwen2":  chatMLTemplate,
	"qwen3":  chatMLTemplate,
	"gemma2": gemmaTemplate,
	"gemma3": gemmaTemplate,
	"phi3": "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}" +
		"{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
}

const chatMLTemplate = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}" +
	"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

const gemmaTemplate = "{{ bos_token }}{% set ns = namespace(prefix='') %}{% for m in messages %}" +
	"{% if m['role'] == 'system' %}{% set ns.prefix = ns.prefix + m['content'] | trim + '\n\n' %}" +
	"{% else %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}" +
	"{{ '<start_of_turn>' + role + '\n' + (ns.prefix if role == 'user' else '') + m['content'] | trim + '<end_of_turn>\n' }}" +
	"{% if role == 'user' %}{% set ns.prefix = '' %}{% endif %}{% endif %}{% endfor %}" +
	"{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"

// plainVocab is a SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256
// byte tokens, printable pieces with descending scores, then the control
// tokens specials. Without spacePrefix (Gemma) the tokenizer adds no
// dummy space before the text.
func plainVocab(n int, specials []string, spacePrefix bool) ([]gguf.KV, error) {
	const fixed = 3 + 256
	if n < fixed+len(specials)+1 {
		return nil, fmt.Errorf("--vocab %d is too small: a plain vocabulary needs at least %d tokens (3 special, 256 bytes, %d chat tokens, pieces)", n, fixed+len(specials)+1, len(specials))
	}
	n -= len(specials)
	tokens := make([]string, 0, n)
	types := make([]int32, 0, n)
	scores := make([]float32, 0, n)
	add := func(s string, typ int32, score float32) {
		tokens = append(tokens, s)
		types = append(types, typ)
		scores = append(scores, score)
	}
	add("<unk>", 2, 0)
	add("<s>", 3, 0)
	add("</s>", 3, 0)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 6, 0)
	}
	seen := map[string]bool{}
	var chars []string
	for c := '!'; c <= '~'; c++ {
		chars = append(chars, string(c))
	}
	piece := func(s string) {
		if len(tokens) < n && !seen[s] {
			seen[s] = true
			add(s, 1, -float32(len(tokens)-fixed))
		}
	}
	piece("▁")
	for _, c := range chars {
		piece(c)
	}
	for _, c := range chars {
		piece("▁" + c)
	}
	for _, a := range chars {
		for _, b := range chars {
			piece(a + b)
			piece("▁" + a + b)
		}
	}
	for i := 0; len(tokens) < n; i++ {
		piece(fmt.Sprintf("▁w%d", i))
	}
	for _, sp := range specials {
		add(sp, 3, 0)
	}
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.add_space_prefix", Value: spacePrefix},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Array{Type: gguf.TypeString, Data: tokens}},
		{Key: "tokenizer.ggml.scores", Value: gguf.Array{Type: gguf.TypeFloat32, Data: scores}},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Array{Type: gguf.TypeInt32, Data: types}},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(0)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	}, nil
}

// bpeVocab is a byte-level BPE vocabulary in GPT-2's style with Qwen2's
// pre-tokenizer: the 256 byte tokens, tokens made by merges of common
// letter pairs (with and without the leading space Ġ), then the control
// tokens specials; the first special is BOS and padding, the last EOS
// (Qwen's <|endoftext|> and <|im_end|>).
func bpeVocab(n int, specials []string) ([]gguf.KV, error) {
	if n < 256+len(specials)+1 {
		return nil, fmt.Errorf("--vocab %d is too small: a BPE vocabulary needs at least %d tokens (256 bytes, %d special, merges)", n, 256+len(specials)+1, len(specials))
	}
	tokens := byteLevelAlphabet()
	have := map[string]bool{}
	for _, t := range tokens {
		have[t] = true
	}
	var merges []string
	merge := func(a, b string) {
		if len(tokens) < n-len(specials) && have[a] && have[b] && !have[a+b] {
			merges = append(merges, a+" "+b)
			tokens = append(tokens, a+b)
			have[a+b] = true
		}
	}
	const sp = "Ġ" // the byte-level form of ' '
	letters := "etaoinshrdlcumwfgypbvkjxqz"
	for _, c := range letters {
		merge(sp, string(c))
	}
	for _, bg := range []string{"th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le", "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce"} {
		merge(bg[:1], bg[1:])
		merge(sp+bg[:1], bg[1:])
	}
	merge("Ġth", "e")
	merge("Ċ", "Ċ")
	for _, a := range letters {
		for _, b := range letters {
			merge(sp+string(a), string(b))
		}
	}
	for _, a := range letters {
		for _, b := range letters {
			merge(string(a), string(b))
		}
	}
	if len(tokens) < n-len(specials) {
		return nil, fmt.Errorf("--vocab %d is too large for the synthetic BPE vocabulary (at most %d)", n, len(tokens)+len(specials))
	}
	types := make([]int32, 0, n)
	for range tokens {
		types = append(types, 1)
	}
	first := int32(len(tokens))
	for _, s := range specials {
		tokens = append(tokens, s)
		types = append(types, 3)
	}
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "gpt2"},
		{Key: "tokenizer.ggml.pre", Value: "qwen2"},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Array{Type: gguf.TypeString, Data: tokens}},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Array{Type: gguf.TypeInt32, Data: types}},
		{Key: "tokenizer.ggml.merges", Value: gguf.Array{Type: gguf.TypeString, Data: merges}},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(first)},
		{Key: "tokenizer.ggml.padding_token_id", Value: uint32(first)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(len(tokens) - 1)},
		{Key: "tokenizer.ggml.add_bos_token", Value: false},
	}, nil
}

// byteLevelAlphabet is GPT-2's bytes_to_unicode: byte b's token, in byte
// order. Printable bytes stand for themselves; the others map to U+0100
// onwards.
func byteLevelAlphabet() []string {
	out := make([]string, 256)
	next := rune(256)
	for b := range 256 {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			out[b] = string(rune(b))
		} else {
			out[b] = string(next)
			next++
		}
	}
	return out
}

// tensorType applies llama.cpp's choice of types per tensor for the file type.
func (o *SynthOptions) tensorType(name string, shape []int64, nLayers int) gguf.Type {
	if len(shape) == 1 {
		return gguf.F32
	}
	isOutput := name == "output.weight" || (o.Tied && name == "token_embd.weight")
	layer := -1
	fmt.Sscanf(name, "blk.%d.", &layer)
	moreBits := layer >= 0 && (layer < nLayers/8 || layer >= 7*nLayers/8 || (layer-nLayers/8)%3 == 2)
	vOrDown := strings.HasSuffix(name, ".attn_v.weight") || strings.HasSuffix(name, ".ffn_down.weight")
	var t gguf.Type
	switch o.Type {
	case "f32":
		t = gguf.F32
	case "f16":
		t = gguf.F16
	case "bf16":
		t = gguf.BF16
	case "q8_0":
		t = gguf.Q8_0
	case "q4_0":
		t = gguf.Q4_0
		if isOutput {
			t = gguf.Q6_K
		}
	case "q6_k":
		t = gguf.Q6_K
	case "q4_k_m", "q5_k_m":
		t = gguf.Q4_K
		if o.Type == "q5_k_m" {
			t = gguf.Q5_K
		}
		if isOutput || (vOrDown && moreBits) {
			t = gguf.Q6_K
		}
	}
	// Rows that do not fill a block fall back, as llama-quantize does.
	if shape[0]%int64(t.BlockSize()) != 0 {
		t = gguf.Q8_0
		if shape[0]%32 != 0 {
			t = gguf.F16
		}
	}
	return t
}

// Weight scales per format, for a weight standard deviation near 0.02.
// Q4_K/Q5_K values are d·sc·q − dmin·m with 6-bit sc and m; dmin is set so
// the mean is near zero. Q6_K values are d·sc·(q−32) with int8 sc.
const defaultWeightStd = 0.02

func fillRandom(buf []byte, t *gguf.TensorInfo, seed uint64, weightStd float64) {
	cols := int(t.Shape[0])
	rowBytes := t.Type.RowBytes(cols)
	rows := len(buf) / rowBytes
	workers := runtime.GOMAXPROCS(0)
	const rowsPerChunk = 64
	chunks := (rows + rowsPerChunk - 1) / rowsPerChunk
	var wg sync.WaitGroup
	next := make(chan int, chunks)
	for c := 0; c < chunks; c++ {
		next <- c
	}
	close(next)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				lo := c * rowsPerChunk * rowBytes
				hi := min(len(buf), (c+1)*rowsPerChunk*rowBytes)
				rng := rand.New(rand.NewPCG(seed, uint64(c)))
				fillChunk(buf[lo:hi], t, rng, weightStd)
			}
		}()
	}
	wg.Wait()
}

func fillChunk(b []byte, t *gguf.TensorInfo, rng *rand.Rand, weightStd float64) {
	le := binary.LittleEndian
	isNorm := len(t.Shape) == 1 && !strings.HasSuffix(t.Name, ".bias")
	switch t.Type {
	case gguf.F32:
		// Biases get a spread of 0.5, so that they move q, k and v as much
		// as the products do.
		scale := float32(1)
		if strings.HasSuffix(t.Name, ".bias") {
			scale = 0.5 / float32(weightStd)
		}
		for i := 0; i+4 <= len(b); i += 4 {
			le.PutUint32(b[i:], math.Float32bits(scale*uniform(rng, isNorm, weightStd)))
		}
		return
	case gguf.F16:
		for i := 0; i+2 <= len(b); i += 2 {
			le.PutUint16(b[i:], quant.F32ToF16(uniform(rng, isNorm, weightStd)))
		}
		return
	case gguf.BF16:
		for i := 0; i+2 <= len(b); i += 2 {
			le.PutUint16(b[i:], quant.F32ToBF16(uniform(rng, isNorm, weightStd)))
		}
		return
	}
	for i := 0; i+8 <= len(b); i += 8 {
		le.PutUint64(b[i:], rng.Uint64())
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
	bs := t.Type.TypeSize()
	f16 := func(x float64) uint16 { return quant.F32ToF16(float32(x)) }
	for off := 0; off+bs <= len(b); off += bs {
		blk := b[off : off+bs]
		jitter := 0.5 + rng.Float64() // scales vary from block to block
		switch t.Type {
		case gguf.Q8_0: // int8 q, rms ≈ 74
			le.PutUint16(blk[0:], f16(jitter*weightStd/74))
		case gguf.Q4_0: // q−8 with q in 0..15, rms ≈ 4.6
			le.PutUint16(blk[0:], f16(jitter*weightStd/4.6))
		case gguf.Q4_K: // rms(sc·q) ≈ 323, mean(sc·q) ≈ 236, mean(m) ≈ 31.5
			d := jitter * weightStd / 323
			le.PutUint16(blk[0:], f16(d))
			le.PutUint16(blk[2:], f16(d*236/31.5))
		case gguf.Q5_K: // rms(sc·q) ≈ 661, mean(sc·q) ≈ 488
			d := jitter * weightStd / 661
			le.PutUint16(blk[0:], f16(d))
			le.PutUint16(blk[2:], f16(d*488/31.5))
		case gguf.Q6_K: // rms(sc·(q−32)) ≈ 74·18.5
			le.PutUint16(blk[208:], f16(jitter*weightStd/(74*18.5)))
		}
	}
}

// uniform draws a weight with standard deviation weightStd, or a norm
// weight near 1.
func uniform(rng *rand.Rand, norm bool, weightStd float64) float32 {
	u := rng.Float32()*2 - 1
	if norm {
		return 1 + 0.1*u
	}
	return u * float32(weightStd) * 1.7320508
}
