package grammar

// The automaton reads the output one byte at a time. Its state is a set of
// stacks (more than one only while anyOf alternatives both still fit); a
// stack is the values open from the top-level one down to the innermost,
// one frame each. An empty stack is a complete value. Frames pop as soon as
// their value is complete and cannot grow (a closing quote or brace); a
// number or literal that is complete but could grow ("12" may become
// "123") stays until a byte that does not extend it, which then goes to the
// container below.

// frame is one open value. What a, b and c hold depends on the node kind:
//
//	kLit:     a, b: the range [a, b) of literals that match so far; c: bytes read
//	kString:  a: code points; b, c: UTF-8 or \u escape state (below)
//	kNumber:  a, b, c: integer, fraction and exponent digits
//	kObject:  a: index of the next property that may come; c: the property being read
//	kMap:     a: members begun
//	kArray:   a: items begun
type frame struct {
	n  int32
	st uint8 // phase, per kind
	ws uint8 // whitespace bytes in the current gap
	fl uint8 // fOrig
	_  uint8
	a  int32
	b  int32
	c  int32
}

// fOrig marks the string a mask is computed for: its length bounds are not
// applied while walking the trie; the mask records how many code points
// each token adds to it instead (see cache.go).
const fOrig = 1

// Phases of containers: the gaps where whitespace may stand.
const (
	pStart    = 0 // before the opening byte
	pOpen     = 1 // after { or [
	pKey      = 2 // a key is on top (kObject, kMap)
	pAfterKey = 3
	pColon    = 4 // after :, before the value
	pValue    = 5 // after a value (kObject, kMap); kArray uses pOpen/pValue/pComma
	pComma    = 6
)

// Phases of strings.
const (
	sContent = 1
	sEscape  = 2
	sHex0    = 3 // \u read, then 0..3 hex digits: sHex0..sHex0+3
	sUTF8    = 7 // c continuation bytes to come, b: the range of the next one
)

// Phases of numbers.
const (
	nStart = iota
	nMinus
	nZero
	nInt
	nDot
	nFrac
	nE
	nESign
	nExp
)

// state is a set of stacks, stored end to end: stack i is
// fr[end[i-1]:end[i]]. While a byte is fed, the stack being worked on sits
// after the last end (see feed).
type state struct {
	fr  []frame
	end []int32
	tmp []frame // saved stacks of anyOf forks
}

func (s *state) base() int {
	if len(s.end) == 0 {
		return 0
	}
	return int(s.end[len(s.end)-1])
}

func (s *state) commit() { s.end = append(s.end, int32(len(s.fr))) }

func (s *state) reject() { s.fr = s.fr[:s.base()] }

func (s *state) reset() {
	s.fr, s.end, s.tmp = s.fr[:0], s.end[:0], s.tmp[:0]
}

func (s *state) copyFrom(o *state) {
	s.fr = append(s.fr[:0], o.fr...)
	s.end = append(s.end[:0], o.end...)
	s.tmp = s.tmp[:0]
}

func (s *state) empty() bool { return len(s.end) == 0 }

func (s *state) stack(i int) []frame {
	lo := 0
	if i > 0 {
		lo = int(s.end[i-1])
	}
	return s.fr[lo:s.end[i]]
}

// start sets s to the state before the first byte of g's value.
func (g *Grammar) start(s *state) {
	s.reset()
	s.fr = append(s.fr, frame{n: g.root})
	s.commit()
	if g.nodes[g.root].kind == kAnyOf {
		// expand the alternatives so that every stack's top is concrete
		alts := g.nodes[g.root].alts
		s.reset()
		for _, a := range alts {
			s.fr = append(s.fr, frame{n: a})
			s.commit()
		}
	}
}

// step feeds byte x to every stack of in and writes the stacks that
// survive to out (which must not be in).
func (g *Grammar) step(in *state, x byte, out *state) {
	out.reset()
	lo := 0
	for _, e := range in.end {
		out.fr = append(out.fr, in.fr[lo:e]...)
		g.feed(out, x)
		lo = int(e)
	}
	if len(out.end) > 1 {
		out.dedupe()
	}
}

