package grammar

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
)

// A mask is computed by walking the token trie depth first against the
// automaton: a byte that no stack accepts cuts the whole subtree. The
// result is cached under a key of the state, in which counts are clamped
// to what one token can change (so a state deep inside an array of 100
// items and one of 50 items share a mask) and the length of a string being
// written is left out: the mask of a string state is computed with its
// length bounds off, and records for each token how many code points it
// adds to the string and whether it closes it; the bounds are applied when
// the mask is used. Outside free-form values the states are finite, so
// after a few requests every mask is a cache hit.

// entry is a cached mask.
type entry struct {
	allow []uint64 // bit per token id: allowed (EOG excluded)
	// For a mask in the middle of a string (strMode): code points each
	// allowed token adds to the string, and whether it closes it.
	cnt     []uint8
	closes  []uint64
	maxCnt  int32
	long    []int32 // allowed tokens with cnt >= longCnt, longest first
	closers []int32 // allowed closing tokens, shortest first

	mu  sync.Mutex
	fit [longCnt][]uint64 // fit[k]: allowed tokens with cnt <= k, made on first use
}

// within returns the allowed tokens that add at most k code points.
func (e *entry) within(k int32) []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fit[k] == nil {
		f := make([]uint64, len(e.allow))
		for w, word := range e.allow {
			for z := word; z != 0; z &= z - 1 {
				b := bits.TrailingZeros64(z)
				if int32(e.cnt[w<<6+b]) <= k {
					f[w] |= 1 << b
				}
			}
		}
		e.fit[k] = f
	}
	return e.fit[k]
}

// longCnt: below this much room left in a string, Mask checks every
// token's length; above, only the tokens in entry.long.
const longCnt = 16

func (e *entry) bytes() int {
	n := 8*len(e.allow) + len(e.cnt) + 8*len(e.closes) + 4*len(e.long) + 4*len(e.closers) + 128
	if e.cnt != nil {
		n += longCnt * 8 * len(e.allow) // e.fit, as it may grow
	}
	return n
}

// maxCacheBytes bounds the masks cached per grammar and vocabulary; past
// it the cache starts over.
const maxCacheBytes = 64 << 20

type vcache struct {
	mu     sync.Mutex
	m      map[string]*entry
	bytes  int
	misses int     // masks computed (a statistic for benchmarks)
	walk   []state // scratch states, one per trie depth
	cnt    []int32
	in     []bool
}

type cacheSet struct {
	mu sync.Mutex
	m  map[*Vocab]*vcache
}

func (g *Grammar) cache(v *Vocab) *vcache {
	g.caches.mu.Lock()
	defer g.caches.mu.Unlock()
	if g.caches.m == nil {
		g.caches.m = map[*Vocab]*vcache{}
	}
	c := g.caches.m[v]
	if c == nil {
		c = &vcache{m: map[string]*entry{}}
		c.walk = make([]state, v.maxLen+1)
		c.cnt = make([]int32, v.maxLen+1)
		c.in = make([]bool, v.maxLen+1)
		g.caches.m[v] = c
	}
	return c
}

// Constraint restricts one generation to the grammar's values. It has the
// method set of engine.Constraint. Not safe for concurrent use.
type Constraint struct {
	g               *Grammar
	v               *Vocab
	c               *vcache
	st, next, next2 state
	key             []byte
	saved           []float32
	finished        bool // an EOG token was accepted
}

// NewConstraint starts a generation of one value over vocabulary v.
func (g *Grammar) NewConstraint(v *Vocab) *Constraint {
	c := &Constraint{g: g, v: v, c: g.cache(v)}
	g.start(&c.st)
	return c
}

// Done reports whether the value is complete and nothing may follow.
func (c *Constraint) Done() bool { return c.finished || c.g.done(&c.st) }

// CanEnd reports whether the value is complete (an end-of-generation token
// is allowed next), though it might still grow (a top-level number).
func (c *Constraint) CanEnd() bool { return !c.finished && c.g.canEnd(&c.st) }

