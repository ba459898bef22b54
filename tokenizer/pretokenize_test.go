package tokenizer

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The Llama-3 split rule, checked against Go's regexp. RE2 has no
// lookahead, so the reference handles the one alternative that needs it,
// \s+(?!\S), by hand: reached only when no earlier alternative matched, a
// whitespace run that ends the text is taken whole, and one followed by a
// non-space is taken less its last character (all of it if that leaves
// nothing, which is what the final \s+ does). \s is spelled out as the
// Unicode White_Space set llama.cpp uses, and (?i:...) as explicit
// [sS]-style classes: llama.cpp folds case with a table under which only
// ASCII capitals fold onto these letters (so 'ſ, with the long s that
// Unicode case folding would match, is no contraction).
const (
	wsBody = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`
	ws     = `[` + wsBody + `]`
)

var llama3Reference = regexp.MustCompile(`^(?:` +
	`('(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))` + // 1
	`|([^\r\n\p{L}\p{N}]?\p{L}+)` + // 2
	`|(\p{N}{1,3})` + // 3
	`|( ?[^` + wsBody + `\p{L}\p{N}]+[\r\n]*)` + // 4
	`|(` + ws + `*[\r\n]+)` + // 5
	`|(` + ws + `+$)` + // 6: \s+(?!\S) at the end of the text
	`|(` + ws + `+)` + // 7: \s+(?!\S) before a non-space, or \s+
	`)`)

func referenceSplitLlama3(s string) []string {
	var out []string
	for len(s) > 0 {
		m := llama3Reference.FindStringSubmatchIndex(s)
		n := 0
		switch {
		case m == nil:
			_, n = firstRune(s)
		case m[14] >= 0: // group 7
			n = m[15]
			if k := lastRuneStart(s[:n]); k > 0 {
				n = k
			}
		default:
			n = m[1]
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

func firstRune(s string) (rune, int) {
	for i, r := range s {
		if i > 0 {
			return r, i
		}
	}
	return 0, len(s)
}

func lastRuneStart(s string) int {
	k := len(s) - 1
	for k > 0 && s[k]&0xC0 == 0x80 {
		k--
	}
	return k
}

var splitAlphabet = []string{
	"a", "B", "z", "é", "ж", "中", "ſ", "1", "٣", "²", "Ⅻ", " ", "  ", "\t", "\n", "\r", "\v", "\u00a0",
	"\u3000", "\u2009", "\u0085", "'", "s", "S", "t", "re", "RE", "ve", "m", "ll", "Ll", "d", "!", "?", ".",
	"$", "🦙", "\u0301", "\u200b", "\x00", "\x1c", "-", "_", "😶‍🌫️",
}

func TestLlama3SplitMatchesRegex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(s string) {
		t.Helper()
		got := pretokenize(preLlama3, s, nil)
		want := referenceSplitLlama3(s)
		if !slices.Equal(got, want) {
			t.Fatalf("split %q:\n got %q\nwant %q", s, got, want)
		}
	}
	for _, s := range []string{"", "Hello world", "  Hello\n\n  world  ", "I'm", "IT'S", "'ſ", "333 4444",
		"a  b", "a \n b", "x\r\n\r\n  ", "  ", " ", "!!!\n\n", " !?", "\t\tx", "€5"} {
		check(s)
	}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for n := rng.IntN(14); n >= 0; n-- {
			b.WriteString(splitAlphabet[rng.IntN(len(splitAlphabet))])
		}
		check(b.String())
	}
}

// TestPretokenizeCoversText: every splitter partitions its input.
func TestPretokenizeCoversText(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, kind := range []preKind{preLlama3, preGPT2, preDefault} {
		for i := 0; i < 3000; i++ {
			var b strings.Builder
			for n := rng.IntN(20); n >= 0; n-- {
				b.WriteString(splitAlphabet[rng.IntN(len(splitAlphabet))])
			}
			s := b.String()
			words := pretokenize(kind, s, nil)
			if strings.Join(words, "") != s || slices.Contains(words, "") {
				t.Fatalf("kind %d: %q split into %q", kind, s, words)
			}
		}
	}
}
