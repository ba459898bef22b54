// Package generate runs a prompt through a model and decodes tokens: the
// prefill in batches, then one token at a time, with sampling, stop
// conditions and streaming text. A Session keeps one sequence's KV cache
// between calls (the turns of a chat); Run is one call on a fresh state.
package generate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"greta/ml"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

// Options control one generation.
type Options struct {
	// MaxTokens is llama.cpp's n_predict: tokens to generate at most;
	// 0 generates nothing (the prompt is still processed), -1 runs until
	// EOS or the context is full. Other negative values are refused.
	MaxTokens int
	Sampling  sample.Params
	// Stop strings end generation where the text first contains one, across
	// token boundaries; the stop string and what follows are not emitted.
	Stop []string
	// StopAtContext ends generation quietly when the context is full;
	// otherwise a request that cannot fit is an error before any work.
	StopAtContext bool
	// OnText receives the text of each token as soon as it forms complete
	// UTF-8 (and cannot be the start of a stop string). An error it returns
	// (a write that failed) ends the generation and is returned.
	OnText func(text string) error
	// OnPrefill, if set, is called before the prefill and after each of its
	// batches with the prompt tokens done so far and their total.
	OnPrefill func(done, total int)
	// DebugTop > 0 calls OnDebug with the top candidates at each step.
	DebugTop int
	OnDebug  func(step int, chosen int32, top []sample.Candidate)
}

// Validate checks every setting's range (sampling included): the one check
// that the CLI and a server both call on a request.
func (o *Options) Validate() error {
	if err := checkMaxTokens(o.MaxTokens); err != nil {
		return err
	}
	if err := o.Sampling.Validate(); err != nil {
		return err
	}
	for i, s := range o.Stop {
		if s == "" {
			return &sample.RangeError{Field: "stop", Value: fmt.Sprintf("[%d] \"\"", i), Want: "non-empty strings"}
		}
	}
	if o.DebugTop < 0 {
		return &sample.RangeError{Field: "debug_top", Value: fmt.Sprint(o.DebugTop), Want: "a count ≥ 0"}
	}
	return nil
}

// Limits on the sizes a run is set up with: far past real models (the
// largest trained contexts are 2^20 tokens), small enough that nothing
// computed from them overflows.
const (
	MaxContext = 1 << 24
	MaxBatch   = 1 << 16
	MaxThreads = 1 << 10
)

func checkMaxTokens(n int) error {
	if n < -1 || n > MaxContext {
		return &sample.RangeError{Field: "max_tokens", Value: fmt.Sprint(n), Want: fmt.Sprintf("-1 (until EOS or the context is full), 0 (none) or a count up to %d", MaxContext)}
	}
	return nil
}

// Sizes are the numbers a model run is set up with, before anything is
// loaded: the context, the prefill batch, the CPU threads and the tokens to
// generate. Validate is their one range check.
type Sizes struct {
	Context   int // tokens; 0: the model's trained context, at most 4096
	Batch     int // tokens per prefill forward call, ≥ 1
	Threads   int // CPU threads; 0: all cores
	MaxTokens int // as Options.MaxTokens
}

// Validate reports the first size outside its range.
func (s Sizes) Validate() error {
	switch {
	case s.Context < 0 || s.Context > MaxContext:
		return &sample.RangeError{Field: "n_ctx", Value: fmt.Sprint(s.Context), Want: fmt.Sprintf("0 (the model's) or a token count up to %d", MaxContext)}
	case s.Batch < 1 || s.Batch > MaxBatch:
		return &sample.RangeError{Field: "n_batch", Value: fmt.Sprint(s.Batch), Want: fmt.Sprintf("a token count in [1, %d]", MaxBatch)}
	case s.Threads < 0 || s.Threads > MaxThreads:
		return &sample.RangeError{Field: "n_threads", Value: fmt.Sprint(s.Threads), Want: fmt.Sprintf("0 (all cores) or a count up to %d", MaxThreads)}
	}
	return checkMaxTokens(s.MaxTokens)
}

// Result is what a generation produced and how long it took.
type Result struct {
	PromptTokens []int32
	Generated    []int32
	Text         string
	PromptTime   time.Duration
	GenTime      time.Duration
	// StopReason is "eos", "stop" (a stop string), "max_tokens", "context"
	// or "cancelled".
	StopReason string
	// StopToken is the end-of-generation token that ended it, or -1.
	StopToken int32
}

// PromptTPS is the prefill speed in tokens per second.
func (r *Result) PromptTPS() float64 { return tps(len(r.PromptTokens), r.PromptTime) }

// Decoded is the number of tokens that took a decode step: every generated
// token after the first, which comes out of the prefill.
func (r *Result) Decoded() int { return max(0, len(r.Generated)-1) }

// GenTPS is the decode speed in tokens per second over Decoded tokens; 0
// when none was decoded (report it as absent, not as a speed).
func (r *Result) GenTPS() float64 { return tps(r.Decoded(), r.GenTime) }

