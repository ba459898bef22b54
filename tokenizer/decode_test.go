package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// streamAll feeds ids through a StreamDecoder, checking that every chunk
// is valid UTF-8, and returns the joined text.
func streamAll(t *testing.T, tok *Tokenizer, ids []int32) string {
	t.Helper()
	d := tok.NewStreamDecoder()
	var b strings.Builder
	for _, id := range ids {
		s := d.Add(id)
		if !utf8.ValidString(s) {
			t.Fatalf("stream chunk %q after id %d is not valid UTF-8", s, id)
		}
		b.WriteString(s)
	}
	s := d.Flush()
	if !utf8.ValidString(s) {
		t.Fatalf("flush %q is not valid UTF-8", s)
	}
	b.WriteString(s)
	return b.String()
}

// TestRoundTripSuites: every llama.cpp test text decodes back to itself,
// in one piece and streamed (the stream keeps SPM's dummy-prefix space).
func TestRoundTripSuites(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf"} {
		tok := loadShared(t, "vocab/"+name)
		for _, c := range readVocabCases(t, sharedPath(t, "vocab/"+name)) {
			if !utf8.ValidString(c.text) {
				continue
			}
			ids := tok.Encode(c.text, true, false)
			if got := tok.Decode(ids); got != c.text {
				t.Errorf("%s: Decode(Encode(%q)) = %q", name, c.text, got)
			}
			want := c.text
			if tok.Model() == "llama" && c.text != "" {
				want = " " + want
			}
			if got := streamAll(t, tok, ids); got != want {
				t.Errorf("%s: streamed %q, want %q", name, got, want)
			}
		}
	}
}

// TestStories260K: the 512-token SPM vocabulary reproduces llama.cpp's
// prompt tokens and round-trips its prompts.
func TestStories260K(t *testing.T) {
	tok := loadShared(t, "models/stories260K.gguf")
	if tok.NumTokens() != 512 || tok.Model() != "llama" {
		t.Fatalf("stories260K: %d tokens, model %q", tok.NumTokens(), tok.Model())
	}
	if got, want := tok.Encode("Once upon a time", true, true), []int32{1, 403, 407, 261, 378}; !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v (llama.cpp)", got, want)
	}
	for _, p := range []string{
		"Once upon a time",
		"Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
		"One day, Tom said: \"Can I have the red ball?\" His mom smiled and said yes!\n\nThe end.",
		"  two leading spaces, a tab\tand ünïcödé 🦙 that needs byte fallback",
	} {
		ids := tok.Encode(p, true, false)
		if got := tok.Decode(ids); got != p {
			t.Errorf("Decode(Encode(%q)) = %q (ids %v)", p, got, ids)
		}
	}
}

func TestPieces(t *testing.T) {
	spm := loadShared(t, "vocab/ggml-vocab-llama-spm.gguf")
	bpe := loadShared(t, "vocab/ggml-vocab-llama-bpe.gguf")
	for _, c := range []struct {
		tok  *Tokenizer
		id   int32
		want string
	}{
		{spm, 1, "<s>"}, {spm, 2, "</s>"}, {spm, 13, "\n"}, {spm, 29871, " "}, {spm, 15043, " Hello"},
		{spm, 3, "\x00"}, {spm, -1, ""}, {spm, 32000, ""},
		{bpe, 128000, "<|begin_of_text|>"}, {bpe, 220, " "}, {bpe, 198, "\n"}, {bpe, 9906, "Hello"},
		{bpe, 22691, " Hello"}, {bpe, 128256, ""},
	} {
		if got := c.tok.Piece(c.id); got != c.want {
			t.Errorf("%s Piece(%d) = %q, want %q", c.tok.Model(), c.id, got, c.want)
		}
	}
	// Decode leaves control tokens out; the stream can show them.
	ids := bpe.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", true, true)
	if got := bpe.Decode(ids); got != "user\n\nHi" {
		t.Errorf("Decode hides control tokens: got %q", got)
	}
	d := bpe.NewStreamDecoder()
	d.ShowSpecial = true
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(d.Add(id))
	}
	if got := b.String(); got != "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" {
		t.Errorf("ShowSpecial stream = %q", got)
	}
}

