package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"greta/gguf"
)

// Byte-level BPE (tokenizer.ggml.model = gpt2). Each byte of a word is
// first mapped to a printable character (GPT-2's bytes_to_unicode), so
// token texts are strings over a 256-character alphabet. Merges then join
// adjacent symbols, lowest rank first, as llama.cpp's llm_tokenizer_bpe.

// byteToRune is GPT-2's bytes_to_unicode: printable Latin-1 bytes map to
// themselves, the other 68 to U+0100 onwards in byte order.
var byteToRune [256]rune

// runeToByte inverts byteToRune for runes below 0x200 (-1: not a byte).
var runeToByte [0x200]int16

func init() {
	for i := range runeToByte {
		runeToByte[i] = -1
	}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = int16(b)
	}
}

// byteEncode maps raw bytes to their byte-level characters.
func byteEncode(dst []byte, word string) []byte {
	for i := 0; i < len(word); i++ {
		dst = utf8.AppendRune(dst, byteToRune[word[i]])
	}
	return dst
}

// bpeMerge is one merge rule: its rank (lower merges first) and the token
// id of the merged symbol.
type bpeMerge struct {
	rank   int32
	result int32
}

func pairKey(left, right int32) uint64 { return uint64(uint32(left))<<32 | uint64(uint32(right)) }

// loadMerges builds the merge table from "left right" strings, rank = index.
// Like llama.cpp, it splits at the first space after the first byte, and a
// pair seen twice keeps its first (lowest) rank.
//
// A merge must name two tokens of the vocabulary whose concatenation is a
// token too; llama.cpp skips a malformed merge silently and a merge whose
// result is no token drops bytes from the text, so both are refused here
// (real vocabularies, Llama 3's 280147 merges among them, have none).
// Then every byte must have its byte-level token, or a text holding that
// byte could not be encoded: with none of them, "Once upon a time" became
// only BOS. The 13 bytes that never occur in valid UTF-8 (C0, C1, F5..FF)
// are a warning instead, as a vocabulary may leave them out.
func (t *Tokenizer) loadMerges(merges []string) error {
	t.merges = make(map[uint64]bpeMerge, len(merges))
	var buf []byte
	for i, m := range merges {
		bad := func(why string) error {
			return fmt.Errorf("tokenizer.ggml.merges[%d] = %q: %s", i, gguf.Clip(m), why)
		}
		sp := -1
		if len(m) > 1 {
			if k := strings.IndexByte(m[1:], ' '); k >= 0 {
				sp = k + 1
			}
		}
		if sp < 0 {
			return bad(`expected "LEFT RIGHT", two tokens separated by a space`)
		}
		left, right := m[:sp], m[sp+1:]
		if right == "" {
			return bad("the right-hand token is empty")
		}
		l, ok := t.toID[left]
		if !ok {
			return bad(fmt.Sprintf("%q is not a token of the vocabulary", gguf.Clip(left)))
		}
		r, ok := t.toID[right]
		if !ok {
			return bad(fmt.Sprintf("%q is not a token of the vocabulary", gguf.Clip(right)))
		}
		buf = append(append(buf[:0], left...), right...)
		res, ok := t.toID[string(buf)]
		if !ok {
			return bad(fmt.Sprintf("the merged text %q is not a token of the vocabulary", gguf.Clip(string(buf))))
		}
		key := pairKey(l, r)
		if _, seen := t.merges[key]; seen {
			continue
		}
		t.merges[key] = bpeMerge{rank: int32(i), result: res}
	}
	var missing []string
	for b := 0; b < 256; b++ {
		s := string(byteToRune[b])
		id, ok := t.toID[s]
		if !ok {
			if utf8Byte(byte(b)) {
				return fmt.Errorf("gpt2 vocabulary lacks the byte-level token %q for byte 0x%02X: text containing that byte cannot be encoded", s, b)
			}
			id = -1
			missing = append(missing, fmt.Sprintf("0x%02X", b))
		}
		t.byteSym[b] = id
	}
	if len(missing) > 0 {
		t.warn(fmt.Sprintf("gpt2 vocabulary lacks the byte-level tokens of bytes %s, which occur only in invalid UTF-8: such bytes are dropped from the text", strings.Join(missing, " ")))
	}
	return nil
}

// utf8Byte reports whether b can occur in valid UTF-8.
func utf8Byte(b byte) bool { return b != 0xC0 && b != 0xC1 && b < 0xF5 }

