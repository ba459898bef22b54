package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	eng "greta/engine"
	"greta/generate"
	"greta/ml"
)

func init() {
	register("logits", "write teacher-forced logits for every position", cmdLogits)
}

func cmdLogits(args []string) (err error) {
	fs := newFlags("logits", "--model M (--tokens 1,2,3 | --prompt TEXT) -o FILE")
	ef := addEngineFlags(fs, true)
	tokStr := fs.String("tokens", "", "comma-separated token ids")
	prompt := fs.StringP("prompt", "p", "", "tokenize this text instead (BOS added, special tokens parsed)")
	out := fs.StringP("output", "o", "", "output file (-: standard output): float32 little-endian [n_tokens × n_vocab], row-major (required)")
	// logits is an accuracy tool: exact float32 activations unless asked.
	fs.Lookup("act").DefValue = "f32"
	fs.Set("act", "f32")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" || (*tokStr == "") == (*prompt == "") {
		return usageError("need -o FILE and exactly one of --tokens or --prompt (see greta help logits)")
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q (the prompt goes in --prompt)", cut(strings.Join(fs.Args(), " "), 60))
	}
	if err := ef.check(fs); err != nil {
		return err
	}
	e, err := ef.load()
	if err != nil {
		return err
	}
	defer e.closeInto(&err)
	var tokens []int32
	if *prompt != "" {
		tokens = e.tok.Encode(*prompt, true, true)
	} else {
		for _, f := range strings.Split(*tokStr, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
			if err != nil {
				return fmt.Errorf("--tokens: %q is not a token id", f)
			}
			if n < 0 || int(n) >= e.model.Config.VocabSize {
				return fmt.Errorf("--tokens: id %d is outside the vocabulary (0..%d)", n, e.model.Config.VocabSize-1)
			}
			tokens = append(tokens, int32(n))
		}
	}
	if len(tokens) > e.ctx {
		return fmt.Errorf("%w: %d tokens but the context holds %d; raise --ctx", generate.ErrContext, len(tokens), e.ctx)
	}
	V := e.model.Config.VocabSize
	// One request for the logits of every row, chunked as --batch says
	// (at most 256 MiB of logits a step) on a pool of exactly its tokens.
	batch := max(1, min(*ef.batch, (256<<20)/(4*V), len(tokens)))
	en, err := startEngine(e, eng.Options{Parallel: 1, Context: len(tokens), Pages: (len(tokens) + ml.PageSize - 1) / ml.PageSize,
		CacheType: kvCacheType(e, *ef.cache), PrefillBudget: batch, LogitRows: batch, NoPrefixCache: true})
	if err != nil {
		return err
	}
	var dst io.Writer = stdout
	name := "standard output"
	if *out != "-" {
		fd, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := fd.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("%s: %w", *out, cerr)
			}
		}()
		dst, name = fd, *out
	}
	w := bufio.NewWriterSize(dst, 1<<20)
	raw := make([]byte, 4*V)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var writeErr error
	rows := 0
	_, err = en.Generate(ctx, eng.Request{Prompt: tokens, Logits: true}, func(ev eng.Event) {
		if ev.Logits == nil || writeErr != nil {
			return
		}
		if ev.Row != rows {
			writeErr = fmt.Errorf("logits: row %d came as row %d", ev.Row, rows)
			cancel()
			return
		}
		rows++
		for k, v := range ev.Logits {
			binary.LittleEndian.PutUint32(raw[4*k:], math.Float32bits(v))
		}
		if _, err := w.Write(raw); err != nil {
			writeErr = fmt.Errorf("writing %s: %w", name, err)
			cancel()
		}
	})
	if writeErr != nil {
		return writeErr
	}
	if err != nil {
		return err
	}
	if rows != len(tokens) {
		return fmt.Errorf("logits: %d rows of %d came back", rows, len(tokens))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	fmt.Fprintf(os.Stderr, "wrote %d × %d logits to %s (%s)\n", len(tokens), V, name, e.backend.Name())
	return nil
}
