package tokenizer

import (
	"slices"
	"strings"
	"testing"

	"greta/gguf"
)

// gpt2Vocab is a small byte-level BPE vocabulary: BOS, the byte-level
// characters of the bytes for which keep is true, then extra tokens, and
// the given merges.
func gpt2Vocab(keep func(b int) bool, extra, merges []string) []gguf.KV {
	tokens := []string{"<|begin_of_text|>"}
	for b := 0; b < 256; b++ {
		if keep(b) {
			tokens = append(tokens, string(byteToRune[b]))
		}
	}
	tokens = append(tokens, extra...)
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "gpt2"},
		{Key: "tokenizer.ggml.pre", Value: "llama-bpe"},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Array{Type: gguf.TypeString, Data: tokens}},
		{Key: "tokenizer.ggml.merges", Value: gguf.Array{Type: gguf.TypeString, Data: merges}},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(0)},
	}
}

var (
	allBytes = func(int) bool { return true }
	noBytes  = func(int) bool { return false }
)

// A gpt2 vocabulary without byte-level tokens encoded "Once upon a time"
// as BOS alone; it is refused at load now, naming the first byte it lacks.
func TestBPEVocabMustEncodeEveryByte(t *testing.T) {
	words := []string{"Once", "Ġupon", "Ġa", "Ġtime"}
	_, err := FromGGUF(buildGGUF(t, gpt2Vocab(noBytes, words, nil)))
	if err == nil || !strings.Contains(err.Error(), `lacks the byte-level token "Ā" for byte 0x00`) {
		t.Fatalf("no byte tokens: %v", err)
	}
	_, err = FromGGUF(buildGGUF(t, gpt2Vocab(func(b int) bool { return b != 'e' }, nil, nil)))
	if err == nil || !strings.Contains(err.Error(), "for byte 0x65") {
		t.Fatalf("no 'e': %v", err)
	}
	// Bytes that valid UTF-8 never holds may be missing: a warning.
	tok, err := FromGGUF(buildGGUF(t, gpt2Vocab(func(b int) bool { return utf8Byte(byte(b)) }, nil, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if w := tok.Warnings(); len(w) == 0 || !strings.Contains(w[len(w)-1], "0xC0 0xC1 0xF5") {
		t.Errorf("warnings %q", w)
	}
	// With every byte, every text round-trips, merged or not.
	tok, err = FromGGUF(buildGGUF(t, gpt2Vocab(allBytes, []string{"On", "ce", "Once"}, []string{"O n", "c e", "On ce"})))
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode("Once upon a time", true, false)
	if len(ids) != 1+1+12 || ids[0] != 0 || ids[1] != int32(tok.toID["Once"]) {
		t.Errorf("ids %v", ids)
	}
	if got := tok.Decode(ids); got != "Once upon a time" {
		t.Errorf("decoded %q", got)
	}
}

func TestMalformedMergesRefused(t *testing.T) {
	extra := []string{"ab", "Ġb"}
	for _, c := range []struct{ merge, want string }{
		{"", `merges[1] = "": expected "LEFT RIGHT"`},
		{"ab", `merges[1] = "ab": expected "LEFT RIGHT"`},
		{"a ", "right-hand token is empty"},
		{"a b c", `"b c" is not a token`},
		{"x\x00 b", `"x\x00" is not a token`},
		{"b a", `merged text "ba" is not a token`},
		{strings.Repeat("q", 1<<20) + " a", "(1048578 bytes)"},
	} {
		_, err := FromGGUF(buildGGUF(t, gpt2Vocab(allBytes, extra, []string{"a b", c.merge})))
		if err == nil || !strings.Contains(err.Error(), c.want) || len(err.Error()) > 300 {
			t.Errorf("merge %.20q: %.300v, want %q", c.merge, err, c.want)
		}
	}
	if _, err := FromGGUF(buildGGUF(t, gpt2Vocab(allBytes, extra, []string{"a b", "Ġ b"}))); err != nil {
		t.Errorf("valid merges: %v", err)
	}
}

// An SPM vocabulary must encode any text: by byte fallback, or, where
// that is incomplete, to an unknown token.
func TestSPMWithoutByteFallback(t *testing.T) {
	noBytes := func(unkType int32) []gguf.KV {
		tokens := []string{"<unk>", "<s>", "</s>", "▁", "▁a", "a", "b"}
		types := []int32{unkType, typeControl, typeControl, typeNormal, typeNormal, typeNormal, typeNormal}
		return []gguf.KV{
			{Key: "tokenizer.ggml.model", Value: "llama"},
			{Key: "tokenizer.ggml.tokens", Value: gguf.Array{Type: gguf.TypeString, Data: tokens}},
			{Key: "tokenizer.ggml.token_type", Value: gguf.Array{Type: gguf.TypeInt32, Data: types}},
		}
	}
	_, err := FromGGUF(buildGGUF(t, noBytes(typeNormal)))
	if err == nil || !strings.Contains(err.Error(), `254 bytes have no <0xXX> byte-fallback token (the first 0x00), and its unknown token id 0 ("<unk>") is not of type unknown`) {
		t.Fatalf("no byte fallback, no unknown token: %v", err)
	}
	tok, err := FromGGUF(buildGGUF(t, noBytes(typeUnknown)))
	if err != nil {
		t.Fatal(err)
	}
	if w := tok.Warnings(); len(w) != 1 || !strings.Contains(w[0], `encodes as "<unk>"`) {
		t.Errorf("warnings %q", w)
	}
	if ids := tok.Encode("a c", false, false); !slices.Equal(ids, []int32{4, 3, 0}) {
		t.Errorf("ids %v, want ▁a ▁ <unk>", ids)
	}
	// Byte fallback complete: no warning, no unknown token needed.
	kv := minimalSPM(true, true)
	if tok, err := FromGGUF(buildGGUF(t, kv)); err != nil || len(tok.Warnings()) != 0 {
		t.Errorf("full byte fallback: %v %q", err, tok.Warnings())
	}
}