// Accept advances past token id, which must be one Mask allowed.
func (c *Constraint) Accept(id int32) error {
	if c.finished {
		return fmt.Errorf("grammar: token %d after the end of the value", id)
	}
	if id < 0 || int(id) >= len(c.v.pieces) {
		return fmt.Errorf("grammar: token %d out of the vocabulary", id)
	}
	p := c.v.pieces[id]
	if p == nil {
		for _, e := range c.v.eog {
			if e == id {
				if !c.g.canEnd(&c.st) {
					return fmt.Errorf("grammar: end of generation (token %d) before the value is complete", id)
				}
				c.finished = true
				return nil
			}
		}
		return fmt.Errorf("grammar: token %d is never allowed in a value", id)
	}
	return c.advance(id, p)
}

// advance feeds p byte by byte; the state changes only if all of p fits.
func (c *Constraint) advance(id int32, p []byte) error {
	cur, nxt := &c.next, &c.next2
	cur.copyFrom(&c.st)
	for _, b := range p {
		c.g.step(cur, b, nxt)
		if nxt.empty() {
			return fmt.Errorf("grammar: token %d (%q) does not fit the value here", id, p)
		}
		cur, nxt = nxt, cur
	}
	c.st.copyFrom(cur)
	return nil
}

// Mask sets the logits of every token that cannot come next to -Inf.
// End-of-generation tokens keep theirs only when the value is complete.
func (c *Constraint) Mask(logits []float32) {
	v := c.v
	c.saved = c.saved[:0]
	for _, id := range v.eog {
		if int(id) < len(logits) {
			c.saved = append(c.saved, logits[id])
		}
	}
	e, rem, need := c.lookup()
	n := min(len(logits), len(v.pieces))
	fill(logits[n:])
	if e.cnt != nil && rem < longCnt && rem < e.maxCnt {
		// near maxLength: the tokens that fit in rem more code points
		applyBits(logits[:n], e.within(rem))
	} else {
		applyBits(logits[:n], e.allow)
	}
	if e.cnt != nil {
		if rem >= longCnt {
			// tokens too long for the room left, longest first
			for _, t := range e.long {
				if int32(e.cnt[t]) <= rem {
					break
				}
				logits[t] = ninf
			}
		}
		// closing tokens too short for minLength, shortest first
		for _, t := range e.closers {
			if int32(e.cnt[t]) >= need {
				break
			}
			logits[t] = ninf
		}
	}
	if c.CanEnd() {
		k := 0
		for _, id := range v.eog {
			if int(id) < len(logits) {
				logits[id] = c.saved[k]
				k++
			}
		}
	}
}

var ninf = float32(math.Inf(-1))

// ninfs is a row of -Inf to copy from.
var ninfs = func() []float32 {
	r := make([]float32, 4096)
	for i := range r {
		r[i] = ninf
	}
	return r
}()

func fill(row []float32) {
	for len(row) > 0 {
		row = row[copy(row, ninfs):]
	}
}

// applyBits sets row[t] to -Inf where bit t of allow is clear.
func applyBits(row []float32, allow []uint64) {
	n := len(row)
	for w := 0; w < len(allow); w++ {
		word := allow[w]
		if word == ^uint64(0) {
			continue
		}
		lo := w << 6
		if word == 0 { // a run of clear words: one copy
			hi := w + 1
			for hi < len(allow) && allow[hi] == 0 {
				hi++
			}
			fill(row[lo:min(hi<<6, n)])
			w = hi - 1
			continue
		}
		for z := ^word; z != 0; z &= z - 1 {
			if t := lo + bits.TrailingZeros64(z); t < n {
				row[t] = ninf
			}
		}
	}
}

// lookup returns the mask of the current state, computing it on a miss,
// and, for a string state, the code points left before maxLength and
// still needed for minLength.
func (c *Constraint) lookup() (e *entry, rem, need int32) {
	g, st := c.g, &c.st
	strMode, a, lo, hi := g.stringTops(st)
	c.key = g.appendKey(c.key[:0], st, strMode, c.v.clamp)
	if strMode {
		rem, need = hi-a, lo-a
	}
	vc := c.c
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if e = vc.m[string(c.key)]; e != nil {
		return e, rem, need
	}
	e = g.compute(c.v, vc, st, strMode)
	vc.misses++
	if vc.bytes+e.bytes() > maxCacheBytes {
		clear(vc.m)
		vc.bytes = 0
	}
	vc.m[string(c.key)] = e
	vc.bytes += e.bytes()
	return e, rem, need
}

