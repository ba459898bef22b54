// Package tokenizer turns text into token ids and back for the vocabularies
// stored in GGUF files: SentencePiece-style (tokenizer.ggml.model = llama:
// Llama 2, TinyLlama, Mistral) and byte-level BPE (gpt2: Llama 3). The goal
// is token-exact agreement with llama.cpp's llama-vocab.cpp, including its
// quirks; where it has a quirk, the comment says so.
//
// A Tokenizer is immutable after FromGGUF and safe for concurrent use.
package tokenizer

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"greta/gguf"
)

// Token types as stored in tokenizer.ggml.token_type (llama_token_type).
const (
	typeUndefined   = 0
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// attr is a token's attribute bit set (llama_token_attr).
type attr uint16

const (
	attrUnknown attr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	// attrLstrip and attrRstrip: a special token eats the whitespace
	// before (after) it when it is cut out of the text (llama.cpp's
	// LLAMA_TOKEN_ATTR_LSTRIP/RSTRIP; set for Phi-3's, see setStripAttrs).
	attrLstrip
	attrRstrip
)

// vocabKind is the tokenizer algorithm.
type vocabKind int

const (
	kindSPM vocabKind = iota
	kindBPE
)

// Tokenizer encodes and decodes text for one GGUF vocabulary.
type Tokenizer struct {
	kind  vocabKind
	model string // tokenizer.ggml.model
	pre   string // tokenizer.ggml.pre as written ("" when absent)

	tokens []string  // id -> text as stored (SPM: ▁ for space; BPE: byte-level chars)
	scores []float32 // id -> SPM merge score
	attrs  []attr
	toID   map[string]int32
	pieces []string // id -> bytes the token stands for (llama.cpp token_to_piece with special=true)

	bos, eos, eot, eom, unk int32
	eog                     map[int32]bool
	addBOS, addEOS          bool
	addSpacePrefix          bool

	// special lists control, user-defined and unknown tokens, longest text
	// first: the order in which Encode cuts them out of the text.
	special []int32

	// SPM.
	byteToken   [256]int32 // byte -> <0xXX> token (or the 1-char token), -1 if none
	spmSegments bool       // text may be cut before ▁ (see spm.go)

	// BPE.
	preKind      preKind
	ignoreMerges bool
	merges       map[uint64]bpeMerge // (left id, right id) -> rank and result
	byteSym      [256]int32          // byte -> id of its byte-level token, -1 if none

	cacheMu sync.RWMutex
	cache   map[string][]int32 // pre-tokenized word (or SPM segment) -> ids

	chatTemplate string // tokenizer.chat_template, "" if absent
	warnings     []string
}

// FromGGUF builds the tokenizer described by f's tokenizer.* metadata. It
// fails when tokenizer.ggml.model is missing or not llama/gpt2, or when the
// token list is missing or malformed. Suspicious but usable metadata (an
// unknown tokenizer.ggml.pre, for one) is reported by Warnings.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	model, ok, err := f.String("tokenizer.ggml.model")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no tokenizer.ggml.model in metadata: the file has no vocabulary")
	}
	pre, _, err := f.String("tokenizer.ggml.pre")
	if err != nil {
		return nil, err
	}
	tokens, ok, err := f.Strings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, err
	}
	if !ok || len(tokens) == 0 {
		return nil, fmt.Errorf("no tokenizer.ggml.tokens in metadata")
	}
	t := &Tokenizer{model: model, pre: pre, eot: -1, eom: -1}

	switch model {
	case "llama":
		t.kind = kindSPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addSpacePrefix, t.addBOS = true, true
	case "gpt2":
		t.kind = kindBPE
		t.bos, t.eos, t.unk = 11, 11, -1
		if err := t.choosePre(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("tokenizer.ggml.model %q is not supported (want llama or gpt2)", gguf.Clip(model))
	}
	if t.kind == kindSPM {
		if v, ok, err := f.Bool("tokenizer.ggml.add_space_prefix"); err != nil {
			return nil, err
		} else if ok {
			t.addSpacePrefix = v
		}
	}

	if err := t.loadTokens(f, tokens); err != nil {
		return nil, err
	}
	if t.kind == kindBPE {
		merges, ok, err := f.Strings("tokenizer.ggml.merges")
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("no tokenizer.ggml.merges in metadata: a gpt2 vocabulary needs them")
		}
		if err := t.loadMerges(merges); err != nil {
			return nil, err
		}
	}
	if err := t.loadSpecial(f); err != nil {
		return nil, err
	}
	if s, _, err := f.String("tokenizer.chat_template"); err == nil {
		t.chatTemplate = s
	}
	t.buildPieces()
	t.buildSpecialList()
	if name, _, _ := f.String("general.name"); name != "" {
		t.setStripAttrs(strings.ToLower(name))
	}
	if t.kind == kindSPM {
		if err := t.buildSPM(); err != nil {
			return nil, err
		}
	}
	t.cache = make(map[string][]int32)
	return t, nil
}

