package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"greta/gguf"
	"greta/tokenizer"
)

func init() {
	register("tokenize", "print the token ids of a text, as the model's tokenizer (llama.cpp-exact) makes them", cmdTokenize)
}

// tokenizeOut is the --json output.
type tokenizeOut struct {
	IDs    []int32  `json:"ids"`
	Pieces []string `json:"pieces"`
}

func cmdTokenize(args []string) error {
	return runTokenize(args, os.Stdin, stdout, os.Stderr)
}

func runTokenize(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "-m MODEL [--bos=false] [--special] [--json] [TEXT | -]")
	model := fs.StringP("model", "m", "", "GGUF file whose vocabulary to use (required)")
	bos := fs.Bool("bos", true, "add BOS (and EOS) where the vocabulary's add_bos_token/add_eos_token ask for them")
	special := fs.Bool("special", false, "parse special-token text such as <|eot_id|> or <s> into those tokens")
	asJSON := fs.Bool("json", false, `print {"ids":[...],"pieces":[...]} instead of the ids`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return &exitError{code: 2, err: fmt.Errorf("-m MODEL is required")}
	}
	if fs.NArg() != 1 {
		return &exitError{code: 2, err: fmt.Errorf("want one TEXT argument (or - to read standard input), got %d", fs.NArg())}
	}
	text := fs.Arg(0)
	if text == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("reading standard input: %w", err)
		}
		text = string(b)
	}

	f, err := gguf.Open(*model)
	if err != nil {
		return err
	}
	tok, err := tokenizer.FromGGUF(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *model, err)
	}
	for _, w := range tok.Warnings() {
		fmt.Fprintf(stderr, "greta tokenize: warning: %s\n", w)
	}

	ids := tok.Encode(text, *bos, *special)
	if *asJSON {
		out := tokenizeOut{IDs: ids, Pieces: make([]string, len(ids))}
		for i, id := range ids {
			out.Pieces[i] = displayPiece(tok.Piece(id))
		}
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(out)
	}
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(int(id)))
	}
	b.WriteByte('\n')
	_, err = io.WriteString(stdout, b.String())
	return err
}

// displayPiece keeps a piece readable in JSON: a byte that is not part of
// valid UTF-8 (one byte of a character split over byte tokens) is written
// as <0xXX> instead of being turned into U+FFFD by the JSON encoder.
func displayPiece(p string) string {
	if utf8.ValidString(p) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRuneInString(p[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, "<0x%02X>", p[i])
		} else {
			b.WriteString(p[i : i+n])
		}
		i += n
	}
	return b.String()
}
