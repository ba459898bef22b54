// Package kv keeps the books of a paged KV cache: which of the pool's pages
// are free, which belong to which sequences, and which hold a cached
// prefix that a later request may reuse. The pages themselves live on the
// backend (ml.KVCache); this package never touches their contents.
//
// A full page of prompt tokens is keyed by a hash of its tokens and of the
// key of the page before it, so equal keys mean equal prefixes. A page is
// free (no owner, no key), used (referenced by one or more sequences), or
// cached (a key, no owner): cached pages are reused on a hit and evicted,
// least recently used first, only when no free page is left.
package kv

import (
	"container/list"
	"encoding/binary"
	"hash/maphash"
)

// Key identifies a full page of prompt tokens together with everything
// before it.
type Key uint64

// Pool is the page allocator. It is not safe for concurrent use: the
// engine's scheduler goroutine owns it.
type Pool struct {
	refs  []int32         // per page: the sequences holding it
	key   []Key           // per page: its key, if keyed
	keyed []bool          // per page: whether key is set
	elem  []*list.Element // per cached page: its place in lru
	free  []int32         // free pages (no key), used as a stack
	lru   *list.List      // cached pages (keyed, no refs), least recent at the front
	byKey map[Key]int32   // keyed pages, used or cached
	// What each keyed page was registered with, so that a hash collision
	// is a miss rather than a wrong prefix.
	prev   []Key
	tokens [][]int32

	seed maphash.Seed
	buf  []byte
}

// NewPool returns a pool of n free pages.
func NewPool(n int) *Pool {
	p := &Pool{refs: make([]int32, n), key: make([]Key, n), keyed: make([]bool, n), elem: make([]*list.Element, n),
		lru: list.New(), byKey: map[Key]int32{}, seed: maphash.MakeSeed(), prev: make([]Key, n), tokens: make([][]int32, n)}
	p.free = make([]int32, n)
	for i := range n {
		p.free[i] = int32(n - 1 - i) // page 0 is taken first
	}
	return p
}

// Pages is the pool's size.
func (p *Pool) Pages() int { return len(p.refs) }

// Free is the number of pages that Alloc can hand out: free and cached.
func (p *Pool) Free() int { return len(p.free) + p.lru.Len() }

// Cached is the number of cached pages (keyed, no owner).
func (p *Pool) Cached() int { return p.lru.Len() }

// Used is the number of pages held by sequences.
func (p *Pool) Used() int { return p.Pages() - p.Free() }

// Alloc takes a page for a sequence: a free one, else the least recently
// used cached one (forgetting its key). ok is false when none is left.
func (p *Pool) Alloc() (page int32, ok bool) {
	if n := len(p.free); n > 0 {
		page = p.free[n-1]
		p.free = p.free[:n-1]
	} else if e := p.lru.Front(); e != nil {
		page = e.Value.(int32)
		p.lru.Remove(e)
		p.elem[page] = nil
		delete(p.byKey, p.key[page])
		p.keyed[page] = false
	} else {
		return -1, false
	}
	p.refs[page] = 1
	return page, true
}

// Release drops a sequence's hold on page. A page nobody holds becomes
// cached if it has a key (most recently used), else free.
func (p *Pool) Release(page int32) {
	if p.refs[page] <= 0 {
		panic("kv: release of a page nobody holds")
	}
	p.refs[page]--
	if p.refs[page] > 0 {
		return
	}
	if p.keyed[page] {
		p.elem[page] = p.lru.PushBack(page)
		return
	}
	p.free = append(p.free, page)
}

// Lookup returns the page keyed k, registered after prev with tokens, if
// any, and takes a hold on it.
func (p *Pool) Lookup(k, prev Key, tokens []int32) (page int32, ok bool) {
	page, ok = p.byKey[k]
	if !ok || p.prev[page] != prev || !equal(p.tokens[page], tokens) {
		return -1, false
	}
	if p.refs[page] == 0 {
		p.lru.Remove(p.elem[page])
		p.elem[page] = nil
	}
	p.refs[page]++
	return page, true
}

// Register gives a held, full page its key (made by KeyOf from prev and
// tokens), so later requests can find it. If another page already has the
// key (two sequences computed the same prefix at once), the page stays
// unkeyed.
func (p *Pool) Register(page int32, k, prev Key, tokens []int32) {
	if p.refs[page] <= 0 {
		panic("kv: register of a page nobody holds")
	}
	if _, dup := p.byKey[k]; dup || p.keyed[page] {
		return
	}
	p.byKey[k] = page
	p.key[page], p.keyed[page] = k, true
	p.prev[page] = prev
	p.tokens[page] = append(p.tokens[page][:0], tokens...)
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// KeyOf is the key of a page holding tokens after the prefix whose last
// page has key prev (0 for the first page). extra folds in what else the
// page's contents depend on (the engine's numerics settings).
func (p *Pool) KeyOf(prev Key, tokens []int32, extra uint64) Key {
	p.buf = binary.LittleEndian.AppendUint64(p.buf[:0], uint64(prev))
	p.buf = binary.LittleEndian.AppendUint64(p.buf, extra)
	for _, t := range tokens {
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(t))
	}
	k := Key(maphash.Bytes(p.seed, p.buf))
	if k == 0 {
		k = 1 // 0 is "no page before"
	}
	return k
}
