// Package engine runs many sequences on one model at once: requests join
// and leave between forward steps (continuous batching), their keys and
// values live in a shared pool of pages (package kv), full pages of prompt
// tokens are reused by later requests with the same prefix, and a request's
// tokens never depend on what else runs beside it (docs/ENGINE.md).
//
// One goroutine, the scheduler, owns the backend: Submit hands it a
// request and returns the stream of that request's events.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"greta/ml"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

// Options size the engine. Zero values take the defaults.
type Options struct {
	// Parallel is the most sequences running at once (default 64).
	Parallel int
	// Context is the most tokens one sequence may hold, prompt and
	// generated (default: the model's trained context, at most the pool).
	Context int
	// Pages is the number of KV pages of ml.PageSize positions in the pool.
	// If 0, KVBudget bytes decide; if both are 0, enough for Parallel
	// sequences of Context tokens (4096 if unset), at most DefaultKVBudget.
	Pages    int
	KVBudget int64
	// CacheType is the KV cache's value type ("" the backend's default).
	CacheType string
	// PrefillBudget is the most prompt tokens one step computes, over all
	// sequences (chunked prefill; default 512). Decode rows come on top.
	PrefillBudget int
	// QueueSize is the most requests waiting to start; Submit refuses more
	// (default 256).
	QueueSize int
	// NoPrefixCache turns prefix reuse off.
	NoPrefixCache bool
	// LogitRows is the most rows of logits one step computes (default and
	// least: Parallel, one a sequence; at most PrefillBudget+Parallel). A
	// teacher-forced request (Request.Logits) wants one for every prompt
	// row, so its prompt chunks are cut to the rows left: raise LogitRows
	// for such requests, not for the others (each row costs the vocabulary
	// in floats: 0.5 MiB at Llama 3's).
	LogitRows int
}

// DefaultKVBudget is the pool's size when neither Pages nor KVBudget is set.
const DefaultKVBudget = 1 << 30

// Request is one generation.
type Request struct {
	Prompt []int32 // token ids, BOS included if wanted
	// MaxTokens is how many tokens to generate: 0 none (a prompt-only
	// request, e.g. for its logits), < 0 until EOS or the context is full.
	MaxTokens int
	Sampling  sample.Params
	// IgnoreEOS keeps generating past end-of-generation tokens (benchmarks).
	IgnoreEOS bool
	// Logits asks for the logits of every prompt row (teacher forcing):
	// one event per row, in order, before any generated token.
	Logits bool
	// Stop ends generation at the first of these strings, matched across
	// token boundaries; the stop string itself is never in the text.
	Stop []string
	// Constraint, if set, restricts each next token (structured output).
	Constraint Constraint
	// TopLogprobs > 0 attaches the log-probabilities of the chosen token
	// and of the TopLogprobs most likely ones to each generated token.
	TopLogprobs int
}

// Constraint restricts which tokens may come next, e.g. to the strings of a
// JSON schema. The scheduler calls Mask on the logits row before sampling,
// then Accept with the chosen token; once Done, the request ends with
// StopConstraint.
type Constraint interface {
	Mask(logits []float32)
	Accept(id int32) error
	Done() bool
}

// Event is one step of a request's stream.
type Event struct {
	// A generated token and its text (complete UTF-8; may be empty while a
	// character is still forming).
	Token int32
	Text  string
	// Logprob is the chosen token's log-probability and Top the most
	// likely tokens', when the request asked for TopLogprobs.
	Logprob float64
	Top     []sample.Candidate
	// Logits is one prompt row's logits (Request.Logits); Row is its index.
	Logits []float32
	Row    int
	// Done marks the last event, which carries Result.
	Done   bool
	Result *Result
}

// Stop reasons.
const (
	StopEOS        = "eos"        // an end-of-generation token
	StopLength     = "max_tokens" // MaxTokens generated
	StopContext    = "context"    // the sequence filled its context
	StopCancelled  = "cancelled"  // the caller's context ended
	StopString     = "stop"       // one of Request.Stop
	StopConstraint = "constraint" // Request.Constraint is complete
	StopError      = "error"      // Result.Err says why
)