// choosePre maps tokenizer.ggml.pre to a splitting rule set and sets the
// per-pre defaults llama.cpp uses.
func (t *Tokenizer) choosePre() error {
	switch t.pre {
	case "":
		t.preKind = preDefault
		t.warn("tokenizer.ggml.pre is missing: using the 'default' BPE pre-tokenizer, as llama.cpp does; generation quality may suffer, consider regenerating the file")
	case "default":
		t.preKind = preDefault
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
		t.preKind = preLlama3
		t.ignoreMerges = true
		t.addBOS = true
	case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan", "solar-open":
		t.preKind = preQwen2
	case "dbrx", "smaug-bpe":
		t.preKind = preLlama3
	case "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "exaone4":
		t.preKind = preGPT2
	default:
		t.preKind = preDefault
		t.warn(fmt.Sprintf("tokenizer.ggml.pre %q is not supported: splitting text with the 'default' BPE pre-tokenizer instead, so token ids may differ from the model's own tokenizer (llama.cpp refuses this file)", gguf.Clip(t.pre)))
	}
	return nil
}

func (t *Tokenizer) warn(s string) { t.warnings = append(t.warnings, s) }

// loadTokens reads texts, scores and types.
func (t *Tokenizer) loadTokens(f *gguf.File, tokens []string) error {
	n := len(tokens)
	if n > 1<<31-1 {
		return fmt.Errorf("vocabulary of %d tokens is too large", n)
	}
	scores, ok, err := f.Float32s("tokenizer.ggml.scores")
	if err != nil {
		// llama.cpp also accepts integer scores.
		is, ok2, err2 := f.Int32s("tokenizer.ggml.scores")
		if err2 != nil || !ok2 {
			return err
		}
		scores, ok = make([]float32, len(is)), true
		for i, v := range is {
			scores[i] = float32(v)
		}
	}
	if ok && len(scores) < n {
		return fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(scores), n)
	}
	types, typesOK, err := f.Int32s("tokenizer.ggml.token_type")
	if err != nil {
		return err
	}
	if typesOK && len(types) < n {
		return fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(types), n)
	}

	t.tokens = make([]string, n)
	t.scores = make([]float32, n)
	t.attrs = make([]attr, n)
	t.toID = make(map[string]int32, n)
	for i, text := range tokens {
		if text == "" {
			t.warn(fmt.Sprintf("empty token at index %d", i))
			text = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if j, dup := t.toID[text]; dup {
			return fmt.Errorf("duplicate token in vocabulary: %q has ids %d and %d", gguf.Clip(text), j, i)
		}
		t.toID[text] = int32(i)
		t.tokens[i] = text
		if ok {
			t.scores[i] = scores[i]
		}
		switch {
		case typesOK:
			t.attrs[i] = attrOfType(types[i])
		default:
			t.attrs[i] = t.guessAttr(int32(i), text)
		}
	}
	if !typesOK {
		t.warn("tokenizer.ggml.token_type is missing: token types guessed from their text (<0xXX> bytes, <unk>, <s>, </s>, <|...|>)")
	}
	return nil
}

