// Package generate runs a prompt through a model and decodes tokens: the
// prefill in batches, then one token at a time, with sampling, stop
// conditions and streaming text.
package generate

import (
	"errors"
	"fmt"
	"time"

	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

// Options control one generation.
type Options struct {
	MaxTokens int // tokens to generate at most (≤ 0: until EOS or the context is full)
	Sampling  sample.Params
	// StopAtContext ends generation quietly when the context is full;
	// otherwise a request that cannot fit is an error before any work.
	StopAtContext bool
	// OnText receives the text of each token as soon as it forms complete
	// UTF-8.
	OnText func(text string)
	// DebugTop > 0 calls OnDebug with the top candidates at each step.
	DebugTop int
	OnDebug  func(step int, chosen int32, top []sample.Candidate)
}

// Result is what a generation produced and how long it took.
type Result struct {
	PromptTokens []int32
	Generated    []int32
	Text         string
	PromptTime   time.Duration
	GenTime      time.Duration
	StopReason   string // "eos", "max_tokens", "context"
}

// PromptTPS is the prefill speed in tokens per second.
func (r *Result) PromptTPS() float64 { return tps(len(r.PromptTokens), r.PromptTime) }

// GenTPS is the decode speed in tokens per second, over the tokens decoded
// after the first (which comes out of the prefill).
func (r *Result) GenTPS() float64 { return tps(max(0, len(r.Generated)-1), r.GenTime) }

func tps(n int, d time.Duration) float64 {
	if d <= 0 || n == 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ErrContext is returned when the prompt, or the prompt with the tokens
// asked for, does not fit the context.
var ErrContext = errors.New("context overflow")

// Prefill feeds tokens to the model in batches of s.MaxBatch.
func Prefill(m *llama.Model, s *llama.State, tokens []int32) error {
	for i := 0; i < len(tokens); i += s.MaxBatch {
		if err := m.Forward(s, tokens[i:min(len(tokens), i+s.MaxBatch)]); err != nil {
			return err
		}
	}
	return nil
}

// Run generates from prompt (token ids, BOS included if wanted) on a fresh
// state s.
func Run(m *llama.Model, tok *tokenizer.Tokenizer, s *llama.State, prompt []int32, o Options) (*Result, error) {
	if len(prompt) == 0 {
		return nil, errors.New("empty prompt: nothing to condition on (add BOS or some text)")
	}
	if len(prompt) > s.Context {
		return nil, fmt.Errorf("%w: the prompt has %d tokens but the context holds %d; raise --ctx (the model was trained on %d) or shorten the prompt",
			ErrContext, len(prompt), s.Context, m.Config.ContextLength)
	}
	if o.MaxTokens > 0 && len(prompt)+o.MaxTokens-1 > s.Context && !o.StopAtContext {
		return nil, fmt.Errorf("%w: %d prompt tokens + %d to generate exceed the context of %d; raise --ctx, lower --max-tokens, or pass --stop-at-context",
			ErrContext, len(prompt), o.MaxTokens, s.Context)
	}
	r := &Result{PromptTokens: prompt}
	b := m.Backend
	V := m.Config.VocabSize
	logits := make([]float32, V)
	argmax := make([]int32, 1)
	history := append(make([]int32, 0, len(prompt)+max(o.MaxTokens, 0)), prompt...)
	sampler := sample.New(o.Sampling, V)
	greedy := o.Sampling.Greedy || o.Sampling.Temp <= 0
	penalize := o.Sampling.RepeatPenalty != 0 && o.Sampling.RepeatPenalty != 1
	dec := tok.NewStreamDecoder()
	var text []byte
	emit := func(str string) {
		if str == "" {
			return
		}
		text = append(text, str...)
		if o.OnText != nil {
			o.OnText(str)
		}
	}

	start := time.Now()
	if err := Prefill(m, s, prompt); err != nil {
		return nil, err
	}
	// Greedy, and sampling whose chain starts with top-k, need only the
	// device's argmax or top k: the full logits are copied only for a
	// penalty (every logit) or --debug-decode (probabilities over the row).
	topK := o.Sampling.TopK
	useTop := !greedy && !penalize && o.DebugTop <= 0 && topK > 0 && topK < V
	var topIDs []int32
	var topVals []float32
	if useTop {
		topIDs, topVals = make([]int32, topK), make([]float32, topK)
	}
	next := func(step int) int32 {
		if greedy && !penalize && o.DebugTop <= 0 {
			b.Argmax(s.Logits, argmax) // full logits stay on the device
			return argmax[0]
		}
		if useTop {
			b.TopK(s.Logits, 0, topK, topIDs, topVals)
			return sampler.SampleTop(topIDs, topVals)
		}
		b.Read(s.Logits, logits)
		id := sampler.Sample(logits, history)
		if o.DebugTop > 0 && o.OnDebug != nil {
			o.OnDebug(step, id, sample.Top(logits, o.DebugTop))
		}
		return id
	}
	id := next(0)
	r.PromptTime = time.Since(start)
	start = time.Now()
	tokBuf := make([]int32, 1)
	r.StopReason = "max_tokens"
	for step := 0; ; step++ {
		if tok.IsEOG(id) {
			r.StopReason = "eos"
			break
		}
		r.Generated = append(r.Generated, id)
		history = append(history, id)
		emit(dec.Add(id))
		if o.MaxTokens > 0 && len(r.Generated) >= o.MaxTokens {
			break
		}
		if s.Pos >= s.Context {
			r.StopReason = "context"
			break
		}
		tokBuf[0] = id
		if err := m.Forward(s, tokBuf); err != nil {
			return r, err
		}
		id = next(step + 1)
	}
	emit(dec.Flush())
	r.GenTime = time.Since(start)
	r.Text = string(text)
	return r, nil
}