// Result is how a request ended.
type Result struct {
	PromptTokens int
	Generated    []int32
	StopReason   string
	Err          error
	// PrefixHit is how many prompt tokens came from cached pages.
	PrefixHit int
	// Preempted counts the times the request was evicted to free pages
	// and recomputed later.
	Preempted int
	// Queued is the wait before the first step, PromptTime from then to
	// the first generated token (or the end of the prompt), GenTime the
	// rest.
	Queued, PromptTime, GenTime time.Duration
}

// Errors of Submit.
var (
	ErrQueueFull = errors.New("engine: the wait queue is full")
	ErrClosed    = errors.New("engine: closed")
	ErrContext   = errors.New("context overflow")
)

// Stats is a snapshot of the engine's state.
type Stats struct {
	Waiting, Running            int
	Pages, PagesUsed, PagesFree int // PagesFree counts cached ones too
	PagesCached                 int
	PrefixHitTokens             int64 // prompt tokens taken from the cache, in all
	PromptTokens, GenTokens     int64 // computed, in all
	Steps, Preemptions          int64
	PageSize, Parallel, Context int
	PrefillBudget, MaxQueue     int
	LastStepRows                int
	LastStepTime                time.Duration
}

// Engine runs requests on one model.
type Engine struct {
	m     *llama.Model
	tok   *tokenizer.Tokenizer
	o     Options
	vocab int

	mu      sync.Mutex
	pending []*seq // submitted, not yet seen by the scheduler
	closed  bool
	stats   Stats
	wake    chan struct{}
	done    chan struct{}

	s *scheduler // the scheduler goroutine's own state
}

// New starts an engine on a loaded model. It allocates the KV pool and the
// activations of the largest step, so it fails here, not later, when they
// do not fit.
func New(m *llama.Model, tok *tokenizer.Tokenizer, o Options) (*Engine, error) {
	c := m.Config
	if o.Parallel <= 0 {
		o.Parallel = 64
	}
	if o.PrefillBudget <= 0 {
		o.PrefillBudget = 512
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.Parallel > 1<<16 || o.PrefillBudget > 1<<20 || o.QueueSize > 1<<24 {
		return nil, fmt.Errorf("engine: parallel %d, prefill budget %d, queue %d: too large", o.Parallel, o.PrefillBudget, o.QueueSize)
	}
	pageBytes := int64(c.NLayers) * int64(ml.PageSize) * int64(c.KVDim()) * 2 * cacheElemBytes(m.Backend, o.CacheType)
	if o.Pages <= 0 {
		budget := o.KVBudget
		if budget <= 0 {
			seq := o.Context
			if seq <= 0 {
				seq = min(c.ContextLength, 4096)
			}
			if seq <= 0 {
				seq = 4096
			}
			want := int64(o.Parallel) * int64(seq) * pageBytes / ml.PageSize
			budget = min(want, DefaultKVBudget)
		}
		o.Pages = int(budget / pageBytes)
	}
	if o.Pages < 1 {
		return nil, fmt.Errorf("engine: a KV budget of %d bytes holds no page of %d tokens (%d bytes)", o.KVBudget, ml.PageSize, pageBytes)
	}
	if o.Context <= 0 {
		o.Context = c.ContextLength
	}
	o.Context = min(o.Context, o.Pages*ml.PageSize)
	maxRows := o.PrefillBudget + o.Parallel
	o.LogitRows = min(max(o.LogitRows, o.Parallel), maxRows)
	if err := checkHostMemory(m, o, pageBytes, maxRows); err != nil {
		return nil, err
	}
	cache, err := m.Backend.NewKVCache(ml.KVSpec{Layers: c.NLayers, KVDim: c.KVDim(), Pages: o.Pages, DType: o.CacheType})
	if err != nil {
		return nil, err
	}
	e := &Engine{m: m, tok: tok, o: o, vocab: c.VocabSize, wake: make(chan struct{}, 1), done: make(chan struct{})}
	// Logits are computed for a sequence's last row only (teacher-forced
	// requests aside, whose prompt chunks build cuts to the rows left),
	// so a step needs LogitRows of them, not maxRows: at Llama 3's
	// vocabulary a row is 0.5 MiB, 262 MiB for the 512 prompt rows of a
	// step.
	e.s = newScheduler(e, cache, m.NewBatchState(maxRows, o.LogitRows))
	e.stats = Stats{Pages: o.Pages, PagesFree: o.Pages, PageSize: ml.PageSize, Parallel: o.Parallel, Context: o.Context,
		PrefillBudget: o.PrefillBudget, MaxQueue: o.QueueSize}
	go e.s.loop()
	return e, nil
}

// checkHostMemory refuses a pool and activations that do not fit in the
// machine's memory, before anything is allocated, on backends that keep
// them in host memory (a GPU backend checks its own memory as it
// allocates).
func checkHostMemory(m *llama.Model, o Options, pageBytes int64, maxRows int) error {
	if m.Backend.Name() == "cuda" {
		return nil
	}
	act, err := llama.MemoryNeeded(m.Config, ml.PageSize, maxRows)
	if err != nil {
		return err
	}
	need := int64(o.Pages)*pageBytes + act
	avail, src, err := llama.AvailableMemory()
	if err != nil || need <= avail {
		return nil
	}
	return &llama.MemoryError{What: fmt.Sprintf("a KV pool of %d tokens and activations for %d rows", o.Pages*ml.PageSize, maxRows),
		Need: need, Available: avail, Source: src, Hint: "use a smaller context, fewer parallel sequences or a smaller KV budget"}
}

// cacheElemBytes is the size of one cached value on b.
func cacheElemBytes(b ml.Backend, t string) int64 {
	switch {
	case b.DType() == "f64":
		return 8
	case t == "f16", t == "" && b.Name() == "cuda":
		return 2
	}
	return 4
}

// Options returns the engine's settings, defaults filled in.
func (e *Engine) Options() Options { return e.o }

// Model returns the model the engine runs.
func (e *Engine) Model() *llama.Model { return e.m }

// Tokenizer returns the model's tokenizer.
func (e *Engine) Tokenizer() *tokenizer.Tokenizer { return e.tok }

// Stats returns a snapshot of the queue, the pool and the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Waiting += len(e.pending)
	return s
}

