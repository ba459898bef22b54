package grammar

import (
	"bytes"
	"slices"

	"greta/tokenizer"
)

// Vocab is a vocabulary as the automaton sees it: the bytes each token adds
// to the output, in a trie. Build it once per model and share it: it is
// read-only and safe for concurrent use.
type Vocab struct {
	pieces [][]byte // nil: never allowed inside a value (control, unknown, EOG)
	eog    []int32  // allowed once the value is complete
	nodes  []trieNode
	toks   []int32 // token ids, grouped by the trie node they end at
	maxLen int     // longest piece, bytes
	// clamp bounds how far one token can move an item or member count: the
	// most commas in a piece, plus two. Counts further than this from a
	// bound are the same state as far as a mask is concerned.
	clamp int32
}

// trieNode is a node of the token trie, stored in depth-first preorder: the
// node's subtree is nodes[i+1:end]. The node stands for the bytes on the
// path from the root; b is the last one.
type trieNode struct {
	b     byte
	depth uint16
	end   int32
	tok0  int32 // toks[tok0:tok0+ntok] end here
	ntok  int32
}

// NewVocab builds a Vocab from each token's bytes (pieces[id]; "" for a
// token never allowed inside a value) and the end-of-generation ids, which
// are allowed only once the value is complete.
func NewVocab(pieces []string, eog []int32) *Vocab {
	v := &Vocab{pieces: make([][]byte, len(pieces)), clamp: 2}
	for _, id := range eog {
		if id >= 0 && int(id) < len(pieces) && !slices.Contains(v.eog, id) {
			v.eog = append(v.eog, id)
		}
	}
	var ids []int32
	for id, p := range pieces {
		if p == "" || slices.Contains(v.eog, int32(id)) {
			continue
		}
		v.pieces[id] = []byte(p)
		ids = append(ids, int32(id))
		v.maxLen = max(v.maxLen, len(p))
		v.clamp = max(v.clamp, int32(bytes.Count(v.pieces[id], []byte{','}))+2)
	}
	slices.SortStableFunc(ids, func(a, b int32) int { return bytes.Compare(v.pieces[a], v.pieces[b]) })
	v.toks = ids
	var path []int32 // node index per depth of the current prefix
	var prev []byte
	for i, id := range ids {
		p := v.pieces[id]
		l := 0
		for l < len(prev) && l < len(p) && prev[l] == p[l] {
			l++
		}
		for _, k := range path[l:] {
			v.nodes[k].end = int32(len(v.nodes))
		}
		path = path[:l]
		for d := l; d < len(p); d++ {
			path = append(path, int32(len(v.nodes)))
			v.nodes = append(v.nodes, trieNode{b: p[d], depth: uint16(d + 1), tok0: -1})
		}
		last := &v.nodes[path[len(p)-1]]
		if last.tok0 < 0 {
			last.tok0 = int32(i)
		}
		last.ntok++
		prev = p
	}
	for _, k := range path {
		v.nodes[k].end = int32(len(v.nodes))
	}
	return v
}

// FromTokenizer builds the Vocab of a tokenizer: each token's bytes as the
// engine's stream decoder emits them (byte-level BPE characters mapped back
// to bytes, SPM's ▁ as a space, byte tokens as their byte); control and
// unknown tokens are never allowed, end-of-generation tokens only at the
// end.
func FromTokenizer(t *tokenizer.Tokenizer) *Vocab {
	n := t.NumTokens()
	pieces := make([]string, n)
	var eog []int32
	for id := range int32(n) {
		if t.IsEOG(id) {
			eog = append(eog, id)
			continue
		}
		if t.IsControl(id) {
			continue
		}
		p := t.Piece(id)
		// Decode of one token hides control and unknown tokens (and strips
		// a leading space from SPM pieces, so a lone " " decodes to "").
		if t.Decode([]int32{id}) == "" && p != " " {
			continue
		}
		pieces[id] = p
	}
	return NewVocab(pieces, eog)
}

// NumTokens is the vocabulary size.
func (v *Vocab) NumTokens() int { return len(v.pieces) }

// TrieNodes is the number of nodes of the token trie (what a mask computed
// from scratch walks, at most).
func (v *Vocab) TrieNodes() int { return len(v.nodes) }