func tps(n int, d time.Duration) float64 {
	if d <= 0 || n == 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ErrContext is returned when the prompt, or the prompt with the tokens
// asked for, does not fit the context.
var ErrContext = errors.New("context overflow")

// LogitsError is logits that are not finite: the model's weights or its
// computation produce NaN or Inf, and no token chosen from them means
// anything.
type LogitsError struct {
	Step  int     // 0: the logits after the prompt; n: after the n-th generated token
	Index int     // a column holding Value, or -1 when only a summary was checked
	Value float32 // NaN, +Inf or -Inf
}

func (e *LogitsError) Error() string {
	at := ""
	if e.Index >= 0 {
		at = fmt.Sprintf(" at token id %d", e.Index)
	}
	return fmt.Sprintf("step %d: the logits are not finite (%v%s): the model's weights or activations hold NaN or Inf (greta inspect --check, or trace the run to find where)", e.Step, e.Value, at)
}

// CheckLogits returns a *LogitsError if any of vals is NaN or ±Inf. vals is
// a whole row of logits, or what a fast path returned from one (the top-k
// values, the argmax's value). The scan is one multiply-add per value: a
// finite x gives x·0 = 0, a NaN or an infinity gives NaN.
func CheckLogits(step int, vals []float32) error {
	var z float32
	for _, v := range vals {
		z += v * 0
	}
	if z == 0 {
		return nil
	}
	for i, v := range vals {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return &LogitsError{Step: step, Index: i, Value: v}
		}
	}
	return nil
}

// Prefill feeds tokens to the model in batches of s.MaxBatch.
func Prefill(m *llama.Model, s *llama.State, tokens []int32) error {
	return prefill(context.Background(), m, s, tokens, nil)
}

func prefill(ctx context.Context, m *llama.Model, s *llama.State, tokens []int32, progress func(done, total int)) error {
	if progress != nil {
		progress(0, len(tokens))
	}
	for i := 0; i < len(tokens); i += s.MaxBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		j := min(len(tokens), i+s.MaxBatch)
		if err := m.Forward(s, tokens[i:j]); err != nil {
			return err
		}
		if progress != nil {
			progress(j, len(tokens))
		}
	}
	return nil
}

// Run generates from prompt (token ids, BOS included if wanted) on a fresh
// state s.
func Run(m *llama.Model, tok *tokenizer.Tokenizer, s *llama.State, prompt []int32, o Options) (*Result, error) {
	return NewSession(m, tok, s).Generate(context.Background(), prompt, o)
}

// Session is one sequence: a model's state whose KV cache is kept between
// calls of Generate, so that each turn of a conversation feeds only its new
// tokens.
type Session struct {
	m   *llama.Model
	tok *tokenizer.Tokenizer
	s   *llama.State
	// history is every token of the sequence, in the cache or pending.
	history []int32
	// pending are generated tokens not yet in the cache (the last one of a
	// generation is sampled but not fed); the next Generate feeds them first.
	pending []int32
}

// NewSession starts a session on s, emptying its cache.
func NewSession(m *llama.Model, tok *tokenizer.Tokenizer, s *llama.State) *Session {
	s.Pos = 0
	return &Session{m: m, tok: tok, s: s}
}

// Tokens returns every token of the sequence so far.
func (ss *Session) Tokens() []int32 { return ss.history }

// Len is the number of tokens of the sequence so far (in the cache or
// about to be fed).
func (ss *Session) Len() int { return len(ss.history) }

// Context is the number of tokens the session's state holds.
func (ss *Session) Context() int { return ss.s.Context }

// Reset empties the sequence.
func (ss *Session) Reset() {
	ss.s.Pos = 0
	ss.history, ss.pending = nil, nil
}

// Rewind keeps the first n tokens of the sequence and forgets the rest
// (nothing when n is at least Len): the next Generate writes its tokens
// over the cache positions from n on.
func (ss *Session) Rewind(n int) {
	n = max(n, 0)
	if n >= len(ss.history) {
		return
	}
	kept := ss.history[:n:n] // a later append must not write over what callers hold
	if n <= ss.s.Pos {
		ss.s.Pos, ss.pending = n, nil
	} else {
		ss.pending = append([]int32(nil), kept[ss.s.Pos:]...)
	}
	ss.history = kept
}

