package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	eng "greta/engine"
	"greta/generate"
	"greta/ml"
	"greta/sample"
	"greta/tokenizer"
	"greta/tokenizer/template"
)

func init() {
	register("run", "generate text from a prompt (no prompt on a terminal: chat)", cmdRun)
}

// genFlags are the generation flags run and chat share.
type genFlags struct {
	maxTokens                *int
	greedy                   *bool
	debugTop                 *int
	temp, topP, minP, repeat *float64
	topK, repeatLastN        *int
	seed                     *uint64
	stop                     *[]string
	chatTemplate, system     *string
	stopAtCtx, verbose       *bool
	seedUsed                 uint64
	defaultMaxTokens         int
}

func addGenFlags(fs *flag.FlagSet, defaultMax int) *genFlags {
	d := sample.Defaults()
	g := &genFlags{defaultMaxTokens: defaultMax}
	g.maxTokens = fs.IntP("max-tokens", "n", defaultMax, "tokens to generate at most (0: none, -1: until EOS or the context is full)")
	g.greedy = fs.Bool("greedy", false, "always take the most likely token")
	g.debugTop = fs.Int("debug-decode", 0, "print the top K candidates (id, piece, logit, probability) at each step, on stderr")
	g.temp = fs.Float64("temp", d.Temp, "temperature, ≥ 0 (0: greedy)")
	g.topK = fs.Int("top-k", d.TopK, "keep the K most likely tokens (0: off)")
	g.topP = fs.Float64("top-p", d.TopP, "keep the smallest set with this much probability, in [0, 1] (1: off)")
	g.minP = fs.Float64("min-p", d.MinP, "drop tokens below this fraction of the top probability, in [0, 1] (0: off)")
	g.repeat = fs.Float64("repeat-penalty", d.RepeatPenalty, "penalty for recently seen tokens, ≥ 0 (1: off)")
	g.repeatLastN = fs.Int("repeat-last-n", d.RepeatLastN, "how many recent tokens the penalty looks at")
	g.seed = fs.Uint64("seed", 0, "random seed for sampling (default: a random one, printed with --verbose and in --json)")
	g.stop = fs.StringArray("stop", nil, "stop where the text contains STRING (repeatable; the string is not printed)")
	g.chatTemplate = fs.String("chat-template", "", "chat template by name ("+strings.Join(tokenizer.ChatTemplateNames, ", ")+") instead of the model's")
	g.system = fs.String("system", "", "system message (with --chat, or in greta chat)")
	g.stopAtCtx = fs.Bool("stop-at-context", false, "stop quietly when the context is full instead of refusing a request that cannot fit")
	g.verbose = fs.BoolP("verbose", "v", false, "print the seed and the settings on stderr")
	return g
}

// options returns the generation options of the flags, validated, with a
// random seed unless --seed was given.
func (g *genFlags) options(fs *flag.FlagSet) (generate.Options, error) {
	g.seedUsed = *g.seed
	if !fs.Changed("seed") {
		g.seedUsed = sample.RandomSeed()
	}
	o := generate.Options{
		MaxTokens:     *g.maxTokens,
		StopAtContext: *g.stopAtCtx || *g.maxTokens < 0,
		Stop:          *g.stop,
		Sampling: sample.Params{Greedy: *g.greedy, Temp: *g.temp, TopK: *g.topK, TopP: *g.topP, MinP: *g.minP,
			RepeatPenalty: *g.repeat, RepeatLastN: *g.repeatLastN, Seed: g.seedUsed},
		DebugTop: *g.debugTop,
	}
	return o, o.Validate()
}

func (g *genFlags) logSettings(o generate.Options) {
	if *g.verbose {
		p := o.Sampling
		fmt.Fprintf(os.Stderr, "[sampling] seed %d, temp %g, top-k %d, top-p %g, min-p %g, repeat-penalty %g (last %d), greedy %v, max tokens %d\n",
			p.Seed, p.Temp, p.TopK, p.TopP, p.MinP, p.RepeatPenalty, p.RepeatLastN, p.Greedy || p.Temp <= 0, o.MaxTokens)
	}
}

func cmdRun(args []string) error {
	return runRun(args, os.Stdin, stdout)
}