// bpeSym is one symbol of a word being merged: a run of the word's raw
// bytes [start, end) with its symbol id (-1: a text that no merge knows).
type bpeSym struct {
	id         int32
	start, end int32
	prev, next int32
}

// bpeBigram is a candidate merge of symbol left with its right neighbour.
type bpeBigram struct {
	rank        int32
	left, right int32
	lid, rid    int32 // ids when queued; stale once either symbol changed
	result      int32
}

// bigramHeap is a min-heap on (rank, left): llama.cpp's llm_bigram_bpe order.
type bigramHeap []bpeBigram

func (h bigramHeap) less(i, j int) bool {
	return h[i].rank < h[j].rank || (h[i].rank == h[j].rank && h[i].left < h[j].left)
}

func (h *bigramHeap) push(b bpeBigram) {
	*h = append(*h, b)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *bigramHeap) pop() bpeBigram {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r < len(s) && s.less(r, m) {
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

// bpeWord appends the ids of one pre-tokenized word (raw bytes).
func (t *Tokenizer) bpeWord(word string, out []int32) []int32 {
	if ids, ok := t.cacheGet(word); ok {
		return append(out, ids...)
	}
	start := len(out)
	out = t.bpeWordUncached(word, out)
	t.cachePut(word, out[start:])
	return out
}

func (t *Tokenizer) bpeWordUncached(word string, out []int32) []int32 {
	var encBuf [128]byte
	enc := byteEncode(encBuf[:0], word)
	// llama.cpp's ignore_merges: a word that is a token is that token.
	if t.ignoreMerges {
		if id, ok := t.toID[string(enc)]; ok {
			return append(out, id)
		}
	}
	syms := make([]bpeSym, len(word))
	for i := range syms {
		syms[i] = bpeSym{id: t.byteSym[word[i]], start: int32(i), end: int32(i + 1), prev: int32(i - 1), next: int32(i + 1)}
	}
	syms[len(syms)-1].next = -1

	var h bigramHeap
	try := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		a, b := syms[l].id, syms[r].id
		if a < 0 || b < 0 {
			return
		}
		m, ok := t.merges[pairKey(a, b)]
		if !ok {
			return
		}
		h.push(bpeBigram{rank: m.rank, left: l, right: r, lid: a, rid: b, result: m.result})
	}
	for i := 1; i < len(syms); i++ {
		try(int32(i-1), int32(i))
	}
	for len(h) > 0 {
		bg := h.pop()
		ls, rs := &syms[bg.left], &syms[bg.right]
		// Stale: a symbol was merged away (end == start) or grew since.
		if ls.end == ls.start || rs.end == rs.start || ls.id != bg.lid || rs.id != bg.rid || ls.next != bg.right {
			continue
		}
		ls.end = rs.end
		ls.id = bg.result
		rs.start, rs.end = 0, 0
		ls.next = rs.next
		if rs.next >= 0 {
			syms[rs.next].prev = bg.left
		}
		try(ls.prev, bg.left)
		try(bg.left, ls.next)
	}

	for i := int32(0); i >= 0; i = syms[i].next {
		s := syms[i]
		if s.id >= 0 && int(s.id) < len(t.tokens) {
			out = append(out, s.id)
			continue
		}
		// Not a token: a byte that occurs only in invalid UTF-8 and whose
		// byte-level token the vocabulary lacks (loadMerges refuses every
		// other gap). llama.cpp then looks up each byte of the byte-level
		// text as a one-byte string and drops what it does not find.
		text := string(byteEncode(nil, word[s.start:s.end]))
		for j := 0; j < len(text); j++ {
			if id, ok := t.toID[text[j:j+1]]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// cacheGet and cachePut memoize words. Only short words are kept, and the
// map is dropped when it grows past its cap, so memory stays bounded.
const (
	cacheMaxWord    = 64
	cacheMaxEntries = 1 << 17
)

func (t *Tokenizer) cacheGet(word string) ([]int32, bool) {
	if len(word) > cacheMaxWord {
		return nil, false
	}
	t.cacheMu.RLock()
	ids, ok := t.cache[word]
	t.cacheMu.RUnlock()
	return ids, ok
}

func (t *Tokenizer) cachePut(word string, ids []int32) {
	if len(word) > cacheMaxWord {
		return
	}
	v := append([]int32(nil), ids...)
	t.cacheMu.Lock()
	if len(t.cache) >= cacheMaxEntries {
		t.cache = make(map[string][]int32)
	}
	t.cache[strings.Clone(word)] = v
	t.cacheMu.Unlock()
}