// Generate appends tokens to the sequence and generates after them. A
// cancelled ctx ends it between two forward calls with StopReason
// "cancelled" and no error; what was fed stays in the sequence.
func (ss *Session) Generate(ctx context.Context, tokens []int32, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	m, s, tok := ss.m, ss.s, ss.tok
	feed := append(append([]int32{}, ss.pending...), tokens...)
	if len(ss.history) == 0 && len(feed) == 0 {
		return nil, errors.New("empty prompt: nothing to condition on (add BOS or some text)")
	}
	if len(feed) == 0 {
		return nil, errors.New("nothing new to generate from: the turn has no tokens")
	}
	if s.Pos+len(feed) > s.Context {
		what := fmt.Sprintf("the prompt has %d tokens", len(feed))
		if s.Pos > 0 {
			what = fmt.Sprintf("%d tokens so far and %d new", s.Pos, len(feed))
		}
		return nil, fmt.Errorf("%w: %s but the context holds %d; raise --ctx (the model was trained on %d) or shorten the prompt",
			ErrContext, what, s.Context, m.Config.ContextLength)
	}
	if o.MaxTokens > 0 && s.Pos+len(feed)+o.MaxTokens-1 > s.Context && !o.StopAtContext {
		return nil, fmt.Errorf("%w: %d prompt tokens + %d to generate exceed the context of %d; raise --ctx, lower --max-tokens, or pass --stop-at-context",
			ErrContext, s.Pos+len(feed), o.MaxTokens, s.Context)
	}
	r := &Result{PromptTokens: tokens, StopToken: -1}
	b := m.Backend
	V := m.Config.VocabSize
	sampler := sample.New(o.Sampling, V)
	dec := tok.NewStreamDecoder()
	stop := NewStopMatcher(o.Stop)
	var text []byte
	emit := func(str string) error {
		if str == "" {
			return nil
		}
		text = append(text, str...)
		if o.OnText != nil {
			return o.OnText(str)
		}
		return nil
	}

	start := time.Now()
	err := prefill(ctx, m, s, feed, o.OnPrefill)
	ss.history = append(ss.history, tokens...) // pending tokens are in it already
	ss.pending = nil
	if err != nil {
		if ctx.Err() != nil {
			// The cache holds the batches fed; keep the sequence consistent.
			ss.history = ss.history[:s.Pos]
			r.StopReason = "cancelled"
			return r, nil
		}
		return nil, err
	}
	if o.MaxTokens == 0 {
		r.PromptTime = time.Since(start)
		r.StopReason = "max_tokens"
		return r, nil
	}
	// Greedy decoding and sampling with top-k need only the device's top 1
	// or top k (and, with penalties, the logits of the recent tokens:
	// sample.Sampler.Want): the full logits are copied only for sampling
	// without top-k or for --debug-decode (probabilities over the row).
	// Each step's logits are checked for NaN and Inf: the whole row where
	// it is copied, the values the device returned on the fast path.
	_, _, useTop := sampler.Want(nil)
	useTop = useTop && o.DebugTop <= 0
	var logits []float32
	if !useTop {
		logits = make([]float32, V)
	}
	top := ml.TopK{Rows: []int32{0}, K: []int32{0}, Gather: [][]int32{nil}}
	history := ss.history
	next := func(step int) (int32, error) {
		if useTop {
			k, gather, _ := sampler.Want(history)
			top.K[0], top.Gather[0] = int32(k), gather
			b.TopK(s.Logits, &top)
			if err := CheckLogits(step, top.Vals); err != nil {
				return 0, err
			}
			return sampler.SampleTop(top.IDs, top.Vals), nil
		}
		b.Read(s.Logits, logits)
		if err := CheckLogits(step, logits); err != nil {
			return 0, err
		}
		id := sampler.Sample(logits, history)
		if o.DebugTop > 0 && o.OnDebug != nil {
			o.OnDebug(step, id, sample.Top(logits, o.DebugTop))
		}
		return id, nil
	}
	id, err := next(0)
	if err != nil {
		return r, err
	}
	r.PromptTime = time.Since(start)
	start = time.Now()
	tokBuf := make([]int32, 1)
	r.StopReason = "max_tokens"
	for step := 0; ; step++ {
		if tok.IsEOG(id) {
			r.StopReason, r.StopToken = "eos", id
			break
		}
		r.Generated = append(r.Generated, id)
		history = append(history, id)
		ss.history, ss.pending = history, []int32{id}
		piece, stopped := stop.Feed(dec.Add(id))
		if err := emit(piece); err != nil {
			return r, err
		}
		if stopped {
			r.StopReason = "stop"
			break
		}
		if o.MaxTokens > 0 && len(r.Generated) >= o.MaxTokens {
			break
		}
		if s.Pos >= s.Context {
			r.StopReason = "context"
			break
		}
		if ctx.Err() != nil {
			r.StopReason = "cancelled"
			break
		}
		tokBuf[0] = id
		if err := m.Forward(s, tokBuf); err != nil {
			return r, err
		}
		ss.pending = nil
		if id, err = next(step + 1); err != nil {
			return r, err
		}
	}
	if !stop.Stopped() {
		tail, stopped := stop.Feed(dec.Flush())
		if stopped {
			r.StopReason = "stop"
		} else {
			tail += stop.Flush()
		}
		if err := emit(tail); err != nil {
			return r, err
		}
	}
	r.GenTime = time.Since(start)
	r.Text = string(text)
	return r, nil
}