func runRun(args []string, stdin io.Reader, out io.Writer) (err error) {
	fs := newFlags("run", "--model M (--prompt TEXT | -p - | -f FILE) [flags]")
	ef := addEngineFlags(fs, true)
	prompt := fs.StringP("prompt", "p", "", "prompt text (special tokens such as <|eot_id|> are parsed; -: read standard input)")
	file := fs.StringP("file", "f", "", "read the prompt from FILE")
	escape := fs.BoolP("escape", "e", false, `process escapes in the prompt: \n \t \r \\ \' \" \xHH`)
	g := addGenFlags(fs, 128)
	chat := fs.Bool("chat", false, "wrap the prompt in the model's chat template as a user turn")
	asJSON := fs.Bool("json", false, "print one JSON object at the end instead of streaming text")
	batchFile := fs.String("batch-file", "", `run every prompt of a JSONL file (-: standard input), one object a line: {"prompt": "...", "max_tokens": 32, "seed": 7, "temperature": 0, "stop": [...], "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n"}; missing fields take the flags' values; blank lines are skipped; one JSON line out per prompt, in input order, with "index"`)
	pf := addPoolFlags(fs, true, "sequences run at once with --batch-file (0: every line, at most 256)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := ef.check(fs); err != nil {
		return err
	}
	if err := pf.check(fs, *ef.batch); err != nil {
		return err
	}
	if *batchFile == "" && fs.Changed("parallel") {
		return usageError("--parallel has no effect without --batch-file (one prompt is one sequence)")
	}
	if *batchFile != "" {
		return runBatchFile(fs, ef, pf, g, *batchFile, *chat, stdin, out)
	}
	text, have, err := readPrompt(fs, *prompt, *file, stdin)
	if err != nil {
		return err
	}
	if !have {
		if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !*asJSON {
			// No prompt on a terminal: talk, as llama-cli does.
			return runChat(fs, ef, g, f, out)
		}
		return usageError("no prompt: give --prompt TEXT, -p - (standard input) or -f FILE (see greta help run)")
	}
	if *escape {
		text = processEscapes(text)
	}
	if *g.system != "" && !*chat && *g.chatTemplate == "" {
		return usageError("--system has no effect without --chat (or use greta chat)")
	}
	o, err := g.options(fs)
	if err != nil {
		return err
	}
	e, err := ef.load()
	if err != nil {
		return err
	}
	defer e.closeInto(&err)
	g.logSettings(o)

	tokens, err := promptTokens(e, g, text, *chat)
	if err != nil {
		return err
	}
	po, err := pf.engineOptions(fs, ef, e, poolSpec{parallel: 1, context: e.ctx})
	if err != nil {
		return err
	}
	en, err := startEngine(e, po)
	if err != nil {
		return err
	}
	if *g.verbose {
		fmt.Fprintln(os.Stderr, poolLine(e, en))
	}
	req, err := engineRequest(en, tokens, o, *pf.kvBudget != "")
	if err != nil {
		return err
	}
	var onText func(string) error
	if !*asJSON {
		onText = func(s string) error {
			_, err := io.WriteString(out, s)
			return err
		}
	}
	r, err := generateOne(en, req, onText, *g.debugTop, e.tok)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		return enc.Encode(r.object(e, en, g.seedUsed))
	}
	if _, err := io.WriteString(out, "\n"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\n[%s] load %.0f ms (KV pool %d tokens), prompt %d tokens at %.1f tok/s, %s (%s)\n",
		e.backend.Name(), float64(e.loadDur.Microseconds())/1000, en.Stats().Pages*ml.PageSize, len(r.prompt), r.promptTPS(), r.genSummary(), r.res.StopReason)
	return nil
}

// promptTokens tokenizes a prompt: BOS added and special tokens parsed,
// wrapped in the chat template first with chat (or --chat-template).
func promptTokens(e *engine, g *genFlags, text string, chat bool) ([]int32, error) {
	addSpecial := true
	if chat || *g.chatTemplate != "" {
		ct, err := g.chatFormat(e.tok)
		if err != nil {
			return nil, err
		}
		var msgs []template.Message
		if *g.system != "" {
			msgs = append(msgs, template.Message{Role: "system", Content: *g.system})
		}
		msgs = append(msgs, template.Message{Role: "user", Content: text})
		if text, err = ct.Apply(msgs, true); err != nil {
			return nil, err
		}
		// A template that writes BOS itself must not get a second one.
		if bos := e.tok.BOS(); bos >= 0 && strings.HasPrefix(text, e.tok.Piece(bos)) {
			addSpecial = false
		}
	}
	tokens := e.tok.Encode(text, addSpecial, true)
	if bos := e.tok.BOS(); bos >= 0 && len(tokens) >= 2 && tokens[0] == bos && tokens[1] == bos {
		warnf("the prompt starts with two BOS tokens: it begins with %q and the vocabulary adds BOS itself; drop the one in the text", e.tok.Piece(bos))
	}
	return tokens, nil
}