// Check reports whether r can run, without submitting it: the errors
// Submit would return for the request itself.
func (e *Engine) Check(r *Request) error {
	n := len(r.Prompt)
	if n == 0 {
		return errors.New("empty prompt: nothing to condition on (add BOS or some text)")
	}
	for _, t := range r.Prompt {
		if t < 0 || int(t) >= e.vocab {
			return fmt.Errorf("token id %d is outside the vocabulary (0..%d)", t, e.vocab-1)
		}
	}
	if n > e.o.Context {
		return fmt.Errorf("%w: the prompt has %d tokens but a sequence holds at most %d", ErrContext, n, e.o.Context)
	}
	if r.MaxTokens > 0 && n+r.MaxTokens > e.o.Context {
		return fmt.Errorf("%w: %d prompt tokens + %d to generate exceed the context of %d", ErrContext, n, r.MaxTokens, e.o.Context)
	}
	return nil
}

// Submit queues a request and returns its stream of events, which ends
// with an event whose Done is set. Cancelling ctx ends the request within
// one step and frees its pages. The caller must read the stream to its end
// or cancel ctx.
func (e *Engine) Submit(ctx context.Context, r Request) (<-chan Event, error) {
	if err := e.Check(&r); err != nil {
		return nil, err
	}
	s := newSeq(ctx, e, r)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	if e.stats.Waiting+len(e.pending) >= e.o.QueueSize {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: %d requests are waiting (the limit is %d); try again later", ErrQueueFull, e.stats.Waiting+len(e.pending), e.o.QueueSize)
	}
	// The scheduler sets s.out to nil when s finishes, which may be before
	// Submit returns: take the outbox while s is still ours alone.
	out := s.out
	e.pending = append(e.pending, s)
	go out.forward(ctx)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return out.ch, nil
}

// Close ends every request in flight (with StopError and ErrClosed) and
// stops the scheduler. The backend stays open: it is the caller's.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.done
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	<-e.done
	return nil
}

// Generate runs one request to its end and returns its result, calling
// onEvent (if not nil) for each event: the blocking form of Submit.
func (e *Engine) Generate(ctx context.Context, r Request, onEvent func(Event)) (*Result, error) {
	ch, err := e.Submit(ctx, r)
	if err != nil {
		return nil, err
	}
	for ev := range ch {
		if onEvent != nil {
			onEvent(ev)
		}
		if ev.Done {
			return ev.Result, ev.Result.Err
		}
	}
	return nil, errors.New("engine: stream ended without a result")
}
