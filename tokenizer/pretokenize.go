package tokenizer

import "unicode/utf8"

// Byte-level BPE pre-tokenizers: they cut text into words before merging.
// Each splitter works on code points (cpText) and refines a list of chunk
// lengths, counted in code points, exactly as llama.cpp's
// unicode_regex_split passes "offsets" from one regex to the next.

// preKind selects the splitting rule set, from tokenizer.ggml.pre.
type preKind int

const (
	preDefault preKind = iota // llama.cpp LLAMA_VOCAB_PRE_TYPE_DEFAULT
	preLlama3                 // llama-bpe and the other Llama-3-regex vocabularies
	preQwen2                  // qwen2 (Qwen2, Qwen2.5, Qwen3): Llama 3's with digits one at a time
	preGPT2                   // gpt-2 and friends
)

// cpText is a string decoded into code points with their class flags.
type cpText struct {
	s     string
	cpts  []rune
	flags []cpFlags
	off   []int32 // byte offset of each code point; off[len(cpts)] = len(s)
}

// newCPText decodes s, which must already be normalized (normalizeUTF8), so
// every byte belongs to a code point that decodeLenient accepts.
func newCPText(s string) *cpText {
	t := &cpText{s: s}
	n := utf8.RuneCountInString(s) // exact for valid text, a fine guess otherwise
	t.cpts = make([]rune, 0, n)
	t.flags = make([]cpFlags, 0, n)
	t.off = make([]int32, 0, n+1)
	for i := 0; i < len(s); {
		var r rune
		var size int
		if c := s[i]; c < 0x80 {
			r, size = rune(c), 1
		} else {
			var ok bool
			r, size, ok = decodeLenient(s, i)
			if !ok { // not reached for normalized text; stay total anyway
				r, size = utf8.RuneError, 1
			}
		}
		t.cpts = append(t.cpts, r)
		t.flags = append(t.flags, flagsOf(r))
		t.off = append(t.off, int32(i))
		i += size
	}
	t.off = append(t.off, int32(len(s)))
	return t
}

// words turns chunk lengths into substrings of the text.
func (t *cpText) words(lens []int, out []string) []string {
	start := 0
	for _, n := range lens {
		out = append(out, t.s[t.off[start]:t.off[start+n]])
		start += n
	}
	return out
}

// outOfRange stands for "no code point": a position outside the chunk.
const outOfRange rune = -1

// chunk gives bounded access to one chunk [ini, end) of a cpText, the way
// llama.cpp's _get_cpt and _get_flags do: out-of-chunk positions read as
// outOfRange with zero flags.
type chunk struct {
	t        *cpText
	ini, end int
	prevEnd  int
	out      []int
}

func (c *chunk) cpt(pos int) rune {
	if pos >= c.ini && pos < c.end {
		return c.t.cpts[pos]
	}
	return outOfRange
}

func (c *chunk) flags(pos int) cpFlags {
	if pos >= c.ini && pos < c.end {
		return c.t.flags[pos]
	}
	return 0
}

// add ends the current word at end and returns its length.
func (c *chunk) add(end int) int {
	n := end - c.prevEnd
	if n > 0 {
		c.out = append(c.out, n)
	}
	c.prevEnd = end
	return n
}

const wordClass = fWhitespace | fLetter | fNumber

func asciiLower(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + ('a' - 'A')
	}
	return r
}

// contraction reports the length of 's 't 're 've 'm 'll 'd at pos (0 if
// none); caseFold makes the letters case-insensitive as in Llama 3's
// (?i:...). llama.cpp folds with its Unicode lowercase table, under which
// only ASCII capitals map onto these letters.
func (c *chunk) contraction(pos int, caseFold bool) int {
	if c.cpt(pos) != '\'' || pos+1 >= c.end {
		return 0
	}
	low := func(r rune) rune {
		if caseFold {
			return asciiLower(r)
		}
		return r
	}
	n1 := low(c.cpt(pos + 1))
	if n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd' {
		return 2
	}
	if pos+2 < c.end {
		n2 := low(c.cpt(pos + 2))
		if (n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l') {
			return 3
		}
	}
	return 0
}