// TestStreamHoldsIncompleteUTF8: a character split over byte tokens
// appears only once complete; bytes that cannot complete become U+FFFD.
func TestStreamHoldsIncompleteUTF8(t *testing.T) {
	spm := loadShared(t, "vocab/ggml-vocab-llama-spm.gguf")
	byteTok := func(b byte) int32 { return spm.byteToken[b] }
	d := spm.NewStreamDecoder()
	llama := "🦙" // F0 9F A6 99
	for i := 0; i < 3; i++ {
		if s := d.Add(byteTok(llama[i])); s != "" {
			t.Fatalf("byte %d of 🦙 emitted %q early", i, s)
		}
	}
	if s := d.Add(byteTok(llama[3])); s != llama {
		t.Fatalf("completed 🦙: got %q", s)
	}
	// A stray continuation byte can never start a character.
	if s := d.Add(byteTok(0x80)); s != "\uFFFD" {
		t.Fatalf("stray continuation: got %q", s)
	}
	// A lead byte followed by text that cannot continue it.
	if s := d.Add(byteTok(0xE2)); s != "" {
		t.Fatalf("lead byte alone: got %q", s)
	}
	if s := d.Add(spm.Encode("a", false, false)[0]); s != "\uFFFD a" {
		t.Fatalf("broken sequence then text: got %q", s)
	}
	d.Add(byteTok(0xE2))
	if s := d.Flush(); s != "\uFFFD" {
		t.Fatalf("flush of an incomplete character: got %q", s)
	}
	if s := d.Flush(); s != "" {
		t.Fatalf("second flush: got %q", s)
	}

	// Byte-level BPE splits a character over tokens too.
	bpe := loadShared(t, "vocab/ggml-vocab-llama-bpe.gguf")
	text := "🚀 😶‍🌫️ 한국어 𝟙𝟚"
	ids := bpe.Encode(text, false, false)
	if got := streamAll(t, bpe, ids); got != text {
		t.Fatalf("BPE stream = %q, want %q", got, text)
	}
}

func TestEncodeSpecialHandling(t *testing.T) {
	bpe := loadShared(t, "vocab/ggml-vocab-llama-bpe.gguf")
	text := "<|eot_id|>"
	if got := bpe.Encode(text, false, true); !slices.Equal(got, []int32{128009}) {
		t.Errorf("parseSpecial: %v", got)
	}
	if got := bpe.Encode(text, false, false); slices.Contains(got, 128009) || bpe.Decode(got) != text {
		t.Errorf("without parseSpecial the marker must stay text: %v", got)
	}
	if got := bpe.Encode("", true, false); !slices.Equal(got, []int32{128000}) {
		t.Errorf("empty with addSpecial: %v", got)
	}
	spm := loadShared(t, "vocab/ggml-vocab-llama-spm.gguf")
	// After a special token SPM adds the dummy-prefix space again (llama.cpp).
	if got, want := spm.Encode("<s>Hello</s>Hello", false, true), []int32{1, 15043, 2, 15043}; !slices.Equal(got, want) {
		t.Errorf("SPM special fragments: %v, want %v", got, want)
	}
	if !spm.AddBOS() || spm.AddEOS() || spm.BOS() != 1 || spm.EOS() != 2 || spm.EOT() != -1 || !spm.IsEOG(2) || spm.IsEOG(1) {
		t.Errorf("SPM specials: bos %d eos %d eot %d addBOS %v", spm.BOS(), spm.EOS(), spm.EOT(), spm.AddBOS())
	}
	if !bpe.AddBOS() || bpe.EOT() != 128009 || !bpe.IsEOG(128001) || !bpe.IsEOG(128009) || bpe.IsEOG(128000) {
		t.Errorf("BPE specials: eot %d", bpe.EOT())
	}
	if bpe.Pre() != "llama-bpe" || len(bpe.Warnings()) != 0 {
		t.Errorf("pre %q warnings %q", bpe.Pre(), bpe.Warnings())
	}
}

// TestConcurrentEncode: one Tokenizer serves many goroutines (the word
// cache is shared); results match a serial run. Run with -race.
func TestConcurrentEncode(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf"} {
		tok := loadShared(t, "vocab/"+name)
		cases := readVocabCases(t, sharedPath(t, "vocab/"+name))
		done := make(chan error, 4)
		for g := 0; g < 4; g++ {
			go func() {
				for i := 0; i < 20; i++ {
					for _, c := range cases {
						if got := tok.Encode(c.text, false, false); !slices.Equal(got, c.want) {
							done <- fmt.Errorf("%s %q: %v", name, c.text, got)
							return
						}
					}
				}
				done <- nil
			}()
		}
		for g := 0; g < 4; g++ {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
}