// engineRequest is the engine's request for a prompt and the generation
// options. With StopAtContext, a request whose tokens would not fit runs
// until the context is full instead of being refused.
func engineRequest(en *eng.Engine, tokens []int32, o generate.Options, budgeted bool) (eng.Request, error) {
	req := eng.Request{Prompt: tokens, MaxTokens: o.MaxTokens, Sampling: o.Sampling, Stop: o.Stop, TopLogprobs: o.DebugTop}
	ctx := en.Options().Context
	if o.StopAtContext && req.MaxTokens > 0 && len(tokens)+req.MaxTokens > ctx {
		req.MaxTokens = -1 // the context fills before MaxTokens
	}
	if err := en.Check(&req); err != nil {
		return req, contextHint(err, en, budgeted)
	}
	return req, nil
}

// contextHint adds what to do to a context overflow; budgeted says the
// pool was sized by --kv-budget (which may hold less than --ctx).
func contextHint(err error, en *eng.Engine, budgeted bool) error {
	if !errors.Is(err, eng.ErrContext) {
		return err
	}
	hint := "raise --ctx"
	if n := en.Model().Config.ContextLength; n > 0 {
		hint += fmt.Sprintf(" (the model was trained on %d)", n)
	}
	if budgeted {
		hint += fmt.Sprintf(" or --kv-budget (the pool holds %d tokens)", en.Stats().Pages*ml.PageSize)
	}
	return fmt.Errorf("%w; %s, lower --max-tokens, pass --stop-at-context or shorten the prompt", err, hint)
}

// runOutcome is one request's result as run reports it.
type runOutcome struct {
	prompt []int32
	res    *eng.Result
	text   string
}

// generateOne runs one request through the engine, streaming its text to
// onText (when set) and the top candidates of each step to stderr (with
// debugTop > 0). A failed onText (a write error) ends the request and is
// returned.
func generateOne(en *eng.Engine, req eng.Request, onText func(string) error, debugTop int, tok *tokenizer.Tokenizer) (*runOutcome, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopProgress := promptProgress(en, len(req.Prompt), onText != nil)
	var text strings.Builder
	var writeErr error
	step := 0
	res, err := en.Generate(ctx, req, func(ev eng.Event) {
		stopProgress()
		if writeErr != nil {
			return
		}
		if !ev.Done && debugTop > 0 {
			debugPrint(tok, step, ev)
		}
		if !ev.Done {
			step++
		}
		if ev.Text == "" {
			return
		}
		text.WriteString(ev.Text)
		if onText != nil {
			if writeErr = onText(ev.Text); writeErr != nil {
				cancel()
			}
		}
	})
	stopProgress()
	if writeErr != nil {
		return nil, writeErr
	}
	if err != nil {
		return nil, fmt.Errorf("generation: %w", err)
	}
	return &runOutcome{prompt: req.Prompt, res: res, text: text.String()}, nil
}

// promptProgress says on a terminal's stderr how far the prompt is while
// no token has come yet; the returned func stops it (and may be called
// again).
func promptProgress(en *eng.Engine, total int, on bool) func() {
	if !on || !stderrIsTerminal() || total < 256 {
		return func() {}
	}
	base := en.Stats().PromptTokens
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		shown := false
		for {
			select {
			case <-done:
				if shown {
					fmt.Fprint(os.Stderr, "\r\033[K")
				}
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\rprocessing the prompt: %d/%d tokens", min(int64(total), en.Stats().PromptTokens-base), total)
				shown = true
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done); <-finished })
	}
}

func (r *runOutcome) promptTPS() float64 { return tokPerSec(len(r.prompt), r.res.PromptTime) }

// decoded is the number of tokens that took a decode step: every generated
// token after the first, which comes out of the prompt's pass.
func (r *runOutcome) decoded() int { return max(0, len(r.res.Generated)-1) }

func (r *runOutcome) genTPS() float64 { return tokPerSec(r.decoded(), r.res.GenTime) }

