package tokenizer

import "strings"

// cSpace is C's isspace, which llama.cpp's strip attributes use.
const cSpace = " \t\n\v\f\r"

// fragment is a piece of the input: raw text, or a special token cut out.
type fragment struct {
	text  string
	token int32 // -1 for text
}

// partition cuts special-token texts out of text, as llama.cpp's
// tokenizer_st_partition: each special token in turn (longest first) splits
// every remaining text fragment at each of its occurrences, left to right.
// With parseSpecial false only user-defined tokens are cut; control and
// unknown tokens (<s>, <|eot_id|>, ...) stay plain text.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	frags := []fragment{{text: text, token: -1}}
	for _, id := range t.special {
		a := t.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := t.tokens[id]
		var next []fragment
		changed := false
		for fi, f := range frags {
			if f.token >= 0 || !strings.Contains(f.text, tok) {
				if next != nil {
					next = append(next, f)
				}
				continue
			}
			if next == nil {
				next = append(make([]fragment, 0, len(frags)+4), frags[:fi]...)
			}
			changed = true
			rest := f.text
			for {
				k := strings.Index(rest, tok)
				if k < 0 {
					break
				}
				left := rest[:k]
				if a&attrLstrip != 0 {
					left = strings.TrimRight(left, cSpace)
				}
				if left != "" {
					next = append(next, fragment{text: left, token: -1})
				}
				next = append(next, fragment{token: id})
				rest = rest[k+len(tok):]
				if a&attrRstrip != 0 {
					rest = strings.TrimLeft(rest, cSpace)
				}
			}
			if rest != "" {
				next = append(next, fragment{text: rest, token: -1})
			}
		}
		if changed {
			frags = next
		}
	}
	return frags
}

// Encode returns the token ids of text, as llama.cpp's llama_tokenize.
//
// addSpecial prepends BOS when the vocabulary asks for it (AddBOS: from
// tokenizer.ggml.add_bos_token, else true for SPM and Llama-3 BPE) and
// appends EOS when add_eos_token is set. parseSpecial turns the text of
// control tokens such as <|eot_id|> or <s> into those tokens; without it
// they are tokenized as ordinary text. User-defined tokens are always
// matched whole.
//
// For SPM vocabularies each text fragment that starts the input or follows
// a special token gets the dummy-prefix space (unless add_space_prefix is
// false), so "Hello" encodes as "▁Hello".
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	out := make([]int32, 0, len(text)/3+2)
	if addSpecial && t.addBOS && t.bos >= 0 {
		out = append(out, t.bos)
	}
	var frags []fragment
	if text != "" {
		frags = t.partition(text, parseSpecial)
	}
	switch t.kind {
	case kindSPM:
		prevSpecial := true
		for _, f := range frags {
			if f.token >= 0 {
				out = append(out, f.token)
				prevSpecial = true
				continue
			}
			s := f.text
			if t.addSpacePrefix && prevSpecial {
				s = " " + s
			}
			out = t.spmEncode(escapeSpaces(s), out)
			prevSpecial = false
		}
	case kindBPE:
		var words []string
		for _, f := range frags {
			if f.token >= 0 {
				out = append(out, f.token)
				continue
			}
			words = pretokenize(t.preKind, normalizeUTF8(f.text), words[:0])
			for _, w := range words {
				out = t.bpeWord(w, out)
			}
		}
	}
	if addSpecial && t.addEOS && t.eos >= 0 {
		out = append(out, t.eos)
	}
	return out
}
