package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"greta/generate"
	"greta/sample"
	"greta/tokenizer"
)

func init() {
	register("run", "generate text from a prompt", cmdRun)
}

func cmdRun(args []string) error {
	fs := newFlags("run", "--model M --prompt TEXT [flags]")
	ef := addEngineFlags(fs, true)
	prompt := fs.StringP("prompt", "p", "", "prompt text (special tokens such as <|eot_id|> are parsed)")
	maxTokens := fs.IntP("max-tokens", "n", 128, "tokens to generate at most (-1: until EOS or the context is full)")
	greedy := fs.Bool("greedy", false, "always take the most likely token")
	debugTop := fs.Int("debug-decode", 0, "print the top K candidates (id, piece, logit, probability) at each step, on stderr")
	d := sample.Defaults()
	temp := fs.Float64("temp", d.Temp, "temperature (0: greedy)")
	topK := fs.Int("top-k", d.TopK, "keep the K most likely tokens (0: off)")
	topP := fs.Float64("top-p", d.TopP, "keep the smallest set with this much probability (1: off)")
	minP := fs.Float64("min-p", d.MinP, "drop tokens below this fraction of the top probability (0: off)")
	repeat := fs.Float64("repeat-penalty", d.RepeatPenalty, "penalty for tokens among the last 64 (1: off)")
	seed := fs.Uint64("seed", 0, "random seed for sampling")
	chat := fs.Bool("chat", false, "wrap the prompt in the model's chat template as a user turn")
	chatTemplate := fs.String("chat-template", "", "chat template by name (llama3, llama2, zephyr) instead of the model's")
	system := fs.String("system", "", "system message for --chat")
	asJSON := fs.Bool("json", false, "print one JSON object at the end instead of streaming text")
	stopAtCtx := fs.Bool("stop-at-context", false, "stop quietly when the context is full instead of refusing a request that cannot fit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 && *prompt == "" {
		*prompt = strings.Join(fs.Args(), " ")
	}
	e, err := ef.load()
	if err != nil {
		return err
	}
	defer e.Close()

	text := *prompt
	addSpecial := true
	if *chat || *chatTemplate != "" {
		var ct *tokenizer.ChatTemplate
		if *chatTemplate != "" {
			ct, err = e.tok.ChatTemplateByName(*chatTemplate)
		} else {
			ct, err = e.tok.ChatTemplate()
		}
		if err != nil {
			return err
		}
		var msgs []tokenizer.Message
		if *system != "" {
			msgs = append(msgs, tokenizer.Message{Role: "system", Content: *system})
		}
		msgs = append(msgs, tokenizer.Message{Role: "user", Content: *prompt})
		text = ct.Apply(msgs, true)
		// A template that writes BOS itself must not get a second one.
		if bos := e.tok.BOS(); bos >= 0 && strings.HasPrefix(text, e.tok.Piece(bos)) {
			addSpecial = false
		}
	}
	tokens := e.tok.Encode(text, addSpecial, true)

	st, err := e.model.NewState(e.ctx, *ef.batch, false)
	if err != nil {
		return err
	}
	o := generate.Options{
		MaxTokens:     *maxTokens,
		StopAtContext: *stopAtCtx || *maxTokens < 0,
		Sampling: sample.Params{Greedy: *greedy, Temp: *temp, TopK: *topK, TopP: *topP, MinP: *minP,
			RepeatPenalty: *repeat, RepeatLastN: 64, Seed: *seed},
		DebugTop: *debugTop,
	}
	if !*asJSON {
		o.OnText = func(s string) { os.Stdout.WriteString(s) }
	}
	if *debugTop > 0 {
		o.OnDebug = func(step int, chosen int32, top []sample.Candidate) {
			fmt.Fprintf(os.Stderr, "[debug-decode] step %d chose %d %q\n", step, chosen, e.tok.Piece(chosen))
			for i, c := range top {
				fmt.Fprintf(os.Stderr, "  %2d. id %-7d %-16q logit %9.4f  p %.4f\n", i+1, c.ID, e.tok.Piece(c.ID), c.Logit, c.P)
			}
		}
	}
	res, err := generate.Run(e.model, e.tok, st, tokens, o)
	if err != nil {
		if errors.Is(err, generate.ErrContext) {
			return err
		}
		return fmt.Errorf("generation: %w", err)
	}
	if *asJSON {
		out := map[string]any{
			"prompt_tokens": nonNil(res.PromptTokens),
			"generated":     nonNil(res.Generated),
			"text":          res.Text,
			"stop_reason":   res.StopReason,
			"device":        e.backend.Name(),
			"timings": map[string]float64{
				"load_ms":             float64(e.loadDur.Microseconds()) / 1000,
				"prompt_tokens_per_s": res.PromptTPS(),
				"gen_tokens_per_s":    res.GenTPS(),
			},
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(out)
	}
	fmt.Println()
	fmt.Fprintf(os.Stderr, "\n[%s] load %.0f ms, prompt %d tokens at %.1f tok/s, generated %d tokens at %.1f tok/s (%s)\n",
		e.backend.Name(), float64(e.loadDur.Microseconds())/1000, len(res.PromptTokens), res.PromptTPS(), len(res.Generated), res.GenTPS(), res.StopReason)
	return nil
}

func nonNil(s []int32) []int32 {
	if s == nil {
		return []int32{}
	}
	return s
}