func tokPerSec(n int, d time.Duration) float64 {
	if d <= 0 || n == 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// object is run --json's object.
func (r *runOutcome) object(e *engine, en *eng.Engine, seed uint64) map[string]any {
	timings := map[string]any{
		"load_ms":             float64(e.loadDur.Microseconds()) / 1000,
		"queued_ms":           float64(r.res.Queued.Microseconds()) / 1000,
		"prompt_tokens_per_s": r.promptTPS(),
		"gen_tokens_per_s":    nil, // no decode step: no speed
	}
	if r.decoded() > 0 {
		timings["gen_tokens_per_s"] = r.genTPS()
	}
	return map[string]any{
		"prompt_tokens": nonNil(r.prompt),
		"generated":     nonNil(r.res.Generated),
		"text":          r.text,
		"stop_reason":   r.res.StopReason,
		"prefix_hit":    r.res.PrefixHit,
		"seed":          seed,
		"device":        e.backend.Name(),
		"kv_tokens":     en.Stats().Pages * ml.PageSize,
		"timings":       timings,
	}
}

// genSummary says how many tokens came out and, when any took a decode
// step, how fast.
func (r *runOutcome) genSummary() string {
	switch {
	case len(r.res.Generated) == 0:
		return "generated 0 tokens"
	case r.decoded() == 0:
		return "generated 1 token (from the prompt's pass: no decode speed)"
	}
	return fmt.Sprintf("generated %d tokens at %.1f tok/s", len(r.res.Generated), r.genTPS())
}

// debugPrint prints a step's chosen token and top candidates (the
// engine's TopLogprobs), as --debug-decode does.
func debugPrint(tok *tokenizer.Tokenizer, step int, ev eng.Event) {
	top := make([]sample.Candidate, len(ev.Top))
	for i, c := range ev.Top {
		top[i] = sample.Candidate{ID: c.ID, Logit: c.Logit, P: math.Exp(c.P)}
	}
	debugPrinter(tok)(step, ev.Token, top)
}

func debugPrinter(tok *tokenizer.Tokenizer) func(int, int32, []sample.Candidate) {
	return func(step int, chosen int32, top []sample.Candidate) {
		fmt.Fprintf(os.Stderr, "[debug-decode] step %d chose %d %q\n", step, chosen, tok.Piece(chosen))
		for i, c := range top {
			fmt.Fprintf(os.Stderr, "  %2d. id %-7d %-16q logit %9.4f  p %.4f\n", i+1, c.ID, tok.Piece(c.ID), c.Logit, c.P)
		}
	}
}

// readPrompt returns the prompt from -p (- for standard input), -f or the
// positional words, refusing more than one source; have is false when
// none was given.
func readPrompt(fs *flag.FlagSet, prompt, file string, stdin io.Reader) (string, bool, error) {
	sources := 0
	for _, set := range []bool{fs.Changed("prompt"), file != "", fs.NArg() > 0} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		if fs.NArg() > 0 {
			return "", false, usageError("unexpected arguments %q: the prompt is already given by -p or -f (quote a prompt of several words)", cut(strings.Join(fs.Args(), " "), 60))
		}
		return "", false, usageError("give the prompt once: -p TEXT or -f FILE, not both")
	}
	switch {
	case fs.Changed("prompt") && prompt == "-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return "", false, fmt.Errorf("reading the prompt from standard input: %w", err)
		}
		return string(b), true, nil
	case fs.Changed("prompt"):
		return prompt, true, nil
	case file != "":
		b, err := readRegular(file, 64<<20)
		if err != nil {
			return "", false, fmt.Errorf("-f: %w", err)
		}
		return string(b), true, nil
	case fs.NArg() > 0:
		return strings.Join(fs.Args(), " "), true, nil
	}
	return "", false, nil
}

// readRegular reads a regular file of at most limit bytes (not a FIFO or a
// device, which could block or never end).
func readRegular(path string, limit int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is %s, more than the %s a prompt file may hold", path, humanBytes(st.Size()), humanBytes(limit))
	}
	return os.ReadFile(path)
}

// cut shortens s for a message.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// processEscapes turns llama.cpp's -e escapes into their characters:
// \n \r \t \' \" \\ \? \a \b \f \v \xHH. Anything else stays as written.
func processEscapes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		case '\'', '"', '\\', '?':
			b.WriteByte(c)
		case 'x':
			if i+2 < len(s) {
				if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
					b.WriteByte(byte(v))
					i += 2
					continue
				}
			}
			b.WriteString(`\x`)
		default:
			b.WriteByte('\\')
			b.WriteByte(c)
		}
	}
	return b.String()
}

func nonNil(s []int32) []int32 {
	if s == nil {
		return []int32{}
	}
	return s
}