// splitLlama3 implements, by hand since Go's regexp has no lookahead,
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// following llama.cpp's unicode_regex_split_custom_llama3 step for step.
// Text that no alternative matches becomes a one-code-point word. With
// maxDigits 1 it is Qwen2's regex, whose only difference is \p{N} for
// \p{N}{1,3} (unicode_regex_split_custom_qwen2).
func splitLlama3(t *cpText, offsets []int, maxDigits int) []int {
	out := make([]int, 0, len(offsets)+len(t.cpts)/3)
	start := 0
	for _, n := range offsets {
		c := chunk{t: t, ini: start, end: start + n, prevEnd: start, out: out}
		start += n
		for pos := c.ini; pos < c.end; {
			cp := c.cpt(pos)
			fl := c.flags(pos)

			// (?i:'s|'t|'re|'ve|'m|'ll|'d)
			if k := c.contraction(pos, true); k > 0 {
				pos += c.add(pos + k)
				continue
			}

			// [^\r\n\p{L}\p{N}]?\p{L}+
			if !(cp == '\r' || cp == '\n' || fl&fNumber != 0) {
				if fl&fLetter != 0 || c.flags(pos+1)&fLetter != 0 {
					pos++
					for c.flags(pos)&fLetter != 0 {
						pos++
					}
					c.add(pos)
					continue
				}
			}

			// \p{N}{1,3}
			if fl&fNumber != 0 {
				ini := pos
				for c.flags(pos)&fNumber != 0 {
					pos++
					if pos-ini >= maxDigits {
						c.add(pos)
						ini = pos
					}
				}
				c.add(pos)
				continue
			}

			// " ?[^\s\p{L}\p{N}]+[\r\n]*". llama.cpp tests the first class
			// on the code point after an optional space but requires the
			// current one to exist; a lone trailing space ends up here as a
			// one-space word, which is also what \s+(?!\S) would give.
			fl2 := fl
			if cp == ' ' {
				fl2 = c.flags(pos + 1)
			}
			if fl2&wordClass == 0 && fl != 0 {
				if cp == ' ' {
					pos++
				}
				for fl2&wordClass == 0 && fl2 != 0 {
					pos++
					fl2 = c.flags(pos)
				}
				for r := c.cpt(pos); r == '\r' || r == '\n'; r = c.cpt(pos) {
					pos++
				}
				c.add(pos)
				continue
			}

			nws, lastNL := 0, 0
			for c.flags(pos+nws)&fWhitespace != 0 {
				if r := c.cpt(pos + nws); r == '\r' || r == '\n' {
					lastNL = pos + nws + 1
				}
				nws++
			}
			// \s*[\r\n]+
			if lastNL > 0 {
				pos = lastNL
				c.add(pos)
				continue
			}
			// \s+(?!\S): leave the last space to the word that follows.
			if nws > 1 && c.cpt(pos+nws) != outOfRange {
				pos += nws - 1
				c.add(pos)
				continue
			}
			// \s+
			if nws > 0 {
				pos += nws
				c.add(pos)
				continue
			}
			pos++
			c.add(pos)
		}
		out = c.out
	}
	return out
}

// splitGPT2 implements 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// following llama.cpp's unicode_regex_split_custom_gpt2.
func splitGPT2(t *cpText, offsets []int) []int {
	out := make([]int, 0, len(offsets)+len(t.cpts)/3)
	start := 0
	for _, n := range offsets {
		c := chunk{t: t, ini: start, end: start + n, prevEnd: start, out: out}
		start += n
		for pos := c.ini; pos < c.end; {
			cp := c.cpt(pos)
			fl := c.flags(pos)

			if k := c.contraction(pos, false); k > 0 {
				pos += c.add(pos + k)
				continue
			}

			fl2 := fl
			if cp == ' ' {
				fl2 = c.flags(pos + 1)
			}
			// ?\p{L}+
			if fl2&fLetter != 0 {
				if cp == ' ' {
					pos++
				}
				for fl2&fLetter != 0 {
					pos++
					fl2 = c.flags(pos)
				}
				c.add(pos)
				continue
			}
			// ?\p{N}+
			if fl2&fNumber != 0 {
				if cp == ' ' {
					pos++
				}
				for fl2&fNumber != 0 {
					pos++
					fl2 = c.flags(pos)
				}
				c.add(pos)
				continue
			}
			// ?[^\s\p{L}\p{N}]+
			if fl2&wordClass == 0 && fl2 != 0 {
				if cp == ' ' {
					pos++
				}
				for fl2&wordClass == 0 && fl2 != 0 {
					pos++
					fl2 = c.flags(pos)
				}
				c.add(pos)
				continue
			}

			nws := 0
			for c.flags(pos+nws)&fWhitespace != 0 {
				nws++
			}
			if nws > 1 && c.cpt(pos+nws) != outOfRange {
				pos += nws - 1
				c.add(pos)
				continue
			}
			if nws > 0 {
				pos += nws
				c.add(pos)
				continue
			}
			pos++
			c.add(pos)
		}
		out = c.out
	}
	return out
}

