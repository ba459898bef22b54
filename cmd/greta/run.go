package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	"greta/generate"
	"greta/sample"
	"greta/tokenizer"
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

// template returns the chat template asked for, or the model's, warning
// when chatml stands in for a missing one.
func (g *genFlags) template(tok *tokenizer.Tokenizer) (*tokenizer.ChatTemplate, error) {
	if *g.chatTemplate != "" {
		ct, err := tok.ChatTemplateByName(*g.chatTemplate)
		if err != nil {
			return nil, usageError("--chat-template: %v", err)
		}
		return ct, nil
	}
	ct, err := tok.ChatTemplate()
	if err == nil && ct.Fallback {
		warnf("%s: using chatml", strings.TrimSuffix(ct.Why, "; choose one by name ("+strings.Join(tokenizer.ChatTemplateNames, ", ")+")"))
	}
	return ct, err
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
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := ef.check(fs); err != nil {
		return err
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

	addSpecial := true
	if *chat || *g.chatTemplate != "" {
		ct, err := g.template(e.tok)
		if err != nil {
			return err
		}
		var msgs []tokenizer.Message
		if *g.system != "" {
			msgs = append(msgs, tokenizer.Message{Role: "system", Content: *g.system})
		}
		msgs = append(msgs, tokenizer.Message{Role: "user", Content: text})
		text = ct.Apply(msgs, true)
		// A template that writes BOS itself must not get a second one.
		if bos := e.tok.BOS(); bos >= 0 && strings.HasPrefix(text, e.tok.Piece(bos)) {
			addSpecial = false
		}
	}
	tokens := e.tok.Encode(text, addSpecial, true)
	if bos := e.tok.BOS(); bos >= 0 && len(tokens) >= 2 && tokens[0] == bos && tokens[1] == bos {
		warnf("the prompt starts with two BOS tokens: it begins with %q and the vocabulary adds BOS itself; drop the one in the text", e.tok.Piece(bos))
	}

	st, err := e.model.NewState(e.ctx, *ef.batch, false)
	if err != nil {
		return err
	}
	if !*asJSON {
		o.OnText = func(s string) error {
			_, err := io.WriteString(out, s)
			return err
		}
		o.OnPrefill = prefillStatus()
	}
	if *g.debugTop > 0 {
		o.OnDebug = debugPrinter(e.tok)
	}
	res, err := generate.Run(e.model, e.tok, st, tokens, o)
	if err != nil {
		if errors.Is(err, generate.ErrContext) {
			return err
		}
		return fmt.Errorf("generation: %w", err)
	}
	if *asJSON {
		timings := map[string]any{
			"load_ms":             float64(e.loadDur.Microseconds()) / 1000,
			"prompt_tokens_per_s": res.PromptTPS(),
			"gen_tokens_per_s":    nil, // no decode step: no speed
		}
		if res.Decoded() > 0 {
			timings["gen_tokens_per_s"] = res.GenTPS()
		}
		j := map[string]any{
			"prompt_tokens": nonNil(res.PromptTokens),
			"generated":     nonNil(res.Generated),
			"text":          res.Text,
			"stop_reason":   res.StopReason,
			"seed":          g.seedUsed,
			"device":        e.backend.Name(),
			"timings":       timings,
		}
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		return enc.Encode(j)
	}
	if _, err := io.WriteString(out, "\n"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\n[%s] load %.0f ms, prompt %d tokens at %.1f tok/s, %s (%s)\n",
		e.backend.Name(), float64(e.loadDur.Microseconds())/1000, len(res.PromptTokens), res.PromptTPS(), genSummary(res), res.StopReason)
	return nil
}

// genSummary says how many tokens came out and, when any took a decode
// step, how fast.
func genSummary(r *generate.Result) string {
	switch {
	case len(r.Generated) == 0:
		return "generated 0 tokens"
	case r.Decoded() == 0:
		return "generated 1 token (from the prompt's pass: no decode speed)"
	}
	return fmt.Sprintf("generated %d tokens at %.1f tok/s", len(r.Generated), r.GenTPS())
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