// stringTops reports whether every stack of s has a string on top, all
// with the same length so far and the same bounds (then the mask can
// leave the length out).
func (g *Grammar) stringTops(s *state) (ok bool, a, lo, hi int32) {
	for i := range s.end {
		st := s.stack(i)
		if len(st) == 0 {
			return false, 0, 0, 0
		}
		f := &st[len(st)-1]
		n := &g.nodes[f.n]
		if n.kind != kString {
			return false, 0, 0, 0
		}
		if i == 0 {
			a, lo, hi = f.a, n.minLen, n.maxLen
		} else if f.a != a || n.minLen != lo || n.maxLen != hi {
			return false, 0, 0, 0
		}
	}
	return len(s.end) > 0, a, lo, hi
}

// appendKey appends the cache key of s.
func (g *Grammar) appendKey(k []byte, s *state, strMode bool, clamp int32) []byte {
	rel := func(x int32) uint64 { return uint64(min(max(x, 0), clamp)) }
	if strMode {
		k = append(k, 1)
	} else {
		k = append(k, 0)
	}
	for i := range s.end {
		st := s.stack(i)
		k = binary.AppendUvarint(k, uint64(len(st)))
		for _, f := range st {
			n := &g.nodes[f.n]
			k = binary.AppendUvarint(k, uint64(f.n))
			k = append(k, f.st, f.ws)
			switch n.kind {
			case kString:
				if !strMode {
					k = binary.AppendUvarint(k, uint64(f.a))
				}
				k = binary.AppendUvarint(k, uint64(f.b))
				k = binary.AppendUvarint(k, uint64(f.c))
			case kArray:
				k = binary.AppendUvarint(k, rel(n.minItems-f.a))
				k = binary.AppendUvarint(k, rel(n.maxItems-f.a))
			case kMap:
				k = binary.AppendUvarint(k, rel(n.maxItems-f.a))
			default:
				k = binary.AppendUvarint(k, uint64(f.a))
				k = binary.AppendUvarint(k, uint64(f.b))
				k = binary.AppendUvarint(k, uint64(f.c))
			}
		}
	}
	return k
}

// compute walks the trie against s (under vc.mu).
func (g *Grammar) compute(v *Vocab, vc *vcache, s *state, strMode bool) *entry {
	words := (len(v.pieces) + 63) / 64
	e := &entry{allow: make([]uint64, words)}
	w := vc.walk
	w[0].copyFrom(s)
	if strMode {
		e.cnt = make([]uint8, len(v.pieces))
		e.closes = make([]uint64, words)
		for i := range w[0].end {
			st := w[0].stack(i)
			f := &st[len(st)-1]
			f.fl |= fOrig
			f.a = 0
		}
		vc.cnt[0], vc.in[0] = 0, true
	}
	nodes := v.nodes
	for i := 0; i < len(nodes); {
		nd := &nodes[i]
		d := int(nd.depth)
		g.step(&w[d-1], nd.b, &w[d])
		if w[d].empty() {
			i = int(nd.end)
			continue
		}
		if strMode {
			in := vc.in[d-1]
			if in {
				st := w[d].stack(0)
				in = len(st) > 0 && st[len(st)-1].fl&fOrig != 0
			}
			vc.in[d] = in
			if in {
				st := w[d].stack(0)
				vc.cnt[d] = st[len(st)-1].a
			} else {
				vc.cnt[d] = vc.cnt[d-1]
			}
		}
		if nd.ntok == 0 {
			i++
			continue
		}
		for _, t := range v.toks[nd.tok0 : nd.tok0+nd.ntok] {
			if strMode {
				k := vc.cnt[d]
				if k > 254 {
					continue // never: no vocabulary has such tokens
				}
				e.cnt[t] = uint8(k)
				e.maxCnt = max(e.maxCnt, k)
				if !vc.in[d] {
					e.closes[t>>6] |= 1 << (t & 63)
					e.closers = append(e.closers, t)
				}
				if k >= longCnt {
					e.long = append(e.long, t)
				}
			}
			e.allow[t>>6] |= 1 << (t & 63)
		}
		i++
	}
	if strMode {
		slices.SortFunc(e.long, func(a, b int32) int { return cmp.Compare(e.cnt[b], e.cnt[a]) })
		slices.SortFunc(e.closers, func(a, b int32) int { return cmp.Compare(e.cnt[a], e.cnt[b]) })
	}
	return e
}
