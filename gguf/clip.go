package gguf

import (
	"fmt"
	"unicode/utf8"
)

// MaxShown is how many bytes of a file-supplied string (a tensor name, a
// metadata key or value) an error message shows. A hostile file can hold a
// name of any length; a message must stay one readable line.
const MaxShown = 64

// Clip wraps a file-supplied string for an error message. Formatted with
// %q or %s it prints the string as is when it is at most MaxShown bytes,
// and otherwise its first MaxShown bytes (cut at a character boundary),
// an ellipsis, and the full length: "blk.0.aaaa…" (1048576 bytes).
func Clip(s string) fmt.Formatter { return clipped(s) }

type clipped string

func (c clipped) Format(f fmt.State, verb rune) {
	s := string(c)
	if len(s) <= MaxShown {
		fmt.Fprintf(f, fmt.FormatString(f, verb), s)
		return
	}
	cut := MaxShown
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), s[:cut]+"…")
	fmt.Fprintf(f, " (%d bytes)", len(s))
}
