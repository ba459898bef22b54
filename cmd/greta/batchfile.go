package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	flag "github.com/spf13/pflag"

	eng "greta/engine"
	"greta/generate"
)

// batchLine is one line of a --batch-file. A missing field takes the
// command line's value.
type batchLine struct {
	Prompt        *string   `json:"prompt"`
	MaxTokens     *int      `json:"max_tokens"`
	Seed          *uint64   `json:"seed"`
	Temperature   *float64  `json:"temperature"` // 0: greedy
	TopK          *int      `json:"top_k"`
	TopP          *float64  `json:"top_p"`
	MinP          *float64  `json:"min_p"`
	RepeatPenalty *float64  `json:"repeat_penalty"`
	RepeatLastN   *int      `json:"repeat_last_n"`
	Stop          *[]string `json:"stop"`
}

// maxBatchLine bounds one line of a batch file (a prompt of a few million
// tokens).
const maxBatchLine = 64 << 20

// defaultBatchParallel is --parallel's default with --batch-file: every
// line at once up to this many, which keeps the step's activations and
// logits (one row per sequence) a bounded size.
const defaultBatchParallel = 256

// batchItem is one prompt of the file and what became of it.
type batchItem struct {
	line int // 1-based line number in the file
	text string
	o    generate.Options
	err  error // a bad line, or a failed request
	out  *runOutcome
	done chan struct{}
}

// readBatchFile parses a batch file: one JSON object a line, blank lines
// skipped. A line that is not a valid request is kept with its error.
func readBatchFile(r io.Reader, base generate.Options) ([]*batchItem, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxBatchLine)
	var items []*batchItem
	for n := 1; sc.Scan(); n++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		it := &batchItem{line: n, done: make(chan struct{})}
		it.text, it.o, it.err = parseBatchLine(raw, base)
		if it.err != nil {
			it.err = fmt.Errorf("line %d: %w", n, it.err)
		}
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d is longer than %s", len(items)+1, humanBytes(maxBatchLine))
		}
		return nil, err
	}
	return items, nil
}

// parseBatchLine reads one request: the base options with the line's
// fields over them, validated as the flags are.
func parseBatchLine(raw []byte, base generate.Options) (string, generate.Options, error) {
	var l batchLine
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return "", base, fmt.Errorf("not a request object: %v", err)
	}
	if dec.More() {
		return "", base, errors.New("not a request object: more than one JSON value on the line")
	}
	if l.Prompt == nil {
		return "", base, errors.New(`no "prompt"`)
	}
	o := base
	o.Stop = append([]string(nil), base.Stop...)
	if l.MaxTokens != nil {
		o.MaxTokens = *l.MaxTokens
		o.StopAtContext = base.StopAtContext || o.MaxTokens < 0
	}
	p := &o.Sampling
	if l.Seed != nil {
		p.Seed = *l.Seed
	}
	if l.Temperature != nil {
		p.Temp, p.Greedy = *l.Temperature, false
	}
	if l.TopK != nil {
		p.TopK = *l.TopK
	}
	if l.TopP != nil {
		p.TopP = *l.TopP
	}
	if l.MinP != nil {
		p.MinP = *l.MinP
	}
	if l.RepeatPenalty != nil {
		p.RepeatPenalty = *l.RepeatPenalty
	}
	if l.RepeatLastN != nil {
		p.RepeatLastN = *l.RepeatLastN
	}
	if l.Stop != nil {
		o.Stop = *l.Stop
	}
	if err := o.Validate(); err != nil {
		return "", o, err
	}
	return *l.Prompt, o, nil
}

// runBatchFile is run --batch-file: every prompt of the file through the
// engine, --parallel at a time, one JSON line out per prompt in input
// order (run --json's object plus "index"; a bad line's is
// {"index", "line", "error"}).
func runBatchFile(fs *flag.FlagSet, ef *engineFlags, pf *poolFlags, g *genFlags, path string, chat bool, stdin io.Reader, out io.Writer) (err error) {
	if fs.Changed("prompt") || fs.Changed("file") || fs.NArg() > 0 {
		return usageError("--batch-file holds the prompts: give no -p, -f or prompt words with it")
	}
	if *g.debugTop > 0 {
		return usageError("--debug-decode follows one prompt: use it without --batch-file")
	}
	base, err := g.options(fs)
	if err != nil {
		return err
	}
	var src io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("--batch-file: %w", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("--batch-file: %s is not a regular file", path)
		}
		src = f
	}
	items, err := readBatchFile(src, base)
	if err != nil {
		return fmt.Errorf("--batch-file %s: %w", path, err)
	}
	e, err := ef.load()
	if err != nil {
		return err
	}
	defer e.closeInto(&err)
	g.logSettings(base)

	parallel := *pf.parallel
	if parallel == 0 {
		parallel = max(1, min(len(items), defaultBatchParallel))
	}
	po, err := pf.engineOptions(fs, ef, e, poolSpec{parallel: parallel, context: e.ctx})
	if err != nil {
		return err
	}
	po.QueueSize = len(items) + 1
	en, err := startEngine(e, po)
	if err != nil {
		return err
	}
	if *g.verbose {
		fmt.Fprintln(os.Stderr, poolLine(e, en))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, it := range items {
		if it.err != nil {
			close(it.done)
			continue
		}
		if err := submitBatchItem(ctx, e, en, g, chat, *pf.kvBudget != "", it); err != nil {
			it.err = fmt.Errorf("line %d: %w", it.line, err)
			close(it.done)
		}
	}
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	failed := 0
	for i, it := range items {
		<-it.done
		var j map[string]any
		if it.err != nil {
			failed++
			j = map[string]any{"index": i, "line": it.line, "error": oneLine(it.err.Error())}
		} else {
			j = it.out.object(e, en, it.o.Sampling.Seed)
			j["index"] = i
		}
		if err := enc.Encode(j); err != nil {
			cancel()
			for _, it := range items[i+1:] {
				<-it.done
			}
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d prompts failed (their lines hold the errors)", failed, len(items))
	}
	return nil
}

// submitBatchItem tokenizes and submits one prompt; a goroutine collects
// its events and closes it.done at the end.
func submitBatchItem(ctx context.Context, e *engine, en *eng.Engine, g *genFlags, chat, budgeted bool, it *batchItem) error {
	tokens, err := promptTokens(e, g, it.text, chat)
	if err != nil {
		return err
	}
	req, err := engineRequest(en, tokens, it.o, budgeted)
	if err != nil {
		return err
	}
	ch, err := en.Submit(ctx, req)
	if err != nil {
		return err
	}
	go func() {
		defer close(it.done)
		var text strings.Builder
		for ev := range ch {
			text.WriteString(ev.Text)
			if ev.Done {
				if ev.Result.Err != nil {
					it.err = fmt.Errorf("line %d: generation: %w", it.line, ev.Result.Err)
					return
				}
				it.out = &runOutcome{prompt: tokens, res: ev.Result, text: text.String()}
				return
			}
		}
		it.err = fmt.Errorf("line %d: cancelled", it.line)
	}()
	return nil
}
