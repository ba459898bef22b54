package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets. Seeds (run by plain go test) are a few awkward strings
// plus llama.cpp's suite texts when ../shared is present. Run one with
// e.g. go test ./tokenizer -run XXX -fuzz FuzzSPMRoundTrip -fuzztime 3m.

func addSeeds(f *testing.F) {
	for _, s := range []string{"", " ", "Hello world", "  x\n\n\t ", "I'm", "<s>", "<|eot_id|>", "🦙.cpp",
		"\xff\xfe", "\xe2\x96", "a\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "333333", "中文",
		"\u00a0\u3000\u2028", "e\u0301", strings.Repeat("ab ", 50)} {
		f.Add(s)
	}
	inp, err := os.ReadFile(filepath.Join(sharedDir, "vocab", "ggml-vocab-llama-bpe.gguf.inp"))
	if err == nil {
		for _, s := range strings.Split(string(inp), "\n__ggml_vocab_test__\n") {
			f.Add(s)
		}
	}
}

// checkStream feeds ids to a StreamDecoder and returns the joined output,
// failing if any chunk is not valid UTF-8.
func checkStream(t *testing.T, tok *Tokenizer, ids []int32) string {
	d := tok.NewStreamDecoder()
	var b strings.Builder
	for _, id := range ids {
		s := d.Add(id)
		if !utf8.ValidString(s) {
			t.Fatalf("stream emitted invalid UTF-8 %q", s)
		}
		b.WriteString(s)
	}
	b.WriteString(d.Flush())
	return b.String()
}

// FuzzSPMRoundTrip: valid UTF-8 without U+2581 (which SPM cannot tell
// from a space) decodes back to itself; the stream shows the dummy-prefix
// space. Invalid UTF-8 need not round-trip: llama.cpp groups bytes by
// their lead byte, so in "\xf0 00" the 4-byte lead swallows the three
// bytes of the ▁ that replaced the space, and they come back as "▁"
// (testdata/fuzz/FuzzSPMRoundTrip/0663b3cb58bea3c8). It must not panic.
func FuzzSPMRoundTrip(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		tok := loadShared(t, "vocab/ggml-vocab-llama-spm.gguf")
		ids := tok.Encode(s, false, false)
		for _, id := range ids {
			if id < 0 || int(id) >= tok.NumTokens() {
				t.Fatalf("id %d out of range", id)
			}
		}
		if utf8.ValidString(s) && !strings.Contains(s, spaceMarker) {
			if got := tok.Decode(ids); got != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, got)
			}
		}
		streamed := checkStream(t, tok, ids)
		if utf8.ValidString(s) && !strings.Contains(s, spaceMarker) && s != "" && streamed != " "+s {
			t.Fatalf("stream of %q = %q", s, streamed)
		}
		special := tok.Encode(s, true, true)
		if len(special) == 0 || special[0] != tok.BOS() {
			t.Fatalf("addSpecial: %v", special)
		}
	})
}

// FuzzBPERoundTrip: byte-level BPE round-trips valid UTF-8 exactly; other
// input comes back as llama.cpp reads it (undecodable bytes as U+FFFD).
func FuzzBPERoundTrip(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		tok := loadShared(t, "vocab/ggml-vocab-llama-bpe.gguf")
		ids := tok.Encode(s, false, false)
		want := normalizeUTF8(s)
		if got := tok.Decode(ids); got != want {
			t.Fatalf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
		if streamed := checkStream(t, tok, ids); utf8.ValidString(s) && streamed != s {
			t.Fatalf("stream of %q = %q", s, streamed)
		}
		// Cached and uncached encodings agree.
		if again := tok.Encode(s, false, false); !slices.Equal(again, ids) {
			t.Fatalf("second encoding differs: %v vs %v", again, ids)
		}
		special := tok.Encode(s, true, true)
		if len(special) == 0 || special[0] != tok.BOS() {
			t.Fatalf("addSpecial: %v", special)
		}
	})
}

// FuzzLlama3Split compares the hand-written split with the regexp
// reference (pretokenize_test.go) on any valid UTF-8 without the code
// points Go's regexp tables (Unicode 15.0) do not know.
func FuzzLlama3Split(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		for _, r := range s {
			if isUnicode151Letter(r) || isUnicode151Symbol(r) {
				return
			}
		}
		got := pretokenize(preLlama3, s, nil)
		want := referenceSplitLlama3(s)
		if !slices.Equal(got, want) {
			t.Fatalf("split %q:\n got %q\nwant %q", s, got, want)
		}
	})
}
