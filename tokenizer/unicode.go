package tokenizer

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Code point classes as llama.cpp's unicode.cpp defines them. Its tables
// come from Python's `regex` module: every code point has exactly one
// general-category flag (unassigned ones count as \p{C}), and whitespace is
// a separate flag (regex \s, the Unicode White_Space property). Go's unicode
// package gives the same classes; only code points assigned after the
// Unicode version of either table could differ.
type cpFlags uint16

const (
	fUndefined  cpFlags = 1 << iota
	fNumber             // \p{N}
	fLetter             // \p{L}
	fSeparator          // \p{Z}
	fMark               // \p{M}
	fPunct              // \p{P}
	fSymbol             // \p{S}
	fControl            // \p{C}
	fWhitespace         // \s
)

// maxCodepoint is one past the largest code point llama.cpp classifies.
const maxCodepoint = 0x110000

// isUnicodeSpace is llama.cpp's unicode_set_whitespace (White_Space).
func isUnicodeSpace(r rune) bool {
	switch {
	case r >= 0x09 && r <= 0x0D, r == 0x20, r == 0x85, r == 0xA0, r == 0x1680,
		r >= 0x2000 && r <= 0x200A, r == 0x2028, r == 0x2029, r == 0x202F,
		r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

func computeFlags(r rune) cpFlags {
	if r < 0 || r >= maxCodepoint {
		return fUndefined
	}
	var f cpFlags
	switch {
	case isUnicode151Letter(r):
		f = fLetter
	case isUnicode151Symbol(r):
		f = fSymbol
	case unicode.IsLetter(r):
		f = fLetter
	case unicode.IsNumber(r):
		f = fNumber
	case unicode.IsMark(r):
		f = fMark
	case unicode.IsPunct(r):
		f = fPunct
	case unicode.IsSymbol(r):
		f = fSymbol
	case unicode.Is(unicode.Z, r):
		f = fSeparator
	default: // Cc, Cf, Cs, Co and unassigned Cn
		f = fControl
	}
	if isUnicodeSpace(r) {
		f |= fWhitespace
	}
	return f
}

// Go's unicode tables are Unicode 15.0; llama.cpp's are 15.1, which
// assigned CJK Unified Ideographs Extension I (Lo) and a few ideographic
// description and stroke symbols (So). The shared oracle sweep over every
// code point (testdata/oracle) found no other difference.
func isUnicode151Letter(r rune) bool { return r >= 0x2EBF0 && r <= 0x2EE5D }

func isUnicode151Symbol(r rune) bool { return (r >= 0x2FFC && r <= 0x2FFF) || r == 0x31EF }

var (
	latin1Flags [256]cpFlags
	bmpOnce     sync.Once
	bmpFlags    []cpFlags // 0x10000 entries, built on first non-Latin-1 rune
)

func init() {
	for r := range latin1Flags {
		latin1Flags[r] = computeFlags(rune(r))
	}
}

// flagsOf returns the class flags of r.
func flagsOf(r rune) cpFlags {
	if r >= 0 && r < 256 {
		return latin1Flags[r]
	}
	if r >= 0 && r < 0x10000 {
		bmpOnce.Do(func() {
			t := make([]cpFlags, 0x10000)
			for c := range t {
				t[c] = computeFlags(rune(c))
			}
			bmpFlags = t
		})
		return bmpFlags[r]
	}
	return computeFlags(r)
}

// decodeLenient decodes one code point the way llama.cpp's
// unicode_cpt_from_utf8 does: it checks lead and continuation bits only, so
// it accepts overlong forms and surrogates, and it reports ok=false where
// llama.cpp throws (a stray continuation byte, a truncated sequence, a lead
// byte 0xF8..0xFF). The caller then substitutes U+FFFD and skips one byte.
func decodeLenient(s string, i int) (r rune, size int, ok bool) {
	b0 := s[i]
	switch {
	case b0 < 0x80:
		return rune(b0), 1, true
	case b0&0x40 == 0:
		return 0, 0, false
	case b0&0x20 == 0:
		if i+1 >= len(s) || s[i+1]&0xC0 != 0x80 {
			return 0, 0, false
		}
		return rune(b0&0x1F)<<6 | rune(s[i+1]&0x3F), 2, true
	case b0&0x10 == 0:
		if i+2 >= len(s) || s[i+1]&0xC0 != 0x80 || s[i+2]&0xC0 != 0x80 {
			return 0, 0, false
		}
		return rune(b0&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3, true
	case b0&0x08 == 0:
		if i+3 >= len(s) || s[i+1]&0xC0 != 0x80 || s[i+2]&0xC0 != 0x80 || s[i+3]&0xC0 != 0x80 {
			return 0, 0, false
		}
		return rune(b0&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F), 4, true
	}
	return 0, 0, false
}

// appendCodepoint appends r encoded like llama.cpp's unicode_cpt_to_utf8,
// which (unlike utf8.AppendRune) keeps surrogates as three-byte sequences.
// Code points above U+10FFFF, where llama.cpp throws, become U+FFFD.
func appendCodepoint(b []byte, r rune) []byte {
	switch {
	case r < 0:
		return utf8.AppendRune(b, utf8.RuneError)
	case r <= 0x7F:
		return append(b, byte(r))
	case r <= 0x7FF:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r)&0x3F)
	case r <= 0xFFFF:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	case r <= 0x10FFFF:
		return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return utf8.AppendRune(b, utf8.RuneError)
}

// normalizeUTF8 returns text as llama.cpp's BPE path sees it after
// unicode_cpts_from_utf8 and re-encoding: bytes it cannot decode become
// U+FFFD and overlong forms become their shortest encoding. Valid UTF-8 is
// returned unchanged without copying.
func normalizeUTF8(text string) string {
	if utf8.ValidString(text) {
		return text
	}
	out := make([]byte, 0, len(text)+8)
	for i := 0; i < len(text); {
		r, n, ok := decodeLenient(text, i)
		if !ok {
			out = utf8.AppendRune(out, utf8.RuneError)
			i++
			continue
		}
		if r > 0x10FFFF {
			r = utf8.RuneError
		}
		out = appendCodepoint(out, r)
		i += n
	}
	return string(out)
}

// utf8Len is llama.cpp's unicode_len_utf8: the sequence length announced by
// a lead byte, 1 for ASCII and for stray continuation bytes.
func utf8Len(b byte) int {
	switch b >> 4 {
	case 0xC, 0xD:
		return 2
	case 0xE:
		return 3
	case 0xF:
		return 4
	}
	return 1
}
