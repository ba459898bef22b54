package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// buildPieces computes what each token stands for, as llama.cpp's
// token_to_piece with special=true: control, unknown and user-defined
// tokens are their text; normal SPM tokens turn ▁ into space; normal BPE
// tokens map byte-level characters back to bytes; byte tokens are the one
// byte <0xXX> names. Unused and undefined tokens stand for nothing.
func (t *Tokenizer) buildPieces() {
	t.pieces = make([]string, len(t.tokens))
	for id, text := range t.tokens {
		a := t.attrs[id]
		switch {
		case a&(attrControl|attrUnknown|attrUserDefined) != 0:
			t.pieces[id] = text
		case a&attrNormal != 0:
			if t.kind == kindSPM {
				t.pieces[id] = strings.ReplaceAll(text, spaceMarker, " ")
			} else {
				t.pieces[id] = byteDecode(text)
			}
		case a&attrByte != 0:
			if len(text) >= 5 {
				hi, _ := hexVal(text[3])
				lo, _ := hexVal(text[4])
				t.pieces[id] = string([]byte{hi<<4 | lo})
			}
		}
	}
}

// byteDecode maps byte-level BPE characters back to bytes (llama.cpp's
// llama_decode_text), marking characters outside the mapping as it does.
func byteDecode(text string) string {
	var b []byte
	for _, r := range text {
		if r >= 0 && r < rune(len(runeToByte)) && runeToByte[r] >= 0 {
			b = append(b, byte(runeToByte[r]))
			continue
		}
		b = fmt.Appendf(b, "[UNK_BYTE_0x%x%s]", string(r), text)
	}
	return string(b)
}

// Piece returns the bytes token id stands for, for display: ▁ as a space,
// byte tokens as their byte (which alone may not be valid UTF-8), control
// tokens as their text (<s>, <|eot_id|>). "" for an id out of range.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// visible is the piece Decode and the stream decoder emit: llama.cpp's
// token_to_piece with special=false, which hides control and unknown tokens.
func (t *Tokenizer) visible(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) || t.attrs[id]&(attrControl|attrUnknown) != 0 {
		return ""
	}
	return t.pieces[id]
}

// Decode turns ids back into text: the pieces joined, control and unknown
// tokens left out. For vocabularies that add a dummy-prefix space, the
// first piece that has text loses one leading space, so that
// Decode(Encode(s, ...)) == s for every valid UTF-8 s. Unlike llama.cpp's
// detokenize for BPE vocabularies, it does not "clean up" spaces before
// punctuation: that would make decoding lossy. Ids out of range are
// skipped. Byte tokens are joined as bytes, so the result is valid UTF-8
// whenever the ids came from encoding valid UTF-8.
func (t *Tokenizer) Decode(ids []int32) string {
	var b strings.Builder
	strip := t.kind == kindSPM && t.addSpacePrefix
	for _, id := range ids {
		p := t.visible(id)
		if p == "" {
			continue
		}
		if strip {
			p = strings.TrimPrefix(p, " ")
			strip = false
		}
		b.WriteString(p)
	}
	return b.String()
}

// StreamDecoder turns ids into text one at a time, as a generation loop
// needs. It never emits part of a UTF-8 sequence: bytes of an incomplete
// character (a multi-byte character split over byte tokens, or over BPE
// tokens) are held until the character completes. Bytes that can never
// form a character are emitted as U+FFFD. It does not strip the SPM dummy
// prefix: generated text continues a prompt. Not safe for concurrent use.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
	// ShowSpecial makes control tokens appear as their text.
	ShowSpecial bool
}

// NewStreamDecoder returns a decoder with nothing pending.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Add appends token id and returns the text that is now complete.
func (d *StreamDecoder) Add(id int32) string {
	var p string
	if d.ShowSpecial {
		p = d.t.Piece(id)
	} else {
		p = d.t.visible(id)
	}
	if p == "" {
		return ""
	}
	d.pending = append(d.pending, p...)
	return d.drain(false)
}

// Flush returns whatever is pending, incomplete characters as U+FFFD, and
// resets the decoder.
func (d *StreamDecoder) Flush() string { return d.drain(true) }

// drain emits every complete character and keeps a trailing incomplete one
// unless final.
func (d *StreamDecoder) drain(final bool) string {
	buf := d.pending
	var out []byte
	i := 0
	for i < len(buf) {
		c := buf[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(buf[i:])
		if r != utf8.RuneError || n > 1 {
			out = append(out, buf[i:i+n]...)
			i += n
			continue
		}
		if !final && !utf8.FullRune(buf[i:]) && validPrefix(buf[i:]) {
			break // the start of a character whose other bytes are to come
		}
		out = utf8.AppendRune(out, utf8.RuneError)
		i++
	}
	d.pending = append(d.pending[:0], buf[i:]...)
	return string(out)
}

// validPrefix reports whether b (shorter than its lead byte announces)
// could still become a valid UTF-8 character.
func validPrefix(b []byte) bool {
	n := 0
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		n = 2
	case c >= 0xE0 && c <= 0xEF:
		n = 3
	case c >= 0xF0 && c <= 0xF4:
		n = 4
	default:
		return false
	}
	if len(b) >= n {
		return false
	}
	for k := 1; k < len(b); k++ {
		lo, hi := byte(0x80), byte(0xBF)
		if k == 1 {
			switch b[0] {
			case 0xE0:
				lo = 0xA0
			case 0xED:
				hi = 0x9F
			case 0xF0:
				lo = 0x90
			case 0xF4:
				hi = 0x8F
			}
		}
		if b[k] < lo || b[k] > hi {
			return false
		}
	}
	return true
}
