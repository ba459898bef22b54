package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"greta/gguf"
)

// minimalSPM is the vocabulary shape of GRETA's synthetic models:
// <unk>, <s>, </s>, the 256 <0xXX> byte tokens, then pieces.
func minimalSPM(withTypes, withScores bool) []gguf.KV {
	tokens := []string{"<unk>", "<s>", "</s>"}
	for b := 0; b < 256; b++ {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
	}
	pieces := []string{"▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁he", "ll", "llo", "▁hello", "▁w", "▁wor", "▁world", "or", "▁worl"}
	tokens = append(tokens, pieces...)
	kv := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Array{Type: gguf.TypeString, Data: tokens}},
	}
	if withScores {
		scores := make([]float32, len(tokens))
		for i := 259; i < len(tokens); i++ {
			scores[i] = -float32(len(tokens) - i) // later pieces merge first
		}
		kv = append(kv, gguf.KV{Key: "tokenizer.ggml.scores", Value: gguf.Array{Type: gguf.TypeFloat32, Data: scores}})
	}
	if withTypes {
		types := make([]int32, len(tokens))
		for i := range types {
			switch {
			case i == 0:
				types[i] = typeUnknown
			case i < 3:
				types[i] = typeControl
			case i < 259:
				types[i] = typeByte
			default:
				types[i] = typeNormal
			}
		}
		kv = append(kv, gguf.KV{Key: "tokenizer.ggml.token_type", Value: gguf.Array{Type: gguf.TypeInt32, Data: types}})
	}
	return kv
}

func TestMinimalSPMVocab(t *testing.T) {
	for _, c := range []struct{ types, scores bool }{{true, true}, {false, true}, {true, false}, {false, false}} {
		tok, err := FromGGUF(buildGGUF(t, minimalSPM(c.types, c.scores)))
		if err != nil {
			t.Fatal(err)
		}
		if tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() || tok.NumTokens() != 277 {
			t.Fatalf("defaults: bos %d eos %d addBOS %v n %d", tok.BOS(), tok.EOS(), tok.AddBOS(), tok.NumTokens())
		}
		if c.types == (len(tok.Warnings()) > 0) {
			t.Errorf("types=%v: warnings %q", c.types, tok.Warnings())
		}
		for _, s := range []string{"hello world", "hello  world!\n", "Grüße, 世界 🦙", ""} {
			ids := tok.Encode(s, true, false)
			if ids[0] != 1 {
				t.Errorf("no BOS: %v", ids)
			}
			if got := tok.Decode(ids); got != s {
				t.Errorf("types=%v scores=%v: Decode(Encode(%q)) = %q (ids %v)", c.types, c.scores, s, got, ids)
			}
		}
		if c.scores {
			if got, want := tok.Encode("hello world", false, false), []int32{271, 274}; !slices.Equal(got, want) {
				t.Errorf("merges by score: %v, want %v", got, want)
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	base := minimalSPM(true, true)
	with := func(key string, v any) []gguf.KV {
		var kv []gguf.KV
		for _, e := range base {
			if e.Key == key {
				if v == nil {
					continue
				}
				e.Value = v
			}
			kv = append(kv, e)
		}
		return kv
	}
	for _, c := range []struct {
		kv   []gguf.KV
		want string
	}{
		{with("tokenizer.ggml.model", nil), "no tokenizer.ggml.model"},
		{with("tokenizer.ggml.model", "bert"), `"bert" is not supported`},
		{with("tokenizer.ggml.tokens", nil), "no tokenizer.ggml.tokens"},
		{with("tokenizer.ggml.model", "gpt2"), "no tokenizer.ggml.merges"},
		{with("tokenizer.ggml.tokens", gguf.Array{Type: gguf.TypeString, Data: []string{"a", "b", "a"}}), "duplicate token"},
		{with("tokenizer.ggml.scores", gguf.Array{Type: gguf.TypeFloat32, Data: []float32{1}}), "scores has 1 entries"},
		{append(with("tokenizer.ggml.tokens", gguf.Array{Type: gguf.TypeString, Data: []string{"a"}}),
			gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: true}), "no BOS token"},
		{with("tokenizer.ggml.model", int32(3)), "expected string"},
	} {
		_, err := FromGGUF(buildGGUF(t, c.kv))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want error containing %q, got %v", c.want, err)
		}
	}
}

func TestUnknownPreWarns(t *testing.T) {
	tok := withMetadata(t, "vocab/ggml-vocab-llama-bpe.gguf", map[string]any{"tokenizer.ggml.pre": "no-such-pre"})
	w := tok.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], `"no-such-pre" is not supported`) {
		t.Fatalf("warnings %q", w)
	}
	if tok.Pre() != "no-such-pre" || tok.AddBOS() {
		t.Errorf("pre %q addBOS %v", tok.Pre(), tok.AddBOS())
	}
	tok = withMetadata(t, "vocab/ggml-vocab-llama-bpe.gguf", map[string]any{"tokenizer.ggml.pre": nil})
	if w := tok.Warnings(); len(w) != 1 || !strings.Contains(w[0], "missing") {
		t.Fatalf("missing pre: warnings %q", w)
	}
	// add_bos_token overrides the per-pre default.
	tok = withMetadata(t, "vocab/ggml-vocab-llama-bpe.gguf", map[string]any{"tokenizer.ggml.add_bos_token": false})
	if tok.AddBOS() || slices.Contains(tok.Encode("hi", true, false), 128000) {
		t.Error("add_bos_token=false not honoured")
	}
}