func attrOfType(typ int32) attr {
	switch typ {
	case typeUnknown:
		return attrUnknown
	case typeUnused:
		return attrUnused
	case typeNormal:
		return attrNormal
	case typeControl:
		return attrControl
	case typeUserDefined:
		return attrUserDefined
	case typeByte:
		return attrByte
	}
	return 0 // undefined
}

// guessAttr types a token when the file has no token_type array. llama.cpp
// would make every token normal, which decodes <0x0A> as the six characters
// "<0x0A>"; a minimal vocabulary written without types should still round
// trip, so byte tokens and the usual control texts are recognised.
func (t *Tokenizer) guessAttr(id int32, text string) attr {
	if t.kind == kindSPM && isByteTokenText(text) {
		return attrByte
	}
	switch {
	case text == "<unk>":
		return attrUnknown
	case text == "<s>" || text == "</s>":
		return attrControl
	case len(text) > 4 && strings.HasPrefix(text, "<|") && strings.HasSuffix(text, "|>"):
		return attrControl
	}
	return attrNormal
}

// isByteTokenText matches <0xXX> with two upper- or lower-case hex digits.
func isByteTokenText(s string) bool {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return false
	}
	_, ok1 := hexVal(s[3])
	_, ok2 := hexVal(s[4])
	return ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// loadSpecial reads special token ids and add_bos/add_eos, then finds EOT,