// splitRuns refines each chunk into maximal runs of code points that
// satisfy in, and the gaps between them: what std::regex_iterator does in
// llama.cpp for a pattern of the form [class]+.
func splitRuns(t *cpText, offsets []int, in func(r rune, f cpFlags) bool) []int {
	out := make([]int, 0, len(offsets))
	start := 0
	for _, n := range offsets {
		end := start + n
		runStart := start
		for pos := start; pos < end; {
			if !in(t.cpts[pos], t.flags[pos]) {
				pos++
				continue
			}
			if pos > runStart {
				out = append(out, pos-runStart)
			}
			m := pos
			for pos < end && in(t.cpts[pos], t.flags[pos]) {
				pos++
			}
			out = append(out, pos-m)
			runStart = pos
		}
		if end > runStart {
			out = append(out, end-runStart)
		}
		start = end
	}
	return out
}

// splitTriples refines each chunk by non-overlapping matches of
// [0-9][0-9][0-9], scanning left to right.
func splitTriples(t *cpText, offsets []int) []int {
	out := make([]int, 0, len(offsets))
	start := 0
	isDigit := func(pos int) bool { return t.cpts[pos] >= '0' && t.cpts[pos] <= '9' }
	for _, n := range offsets {
		end := start + n
		gap := start
		for pos := start; pos+3 <= end; {
			if isDigit(pos) && isDigit(pos+1) && isDigit(pos+2) {
				if pos > gap {
					out = append(out, pos-gap)
				}
				out = append(out, 3)
				pos += 3
				gap = pos
				continue
			}
			pos++
		}
		if end > gap {
			out = append(out, end-gap)
		}
		start = end
	}
	return out
}

// inDefaultPunct is the class [\p{P}\$\+<=>\^~\|] of llama.cpp's default
// BPE pre-tokenizer. Non-ASCII whitespace never counts, as in llama.cpp's
// collapsed-text matching.
func inDefaultPunct(r rune, f cpFlags) bool {
	if r < 0x80 {
		switch r {
		case '$', '+', '<', '=', '>', '^', '~', '|':
			return true
		}
		return f&fPunct != 0
	}
	return f&fWhitespace == 0 && f&fPunct != 0
}

func inNumber(_ rune, f cpFlags) bool { return f&fNumber != 0 && f&fWhitespace == 0 }

// pretokenize splits normalized text into words for the given rule set.
func pretokenize(kind preKind, text string, out []string) []string {
	if text == "" {
		return out
	}
	t := newCPText(text)
	offsets := []int{len(t.cpts)}
	switch kind {
	case preLlama3:
		offsets = splitLlama3(t, offsets, 3)
	case preQwen2:
		offsets = splitLlama3(t, offsets, 1)
	case preGPT2:
		offsets = splitGPT2(t, offsets)
	default:
		// llama.cpp's default: four regexes applied in turn, each one
		// refining the chunks the previous one produced.
		offsets = splitRuns(t, offsets, inDefaultPunct)
		offsets = splitGPT2(t, offsets)
		offsets = splitRuns(t, offsets, inNumber)
		offsets = splitTriples(t, offsets)
	}
	return t.words(offsets, out)
}
