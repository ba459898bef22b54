package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"greta/gguf"
)

// SentencePiece-style BPE (tokenizer.ggml.model = llama), as llama.cpp's
// llm_tokenizer_spm: the text (spaces already replaced by ▁) starts as one
// symbol per UTF-8 character; the adjacent pair whose concatenation is the
// highest-scoring token merges first (ties: leftmost), until no pair is a
// token. Symbols that are not tokens fall back to <0xXX> byte tokens.

const spaceMarker = "▁" // U+2581, SentencePiece's visible space

// buildSPM prepares byte fallback and decides whether text may be cut into
// independent segments.
//
// A text must always encode to something that stands for it: a character
// that is no piece falls back to its bytes' <0xXX> tokens, and a byte
// without one to the unknown token. So a vocabulary whose byte fallback is
// incomplete must have an unknown token (typed unknown, or <unk>): where
// llama.cpp aborts, GRETA would otherwise drop the text or emit some
// ordinary token in its place. Incomplete byte fallback with an unknown
// token is what SentencePiece without byte_fallback does, and a warning.
func (t *Tokenizer) buildSPM() error {
	var missing int
	first := -1
	for b := 0; b < 256; b++ {
		t.byteToken[b] = -1
		if id, ok := t.toID[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteToken[b] = id
		} else if id, ok := t.toID[string([]byte{byte(b)})]; ok {
			// llama.cpp's byte_to_token falls back to the one-byte token.
			t.byteToken[b] = id
		} else {
			missing++
			if first < 0 {
				first = b
			}
		}
	}
	if missing > 0 {
		if t.unk < 0 || t.attrs[t.unk]&attrUnknown == 0 {
			what := "no unknown token"
			if t.unk >= 0 {
				what = fmt.Sprintf("its unknown token id %d (%q) is not of type unknown", t.unk, gguf.Clip(t.tokens[t.unk]))
			}
			return fmt.Errorf("llama (SPM) vocabulary cannot encode every text: %d bytes have no <0xXX> byte-fallback token (the first 0x%02X), and %s", missing, first, what)
		}
		t.warn(fmt.Sprintf("%d bytes have no <0xXX> byte-fallback token: text they are part of encodes as %q", missing, gguf.Clip(t.tokens[t.unk])))
	}
	// Segmenting: llama.cpp merges over a whole text fragment at once. A
	// cut just before a ▁ that follows some other character changes
	// nothing as long as no token could span it, that is, no token holds a
	// ▁ right after a character other than ▁. Then no pair across the cut
	// is ever a token, the merges on each side never interact, and each
	// side gives the same ids alone. The cut lets repeated words hit the
	// cache. Real SentencePiece vocabularies (Llama 2, TinyLlama) satisfy
	// the condition; one that does not is tokenized whole.
	t.spmSegments = true
	for _, s := range t.tokens {
		for k := 1; k < len(s); k++ {
			if strings.HasPrefix(s[k:], spaceMarker) && !strings.HasSuffix(s[:k], spaceMarker) {
				t.spmSegments = false
				return nil
			}
		}
	}
	return nil
}

// escapeSpaces replaces each ASCII space with ▁ (llama_escape_whitespace).
func escapeSpaces(s string) string { return strings.ReplaceAll(s, " ", spaceMarker) }

// spmEncode appends the ids of an escaped text fragment.
func (t *Tokenizer) spmEncode(text string, out []int32) []int32 {
	if !t.spmSegments {
		return t.spmSegment(text, out)
	}
	segStart := 0
	prevStart, prevEnd := -1, -1
	for i := 0; i < len(text); {
		n := min(utf8Len(text[i]), len(text)-i)
		if n == 3 && prevStart >= 0 && text[i:i+3] == spaceMarker && validNonMarker(text[prevStart:prevEnd]) {
			out = t.spmCached(text[segStart:i], out)
			segStart = i
		}
		prevStart, prevEnd = i, i+n
		i += n
	}
	return t.spmCached(text[segStart:], out)
}

// validNonMarker reports whether sym is one complete, valid UTF-8 character
// other than ▁: a character that no token can join to a following ▁.
func validNonMarker(sym string) bool {
	if sym == spaceMarker {
		return false
	}
	r, size := utf8.DecodeRuneInString(sym)
	return size == len(sym) && (r != utf8.RuneError || size > 1)
}

func (t *Tokenizer) spmCached(seg string, out []int32) []int32 {
	if seg == "" {
		return out
	}
	if ids, ok := t.cacheGet(seg); ok {
		return append(out, ids...)
	}
	start := len(out)
	out = t.spmSegment(seg, out)
	t.cachePut(seg, out[start:])
	return out
}

// spmSym is a run [start, end) of the text; end == start once merged away.
type spmSym struct {
	start, end int32
	prev, next int32
}

type spmBigram struct {
	score       float32
	left, right int32
	size        int32
}

// spmHeap is a max-heap on score, then min on left (llm_bigram_spm order).
// It repeats bpe.go's bigramHeap on purpose: one generic heap (a method
// constraint for the order) measured twice as slow on long words, as Go's
// generics call the method through a dictionary.
type spmHeap []spmBigram

func (h spmHeap) before(i, j int) bool {
	return h[i].score > h[j].score || (h[i].score == h[j].score && h[i].left < h[j].left)
}

func (h *spmHeap) push(b spmBigram) {
	*h = append(*h, b)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.before(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *spmHeap) pop() spmBigram {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.before(l, m) {
			m = l
		}
		if r < len(s) && s.before(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// spmSegment runs the merge loop over one piece of escaped text.
func (t *Tokenizer) spmSegment(text string, out []int32) []int32 {
	syms := make([]spmSym, 0, len(text))
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		k := int32(len(syms))
		syms = append(syms, spmSym{start: int32(off), end: int32(off + n), prev: k - 1, next: k + 1})
		off += n
	}
	if len(syms) == 0 {
		return out
	}
	syms[len(syms)-1].next = -1

	h := make(spmHeap, 0, len(syms))
	try := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start:syms[r].end]
		id, ok := t.toID[s]
		if !ok {
			return
		}
		h.push(spmBigram{score: t.scores[id], left: l, right: r, size: int32(len(s))})
	}
	for i := 1; i < len(syms); i++ {
		try(int32(i-1), int32(i))
	}
	for len(h) > 0 {
		bg := h.pop()
		ls, rs := &syms[bg.left], &syms[bg.right]
		ln, rn := ls.end-ls.start, rs.end-rs.start
		if ln == 0 || rn == 0 || ln+rn != bg.size {
			continue // one side merged since this pair was queued
		}
		ls.end = rs.end
		rs.end = rs.start
		ls.next = rs.next
		if rs.next >= 0 {
			syms[rs.next].prev = bg.left
		}
		try(ls.prev, bg.left)
		try(bg.left, ls.next)
	}

	for i := int32(0); i >= 0; i = syms[i].next {
		s := text[syms[i].start:syms[i].end]
		if id, ok := t.toID[s]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			if id := t.byteToken[s[j]]; id >= 0 {
				out = append(out, id)
			} else if t.unk >= 0 {
				// llama.cpp aborts here (std::out_of_range); a vocabulary
				// without byte tokens gets the unknown token instead.
				out = append(out, t.unk)
			}
		}
	}
	return out
}