// EOM and the end-of-generation set the way llama.cpp does.
func (t *Tokenizer) loadSpecial(f *gguf.File) error {
	n := int64(len(t.tokens))
	for _, d := range []*int32{&t.bos, &t.eos, &t.unk} {
		if int64(*d) >= n {
			*d = -1 // default id out of range: disabled
		}
	}
	var fimPad, fimRep, fimSep int32 = -1, -1, -1
	ids := []struct {
		key string
		dst *int32
	}{
		{"tokenizer.ggml.bos_token_id", &t.bos},
		{"tokenizer.ggml.eos_token_id", &t.eos},
		{"tokenizer.ggml.eot_token_id", &t.eot},
		{"tokenizer.ggml.eom_token_id", &t.eom},
		{"tokenizer.ggml.unknown_token_id", &t.unk},
		{"tokenizer.ggml.fim_pad_token_id", &fimPad},
		{"tokenizer.ggml.fim_rep_token_id", &fimRep},
		{"tokenizer.ggml.fim_sep_token_id", &fimSep},
	}
	for _, k := range ids {
		v, ok, err := f.Int(k.key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if v < 0 || v >= n {
			// 0xFFFFFFFF is the common "none" spelling; say nothing for it.
			if v != 0xFFFFFFFF && v != -1 {
				t.warn(fmt.Sprintf("%s = %d is outside the vocabulary of %d tokens; keeping %d", k.key, v, n, *k.dst))
			}
			continue
		}
		*k.dst = int32(v)
	}
	if v, ok, err := f.Bool("tokenizer.ggml.add_bos_token"); err != nil {
		return err
	} else if ok {
		t.addBOS = v
	}
	if v, ok, err := f.Bool("tokenizer.ggml.add_eos_token"); err != nil {
		return err
	} else if ok {
		t.addEOS = v
	}
	if t.addBOS && t.bos < 0 {
		return fmt.Errorf("tokenizer.ggml.add_bos_token is true, but there is no BOS token")
	}
	if t.addEOS && t.eos < 0 {
		return fmt.Errorf("tokenizer.ggml.add_eos_token is true, but there is no EOS token")
	}

	// llama.cpp finds these by text when the metadata does not name them,
	// and forces them to be control tokens. It walks a hash map, so with
	// several candidates its pick is unspecified; this takes the first
	// candidate in its list (for Llama 3: <|eot_id|>, not <|end_of_text|>).
	findByText := func(dst *int32, texts ...string) {
		if *dst >= 0 {
			return
		}
		for _, s := range texts {
			if id, ok := t.toID[s]; ok {
				*dst = id
				t.attrs[id] |= attrControl
				return
			}
		}
	}
	findByText(&t.eot, "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
	findByText(&t.eom, "<|eom_id|>")
	findByText(&fimPad, "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
	findByText(&fimRep, "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
	findByText(&fimSep, "<|file_sep|>")

	t.eog = make(map[int32]bool)
	for _, id := range []int32{fimPad, fimRep, fimSep} {
		if id >= 0 {
			t.eog[id] = true
		}
	}
	for _, s := range []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
		"<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
		"_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>",
		"<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["} {
		if id, ok := t.toID[s]; ok {
			t.eog[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id >= 0 {
			t.eog[id] = true
		}
	}
	// llama.cpp: with <|return|> and <|call|> (gpt-oss) or <|calls|> and
	// <|flush|> (solar-open), <|end|> ends a message, not the generation.
	has := func(s string) bool { id, ok := t.toID[s]; return ok && t.eog[id] }
	if has("<|end|>") && ((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>"))) {
		id := t.toID["<|end|>"]
		delete(t.eog, id)
		t.attrs[id] = attrUserDefined
	}
	// llama.cpp: Gemma 4 and PaddleOCR do not end on </s>.
	if has("<|tool_response>") && has("</s>") {
		id := t.toID["</s>"]
		delete(t.eog, id)
		t.attrs[id] = attrNormal
	}
	return nil
}

// buildSpecialList collects the tokens Encode cuts out of the text before
// running the tokenizer, longest first. llama.cpp's std::sort leaves ties
// in unspecified order; ties here go by id.
func (t *Tokenizer) buildSpecialList() {
	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.special = append(t.special, int32(id))
		}
	}
	sort.SliceStable(t.special, func(i, j int) bool {
		return len(t.tokens[t.special[i]]) > len(t.tokens[t.special[j]])
	})
}

// Model returns tokenizer.ggml.model: "llama" (SPM) or "gpt2" (BPE).
func (t *Tokenizer) Model() string { return t.model }

// Pre returns tokenizer.ggml.pre as written in the file ("" if absent).
func (t *Tokenizer) Pre() string { return t.pre }

// Warnings lists problems found while loading that did not stop it.
func (t *Tokenizer) Warnings() []string { return append([]string(nil), t.warnings...) }

// NumTokens is the vocabulary size.
func (t *Tokenizer) NumTokens() int { return len(t.tokens) }

// BOS, EOS and EOT return the special ids, -1 when the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence id, -1 if none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// EOT returns the end-of-turn id, -1 if none.
func (t *Tokenizer) EOT() int32 { return t.eot }

// AddBOS reports whether Encode with addSpecial prepends BOS.
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// AddEOS reports whether Encode with addSpecial appends EOS.
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// IsEOG reports whether id ends generation: EOS, EOT, EOM and the other
// tokens llama.cpp marks as end-of-generation by their text.
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }

// IsControl reports whether id is a control token (BOS, EOS, <|eot_id|>,
// ...), which Decode leaves out.
func (t *Tokenizer) IsControl(id int32) bool {
	return id >= 0 && int(id) < len(t.attrs) && t.attrs[id]&attrControl != 0
}

// TokenText returns the token's text exactly as the vocabulary stores it
// (with ▁ or byte-level characters), "" for an id out of range.
func (t *Tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// ChatTemplateText returns tokenizer.chat_template, "" if absent.
func (t *Tokenizer) ChatTemplateText() string { return t.chatTemplate }

// setStripAttrs sets the strip attributes llama.cpp gives by model name
// (llama_vocab::impl::load, "set attributes by model name"): a Phi-3's
// special tokens (and </s>) eat the whitespace after them, except <unk>,
// <s> and <|endoftext|>.
func (t *Tokenizer) setStripAttrs(name string) {
	if !strings.Contains(name, "phi-3") && !strings.Contains(name, "phi3") {
		return
	}
	for _, id := range t.special {
		t.attrs[id] |= attrRstrip
	}
	set := func(tok string, on bool) {
		for id, s := range t.tokens {
			if s != tok {
				continue
			}
			if on {
				t.attrs[id] |= attrRstrip
			} else {
				t.attrs[id] &^= attrRstrip
			}
			return
		}
	}
	set("</s>", true)
	for _, tok := range []string{"<unk>", "<s>", "<|endoftext|>"} {
		set(tok, false)
	}
}