// dedupe drops stacks equal to an earlier one.
func (s *state) dedupe() {
	n := 0
	w := 0
	for i := range s.end {
		st := s.stack(i)
		dup := false
		for j := 0; j < n; j++ {
			lo := 0
			if j > 0 {
				lo = int(s.end[j-1])
			}
			if equalFrames(s.fr[lo:s.end[j]], st) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		w += copy(s.fr[w:], st)
		s.end[n] = int32(w)
		n++
	}
	s.fr, s.end = s.fr[:w], s.end[:n]
}

func equalFrames(a, b []frame) bool {
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

// canEnd reports whether some stack is a complete value.
func (g *Grammar) canEnd(s *state) bool {
	for i := range s.end {
		st := s.stack(i)
		if len(st) == 0 || len(st) == 1 && g.complete(&st[0]) {
			return true
		}
	}
	return false
}

// done reports whether every stack is complete and nothing can follow.
func (g *Grammar) done(s *state) bool {
	for i := range s.end {
		if len(s.stack(i)) != 0 {
			return false
		}
	}
	return len(s.end) > 0
}

// complete reports whether a number or literal frame could end here.
func (g *Grammar) complete(f *frame) bool {
	n := &g.nodes[f.n]
	switch n.kind {
	case kLit:
		return f.a < f.b && int(f.c) == len(n.lits[f.a])
	case kNumber, kInteger:
		return f.st == nZero || f.st == nInt || f.st == nFrac || f.st == nExp
	}
	return false
}

// extends reports whether byte x continues the complete frame f.
func (g *Grammar) extends(f *frame, x byte) bool {
	n := &g.nodes[f.n]
	if n.kind == kLit {
		for i := f.a; i < f.b; i++ {
			if l := n.lits[i]; len(l) > int(f.c) && l[f.c] == x {
				return true
			}
		}
		return false
	}
	num := n.kind == kNumber
	digit := x >= '0' && x <= '9'
	switch f.st {
	case nZero:
		return num && (x == '.' || x == 'e' || x == 'E')
	case nInt:
		return digit && f.a < maxIntDigits || num && (x == '.' || x == 'e' || x == 'E')
	case nFrac:
		return digit && f.b < maxFracDigits || x == 'e' || x == 'E'
	case nExp:
		return digit && f.c < maxExpDigits
	}
	return false
}

// growable reports whether the complete frame f could still take a byte.
func (g *Grammar) growable(f *frame) bool {
	n := &g.nodes[f.n]
	if n.kind == kLit {
		return f.b-f.a > 1 || len(n.lits[f.a]) > int(f.c)
	}
	num := n.kind == kNumber
	switch f.st {
	case nZero:
		return num
	case nInt:
		return f.a < maxIntDigits || num
	case nFrac:
		return true
	case nExp:
		return f.c < maxExpDigits
	}
	return false
}

func isWS(x byte) bool { return x == ' ' || x == '\n' || x == '\t' }

// feed feeds x to the stack being worked on (s.fr[s.base():]) and commits
// what results, or rejects it.
func (g *Grammar) feed(s *state, x byte) {
	w := s.base()
	if len(s.fr) == w { // a complete value takes nothing more
		return
	}
	f := &s.fr[len(s.fr)-1]
	n := &g.nodes[f.n]
	switch n.kind {
	case kLit, kNumber, kInteger:
		if g.complete(f) && !g.extends(f, x) {
			g.pop(s)
			g.feed(s, x)
			return
		}
		if n.kind == kLit {
			g.feedLit(s, f, n, x)
		} else {
			g.feedNumber(s, f, n.kind == kNumber, x)
		}
	case kString:
		g.feedString(s, f, n, x)
	case kObject:
		g.feedObject(s, f, n, x)
	case kMap:
		g.feedMap(s, f, n, x)
	case kArray:
		g.feedArray(s, f, n, x)
	default:
		s.reject() // kAnyOf frames never stand on a stack
	}
}

// pop removes the top frame, which has completed, and tells its container.
func (g *Grammar) pop(s *state) {
	top := s.fr[len(s.fr)-1]
	s.fr = s.fr[:len(s.fr)-1]
	if len(s.fr) == s.base() {
		return
	}
	p := &s.fr[len(s.fr)-1]
	if p.st == pKey {
		p.st, p.ws = pAfterKey, 0
		if g.nodes[p.n].kind == kObject {
			k := g.nodes[top.n].pay[top.a]
			p.c, p.a = k, k+1
		}
	}
}

// settle pops f if it is complete and cannot grow, then commits.
func (g *Grammar) settle(s *state, f *frame) {
	if g.complete(f) && !g.growable(f) {
		g.pop(s)
	}
	s.commit()
}

// push opens value node v on the stack being worked on and feeds it x.
// An anyOf forks: each alternative gets a copy of the stack.
func (g *Grammar) push(s *state, v int32, x byte) {
	n := &g.nodes[v]
	if n.kind != kAnyOf {
		if n.free && len(s.fr)-s.base() >= g.opt.MaxDepth {
			s.reject()
			return
		}
		s.fr = append(s.fr, frame{n: v})
		g.feed(s, x)
		return
	}
	w := s.base()
	saved := len(s.tmp)
	s.tmp = append(s.tmp, s.fr[w:]...)
	ln := len(s.fr) - w
	s.fr = s.fr[:w]
	for _, a := range n.alts {
		s.fr = append(s.fr, s.tmp[saved:saved+ln]...)
		g.push(s, a, x)
	}
	s.tmp = s.tmp[:saved]
}

func (g *Grammar) feedLit(s *state, f *frame, n *node, x byte) {
	if f.st == 0 { // fresh
		f.st, f.a, f.b = 1, 0, int32(len(n.lits))
	}
	lo, hi := f.b, f.a
	for i := f.a; i < f.b; i++ {
		if l := n.lits[i]; len(l) > int(f.c) && l[f.c] == x {
			lo = min(lo, i)
			hi = i + 1
		}
	}
	if lo >= hi {
		s.reject()
		return
	}
	f.a, f.b, f.c = lo, hi, f.c+1
	g.settle(s, f)
}

func (g *Grammar) feedNumber(s *state, f *frame, num bool, x byte) {
	digit := x >= '0' && x <= '9'
	ok := true
	switch f.st {
	case nStart, nMinus:
		switch {
		case x == '-' && f.st == nStart:
			f.st = nMinus
		case x == '0':
			f.st = nZero
		case digit:
			f.st, f.a = nInt, 1
		default:
			ok = false
		}
	case nZero:
		ok = g.numberSuffix(f, num, x)
	case nInt:
		if digit && f.a < maxIntDigits {
			f.a++
		} else {
			ok = g.numberSuffix(f, num, x)
		}
	case nDot:
		if ok = digit; ok {
			f.st, f.b = nFrac, 1
		}
	case nFrac:
		switch {
		case digit && f.b < maxFracDigits:
			f.b++
		case x == 'e' || x == 'E':
			f.st = nE
		default:
			ok = false
		}
	case nE:
		switch {
		case x == '+' || x == '-':
			f.st = nESign
		case digit:
			f.st, f.c = nExp, 1
		default:
			ok = false
		}
	case nESign:
		if ok = digit; ok {
			f.st, f.c = nExp, 1
		}
	case nExp:
		if ok = digit && f.c < maxExpDigits; ok {
			f.c++
		}
	}
	if !ok {
		s.reject()
		return
	}
	g.settle(s, f)
}

// numberSuffix takes '.' or an exponent after the integer part.
func (g *Grammar) numberSuffix(f *frame, num bool, x byte) bool {
	switch {
	case num && x == '.':
		f.st = nDot
	case num && (x == 'e' || x == 'E'):
		f.st = nE
	default:
		return false
	}
	return true
}

// UTF-8 ranges of a continuation byte (b of a kString frame in sUTF8).
var contLo = [5]byte{0x80, 0xA0, 0x80, 0x90, 0x80}
var contHi = [5]byte{0xBF, 0xBF, 0x9F, 0xBF, 0x8F}

func hexVal(x byte) int {
	switch {
	case x >= '0' && x <= '9':
		return int(x - '0')
	case x >= 'a' && x <= 'f':
		return int(x-'a') + 10
	case x >= 'A' && x <= 'F':
		return int(x-'A') + 10
	}
	return -1
}

func (g *Grammar) feedString(s *state, f *frame, n *node, x byte) {
	bounded := f.fl&fOrig == 0
	room := !bounded || f.a < n.maxLen
	switch f.st {
	case 0:
		if x != '"' {
			s.reject()
			return
		}
		f.st = sContent
	case sContent:
		switch {
		case x == '"':
			if bounded && f.a < n.minLen {
				s.reject()
				return
			}
			g.pop(s)
		case !room || x < 0x20:
			s.reject()
			return
		case x == '\\':
			f.st, f.a = sEscape, f.a+1
		case x < 0x80:
			f.a++
		default:
			var k, r int32
			switch {
			case x >= 0xC2 && x <= 0xDF:
				k = 1
			case x == 0xE0:
				k, r = 2, 1
			case x == 0xED:
				k, r = 2, 2
			case x >= 0xE1 && x <= 0xEF:
				k = 2
			case x == 0xF0:
				k, r = 3, 3
			case x == 0xF4:
				k, r = 3, 4
			case x >= 0xF1 && x <= 0xF3:
				k = 3
			default:
				s.reject()
				return
			}
			f.st, f.a, f.b, f.c = sUTF8, f.a+1, r, k
		}
	case sUTF8:
		if x < contLo[f.b] || x > contHi[f.b] {
			s.reject()
			return
		}
		f.b, f.c = 0, f.c-1
		if f.c == 0 {
			f.st = sContent
		}
	case sEscape:
		switch x {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			f.st = sContent
		case 'u':
			f.st, f.b = sHex0, 0
		default:
			s.reject()
			return
		}
	default: // sHex0 + digits read
		h := hexVal(x)
		k := f.st - sHex0
		switch {
		case h < 0, k == 1 && f.b == 1 && h >= 8: // no surrogates: \uD800-\uDFFF
			s.reject()
			return
		case k == 0:
			f.b = 0
			if h == 0xD {
				f.b = 1
			}
		}
		f.st++
		if f.st == sHex0+4 {
			f.st, f.b = sContent, 0
		}
	}
	s.commit()
}

// gap takes a whitespace byte if the gap has room; true if it did.
func (g *Grammar) gap(s *state, f *frame, x byte) bool {
	if isWS(x) && int(f.ws) < g.opt.MaxWhitespace {
		f.ws++
		s.commit()
		return true
	}
	return false
}

func (g *Grammar) feedObject(s *state, f *frame, n *node, x byte) {
	if f.st == pStart {
		if x != '{' {
			s.reject()
			return
		}
		f.st = pOpen
		s.commit()
		return
	}
	if g.gap(s, f, x) {
		return
	}
	switch {
	case x == '}' && (f.st == pOpen || f.st == pValue) && n.canClose[f.a]:
		g.pop(s)
		s.commit()
	case x == '"' && (f.st == pOpen || f.st == pComma) && n.keys[f.a] >= 0:
		f.st, f.ws = pKey, 0
		g.push(s, n.keys[f.a], x)
	case x == ':' && f.st == pAfterKey:
		f.st, f.ws = pColon, 0
		s.commit()
	case f.st == pColon:
		f.st, f.ws = pValue, 0
		g.push(s, n.props[f.c].val, x)
	case x == ',' && f.st == pValue && int(f.a) < len(n.props):
		f.st, f.ws = pComma, 0
		s.commit()
	default:
		s.reject()
	}
}

func (g *Grammar) feedMap(s *state, f *frame, n *node, x byte) {
	if f.st == pStart {
		if x != '{' {
			s.reject()
			return
		}
		f.st = pOpen
		s.commit()
		return
	}
	if g.gap(s, f, x) {
		return
	}
	switch {
	case x == '}' && (f.st == pOpen || f.st == pValue):
		g.pop(s)
		s.commit()
	case x == '"' && (f.st == pOpen || f.st == pComma):
		f.st, f.ws = pKey, 0
		g.push(s, n.key, x)
	case x == ':' && f.st == pAfterKey:
		f.st, f.ws = pColon, 0
		s.commit()
	case f.st == pColon:
		f.st, f.ws, f.a = pValue, 0, f.a+1
		g.push(s, n.val, x)
	case x == ',' && f.st == pValue && f.a < n.maxItems:
		f.st, f.ws = pComma, 0
		s.commit()
	default:
		s.reject()
	}
}

func (g *Grammar) feedArray(s *state, f *frame, n *node, x byte) {
	if f.st == pStart {
		if x != '[' {
			s.reject()
			return
		}
		f.st = pOpen
		s.commit()
		return
	}
	if g.gap(s, f, x) {
		return
	}
	switch {
	case x == ']' && (f.st == pOpen && n.minItems == 0 || f.st == pValue && f.a >= n.minItems):
		g.pop(s)
		s.commit()
	case f.st == pOpen && n.maxItems > 0 || f.st == pComma:
		f.st, f.ws, f.a = pValue, 0, f.a+1
		g.push(s, n.item, x)
	case x == ',' && f.st == pValue && f.a < n.maxItems:
		f.st, f.ws = pComma, 0
		s.commit()
	default:
		s.reject()
	}
}
