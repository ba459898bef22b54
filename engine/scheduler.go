package engine

import (
	"context"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"greta/generate"
	"greta/kv"
	"greta/ml"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

// seq is one request as the scheduler sees it.
type seq struct {
	ctx context.Context
	req Request
	out *outbox

	toks    []int32 // prompt, then the generated tokens
	nPrompt int
	cached  int      // tokens whose keys and values are in pages
	pages   []int32  // page table: positions 16j.. in pages[j]
	keys    []kv.Key // keys of the first len(keys) pages, all prompt
	hit     int      // prompt tokens taken from the cache
	order   int64    // admission order: the newest is preempted first
	logRows int      // prompt rows whose logits were sent (Logits)

	sampler *sample.Sampler // nil until the first token that is not greedy
	dec     *tokenizer.StreamDecoder
	stop    *generate.StopMatcher
	greedy  bool

	submitted, admitted, first time.Time
	preempted                  int
}

func newSeq(ctx context.Context, e *Engine, r Request) *seq {
	s := &seq{ctx: ctx, req: r, out: newOutbox(ctx), nPrompt: len(r.Prompt), submitted: time.Now()}
	s.toks = append(make([]int32, 0, len(r.Prompt)+max(r.MaxTokens, 0)), r.Prompt...)
	// Penalties change the logits before the argmax: only the sampler
	// applies them.
	s.greedy = (r.Sampling.Greedy || r.Sampling.Temp <= 0) && !r.Sampling.Penalized()
	s.dec = e.tok.NewStreamDecoder()
	s.stop = generate.NewStopMatcher(r.Stop)
	return s
}

// generated is the number of tokens generated so far.
func (s *seq) generated() int { return len(s.toks) - s.nPrompt }

// outbox carries a request's events from the scheduler, which never
// blocks on a slow reader, to the reader's channel.
type outbox struct {
	mu     sync.Mutex
	queue  []Event
	signal chan struct{}
	ch     chan Event
}

func newOutbox(ctx context.Context) *outbox {
	return &outbox{signal: make(chan struct{}, 1), ch: make(chan Event, 16)}
}

func (o *outbox) put(ev Event) {
	o.mu.Lock()
	o.queue = append(o.queue, ev)
	o.mu.Unlock()
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

// forward moves events to ch until the last one. Once ctx ends the reader
// is gone: the rest is dropped, and forward only waits for the last event,
// which the scheduler sends within a step.
func (o *outbox) forward(ctx context.Context) {
	defer close(o.ch)
	gone := false
	for {
		o.mu.Lock()
		q := o.queue
		o.queue = nil
		o.mu.Unlock()
		for _, ev := range q {
			if !gone {
				select {
				case o.ch <- ev:
				case <-ctx.Done():
					gone = true
				}
			}
			if ev.Done {
				return
			}
		}
		<-o.signal
	}
}

// scheduler is the state of the goroutine that owns the backend.
type scheduler struct {
	e     *Engine
	m     *llama.Model
	b     ml.Backend
	cache ml.KVCache
	st    *llama.State
	pool  *kv.Pool

	waiting []*seq
	running []*seq
	order   int64

	// The step being built, reused.
	batch   ml.Batch
	tokens  []int32
	inStep  []*seq // the sequences of the step, in row order
	rows    [][2]int
	logits  []float32
	outSeq  []int    // per Out row: index into inStep
	outRow  []int    // per Out row: the row's index in its sequence's toks
	read    readMode // how forward read the step's Out rows
	argmax  []int32  // per Out row, when readArgmax
	top     ml.TopK  // per Out row, when readTop: its candidates
	counter Stats
	maxOut  int // rows of logits a step can have (st's)
}

func newScheduler(e *Engine, cache ml.KVCache, st *llama.State) *scheduler {
	return &scheduler{e: e, m: e.m, b: e.m.Backend, cache: cache, st: st, pool: kv.NewPool(cache.Spec().Pages), maxOut: e.o.LogitRows}
}

func (s *scheduler) loop() {
	defer close(s.e.done)
	for {
		e := s.e
		e.mu.Lock()
		closed := e.closed
		s.waiting = append(s.waiting, e.pending...)
		clear(e.pending) // reused: keep no finished request alive
		e.pending = e.pending[:0]
		e.mu.Unlock()
		if closed {
			for _, q := range append(s.running, s.waiting...) {
				s.finish(q, StopError, ErrClosed)
			}
			s.running, s.waiting = nil, nil
			s.publish()
			return
		}
		if len(s.waiting) == 0 && len(s.running) == 0 {
			s.publish()
			<-e.wake
			continue
		}
		s.step()
		s.publish()
	}
}

// publish copies the scheduler's counters into the engine's Stats.
func (s *scheduler) publish() {
	e := s.e
	e.mu.Lock()
	c := &e.stats
	c.Waiting, c.Running = len(s.waiting), len(s.running)
	c.PagesUsed, c.PagesFree, c.PagesCached = s.pool.Used(), s.pool.Free(), s.pool.Cached()
	c.PrefixHitTokens, c.PromptTokens, c.GenTokens = s.counter.PrefixHitTokens, s.counter.PromptTokens, s.counter.GenTokens
	c.Steps, c.Preemptions = s.counter.Steps, s.counter.Preemptions
	c.LastStepRows, c.LastStepTime = s.counter.LastStepRows, s.counter.LastStepTime
	e.mu.Unlock()
}

// step runs one forward pass: a decode row for every running sequence that
// has its prompt in the cache, and prompt chunks up to the budget.
func (s *scheduler) step() {
	s.dropCancelled()
	s.admit()
	if !s.build() {
		return
	}
	// The step's references to its sequences go when it ends, so that an
	// idle engine holds no finished request.
	defer func() {
		clear(s.inStep)
		clear(s.batch.Pages)
	}()
	start := time.Now()
	err := s.forward()
	s.counter.LastStepTime = time.Since(start)
	s.counter.LastStepRows = len(s.tokens)
	s.counter.Steps++
	if err != nil {
		for _, q := range s.inStep {
			s.finish(q, StopError, err)
		}
		s.running = slices.DeleteFunc(s.running, func(q *seq) bool { return q.out == nil })
		return
	}
	s.advance()
}

// dropCancelled ends the requests whose callers went away.
func (s *scheduler) dropCancelled() {
	keep := s.waiting[:0]
	for _, q := range s.waiting {
		if q.ctx.Err() != nil {
			s.finish(q, StopCancelled, nil)
			continue
		}
		keep = append(keep, q)
	}
	clear(s.waiting[len(keep):])
	s.waiting = keep
	keep = s.running[:0]
	for _, q := range s.running {
		if q.ctx.Err() != nil {
			s.finish(q, StopCancelled, nil)
			continue
		}
		keep = append(keep, q)
	}
	clear(s.running[len(keep):])
	s.running = keep
}

// admit starts waiting requests, first come first served, while there are
// slots and pages for their whole prompt.
func (s *scheduler) admit() {
	for len(s.waiting) > 0 && len(s.running) < s.e.o.Parallel {
		q := s.waiting[0]
		s.lookupPrefix(q)
		need := (len(q.toks)+ml.PageSize-1)/ml.PageSize - len(q.pages)
		if need > s.pool.Free() && len(s.running) > 0 {
			s.releasePages(q) // wait for pages; keep the cached ones cached
			return
		}
		s.waiting[0] = nil
		s.waiting = s.waiting[1:]
		s.order++
		q.order = s.order
		if q.admitted.IsZero() {
			q.admitted = time.Now()
		}
		s.running = append(s.running, q)
	}
}

// lookupPrefix takes the cached pages that hold q's prompt prefix. At
// least one prompt token is always computed, for its logits; only pages of
// prompt tokens are ever cached (a generated token's numerics may differ
// from a prompt token's, see ml.Batch).
func (s *scheduler) lookupPrefix(q *seq) {
	if s.e.o.NoPrefixCache || q.req.Logits || len(q.pages) > 0 {
		return
	}
	limit := min(q.nPrompt/ml.PageSize, (len(q.toks)-1)/ml.PageSize)
	var prev kv.Key
	for j := 0; j < limit; j++ {
		t := q.toks[j*ml.PageSize : (j+1)*ml.PageSize]
		k := s.pool.KeyOf(prev, t, 0)
		page, ok := s.pool.Lookup(k, prev, t)
		if !ok {
			break
		}
		q.pages = append(q.pages, page)
		q.keys = append(q.keys, k)
		prev = k
	}
	q.cached = len(q.pages) * ml.PageSize
	if q.preempted == 0 {
		q.hit = q.cached
		s.counter.PrefixHitTokens += int64(q.cached)
	}
}

func (s *scheduler) releasePages(q *seq) {
	for _, p := range q.pages {
		s.pool.Release(p)
	}
	q.pages, q.keys, q.cached = q.pages[:0], q.keys[:0], 0
}

// build lays out the step's rows. It returns false when there is nothing
// to run.
func (s *scheduler) build() bool {
	for {
		clear(s.inStep) // reused: keep no finished request alive
		s.inStep, s.rows = s.inStep[:0], s.rows[:0]
		budget := s.e.o.PrefillBudget
		stuck := false
		// Decode rows first: every sequence with only its newest token
		// left to feed.
		for i := 0; i < len(s.running); i++ {
			q := s.running[i]
			if len(q.toks)-q.cached != 1 || q.cached < q.nPrompt {
				continue
			}
			if !s.ensurePages(q, q.cached+1) {
				if s.preemptNewest(q) {
					return s.build() // the running list changed: lay out again
				}
				stuck = true
				continue
			}
			s.inStep = append(s.inStep, q)
			s.rows = append(s.rows, [2]int{q.cached, q.cached + 1})
		}
		// Prompt chunks (and recomputation after preemption), oldest first.
		// Every sequence takes at most one row of logits, but a
		// teacher-forced one (Logits) takes one per prompt row: its chunk is
		// cut to the logit rows left once every later chunk has its one.
		outs := len(s.inStep)
		for i, q := range s.running {
			left := len(q.toks) - q.cached
			if budget == 0 || left == 0 || (left == 1 && q.cached >= q.nPrompt) {
				continue
			}
			n := min(left, budget)
			if q.req.Logits {
				room := s.maxOut - outs
				for _, r := range s.running[i+1:] {
					if l := len(r.toks) - r.cached; l > 1 || (l == 1 && r.cached < r.nPrompt) {
						room-- // a later chunk's row of logits
					}
				}
				if room < 1 {
					continue // the next step
				}
				n = min(n, room)
			}
			if !s.ensurePages(q, q.cached+n) {
				// As many rows as the pages already held cover.
				n = len(q.pages)*ml.PageSize - q.cached
				if n <= 0 {
					stuck = true
					continue
				}
			}
			budget -= n
			s.inStep = append(s.inStep, q)
			s.rows = append(s.rows, [2]int{q.cached, q.cached + n})
			if q.req.Logits {
				outs += n
			} else {
				outs++
			}
		}
		if len(s.inStep) > 0 {
			s.layout()
			return true
		}
		if !stuck || len(s.running) <= 1 {
			if stuck {
				// One sequence alone cannot get its pages: Submit's checks
				// make this impossible; fail it rather than spin.
				s.finish(s.running[0], StopError, fmt.Errorf("engine: no KV page left for a single sequence"))
				clear(s.running)
				s.running = s.running[:0]
			}
			return false
		}
		s.preemptNewest(nil)
	}
}

// ensurePages gives q pages for positions up to n-1.
func (s *scheduler) ensurePages(q *seq, n int) bool {
	for len(q.pages)*ml.PageSize < n {
		p, ok := s.pool.Alloc()
		if !ok {
			return false
		}
		q.pages = append(q.pages, p)
	}
	return true
}

// preemptNewest evicts the most recently admitted running sequence other
// than keep (if there is one): its pages go back to the pool and it waits
// at the head of the queue to be recomputed. It reports whether it evicted.
func (s *scheduler) preemptNewest(keep *seq) bool {
	best := -1
	for i, q := range s.running {
		if q != keep && (best < 0 || q.order > s.running[best].order) {
			best = i
		}
	}
	if best < 0 {
		return false
	}
	q := s.running[best]
	s.running = slices.Delete(s.running, best, best+1)
	s.releasePages(q)
	q.preempted++
	s.counter.Preemptions++
	s.waiting = slices.Insert(s.waiting, 0, q)
	return true
}

// layout fills the batch from inStep and rows.
func (s *scheduler) layout() {
	b := &s.batch
	clear(b.Pages)
	b.Pos, b.Seq, b.Gen, b.Out, b.Pages = b.Pos[:0], b.Seq[:0], b.Gen[:0], b.Out[:0], b.Pages[:0]
	s.tokens, s.outSeq, s.outRow = s.tokens[:0], s.outSeq[:0], s.outRow[:0]
	for i, q := range s.inStep {
		r := s.rows[i]
		b.Pages = append(b.Pages, q.pages)
		for p := r[0]; p < r[1]; p++ {
			row := int32(len(b.Pos))
			b.Pos = append(b.Pos, int32(p))
			b.Seq = append(b.Seq, int32(i))
			b.Gen = append(b.Gen, p >= q.nPrompt)
			s.tokens = append(s.tokens, q.toks[p])
			if (q.req.Logits && p < q.nPrompt) || p == len(q.toks)-1 {
				b.Out = append(b.Out, row)
				s.outSeq = append(s.outSeq, i)
				s.outRow = append(s.outRow, p)
			}
		}
	}
}

// forward runs the step on the backend; a panic there (a bug) fails the
// step's requests, not the engine.
func (s *scheduler) forward() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine: forward step failed: %v\n%s", r, debug.Stack())
		}
	}()
	if err := s.m.ForwardBatch(s.st, s.cache, s.tokens, &s.batch); err != nil {
		return err
	}
	if len(s.batch.Out) == 0 {
		return nil
	}
	s.read = s.readMode()
	switch s.read {
	case readArgmax:
		s.argmax = grow(s.argmax, len(s.batch.Out))
		s.b.Argmax(s.st.Logits, s.argmax)
	case readTop:
		s.b.TopK(s.st.Logits, &s.top)
	default:
		s.logits = grow(s.logits, len(s.batch.Out)*s.e.vocab)
		s.b.Read(s.st.Logits, s.logits)
	}
	return nil
}

// readMode is how a step reads its Out rows (docs/ENGINE.md, "Sampling a
// step"), from the least a row needs.
type readMode uint8

const (
	readLogits readMode = iota // every row's logits
	readArgmax                 // each row's argmax id (CUDA, all rows greedy)
	readTop                    // one Backend.TopK for all rows: each row's candidates
)

// readMode picks the step's readMode and, for readTop, fills s.top: row
// o of the logits asks for k 1 when greedy, else what its sampler Wants.
// Every mode gives each row the token it gets alone (sample.Sampler.Want
// says why the candidates suffice), so a request's tokens do not depend
// on the company it keeps.
func (s *scheduler) readMode() readMode {
	argmax := s.b.Name() == "cuda" // where the argmax kernel beats a top-1 select
	for _, i := range s.outSeq {
		q := s.inStep[i]
		if q.req.Logits || q.req.TopLogprobs > 0 || q.req.Constraint != nil {
			return readLogits
		}
		argmax = argmax && q.greedy
	}
	if argmax {
		return readArgmax
	}
	t := &s.top
	t.Rows, t.K = t.Rows[:0], t.K[:0]
	clear(t.Gather) // holds the samplers' lists: keep no finished request alive
	t.Gather = t.Gather[:0]
	for o, i := range s.outSeq {
		q := s.inStep[i]
		k, gather := 1, []int32(nil)
		if !q.greedy && q.out != nil && q.req.MaxTokens != 0 { // else nothing is sampled
			if q.sampler == nil {
				// Made at the first sampled token, not at Submit: a greedy
				// request never needs its vocabulary-sized buffers (a
				// quarter of a MiB a request at 32,000 tokens, for every
				// running and waiting one).
				q.sampler = sample.New(q.req.Sampling, s.e.vocab)
			}
			var ok bool
			if k, gather, ok = q.sampler.Want(q.toks); !ok {
				return readLogits // sampling without top-k needs the whole row
			}
		}
		t.Rows = append(t.Rows, int32(o))
		t.K = append(t.K, int32(k))
		t.Gather = append(t.Gather, gather)
	}
	return readTop
}

// advance books the step: cached tokens, full prompt pages keyed for
// reuse, and a sampled token for every sequence whose last row ran.
func (s *scheduler) advance() {
	V := s.e.vocab
	for i, q := range s.inStep {
		r := s.rows[i]
		q.cached = r[1]
		if q.req.Logits || q.preempted == 0 {
			s.counter.PromptTokens += int64(max(0, min(r[1], q.nPrompt)-r[0]))
		}
		s.registerPages(q)
	}
	e := 0 // the first entry of row o in s.top
	for o, i := range s.outSeq {
		q := s.inStep[i]
		p := s.outRow[o]
		switch s.read {
		case readArgmax:
			if p == len(q.toks)-1 && q.out != nil {
				s.nextID(q, s.argmax[o], Event{})
			}
			continue
		case readTop:
			n := int(s.top.K[o]) + len(s.top.Gathered(o))
			if p == len(q.toks)-1 && q.out != nil {
				s.nextTop(q, s.top.IDs[e:e+n], s.top.Vals[e:e+n])
			}
			e += n
			continue
		}
		row := s.logits[o*V : (o+1)*V]
		if q.req.Logits && p < q.nPrompt {
			if p >= q.logRows {
				q.out.put(Event{Logits: slices.Clone(row), Row: p})
				q.logRows = p + 1
			}
		}
		if p != len(q.toks)-1 || q.out == nil {
			continue
		}
		s.next(q, row)
	}
	// Requests that asked for nothing beyond the prompt end with it.
	keep := s.running[:0]
	for _, q := range s.running {
		if q.req.MaxTokens == 0 && q.cached >= q.nPrompt {
			s.finish(q, StopLength, nil)
			continue
		}
		if q.out == nil {
			continue // finished in next
		}
		keep = append(keep, q)
	}
	clear(s.running[len(keep):])
	s.running = keep
}

// registerPages keys q's full pages of prompt tokens.
func (s *scheduler) registerPages(q *seq) {
	if s.e.o.NoPrefixCache || q.req.Logits {
		return
	}
	for j := len(q.keys); (j+1)*ml.PageSize <= min(q.cached, q.nPrompt); j++ {
		var prev kv.Key
		if j > 0 {
			prev = q.keys[j-1]
		}
		t := q.toks[j*ml.PageSize : (j+1)*ml.PageSize]
		k := s.pool.KeyOf(prev, t, 0)
		s.pool.Register(q.pages[j], k, prev, t)
		q.keys = append(q.keys, k)
	}
}

// next samples q's next token from its logits row and streams it.
func (s *scheduler) next(q *seq, row []float32) {
	if q.req.MaxTokens == 0 {
		return
	}
	var id int32
	var ev Event
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("engine: sampling failed: %v", r)
			}
		}()
		if c := q.req.Constraint; c != nil {
			c.Mask(row)
		}
		if q.greedy {
			id = sample.Greedy(row)
		} else {
			if q.sampler == nil {
				q.sampler = sample.New(q.req.Sampling, len(row)) // see readMode
			}
			id = q.sampler.Sample(row, q.toks)
		}
		if v := row[id]; math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nonFinite(q)
		}
		if q.req.TopLogprobs > 0 {
			ev.Logprob, ev.Top = logprobs(row, id, q.req.TopLogprobs)
		}
		if c := q.req.Constraint; c != nil {
			return c.Accept(id)
		}
		return nil
	}()
	if err != nil {
		s.finish(q, StopError, err)
		return
	}
	s.nextID(q, id, ev)
}

// nextTop samples q's next token from its candidates (readTop: the row's
// k largest logits and its gathered ones) and streams it. Every value the
// device returned is checked: a NaN ranks above every number there
// (kernels/topk.cu's keys), so a row that holds one shows it.
func (s *scheduler) nextTop(q *seq, ids []int32, vals []float32) {
	if q.req.MaxTokens == 0 {
		return
	}
	var id int32
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("engine: sampling failed: %v", r)
			}
		}()
		for _, v := range vals {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nonFinite(q)
			}
		}
		if q.greedy {
			id = ids[0]
		} else {
			id = q.sampler.SampleTop(ids, vals)
		}
		return nil
	}()
	if err != nil {
		s.finish(q, StopError, err)
		return
	}
	s.nextID(q, id, Event{})
}

func nonFinite(q *seq) error {
	return fmt.Errorf("non-finite logits at generation step %d (position %d): the model's weights or activations hold NaN or Inf (greta inspect --check scans the file)", q.generated(), len(q.toks)-1)
}

// nextID streams q's next token id (ev may carry its logprobs).
func (s *scheduler) nextID(q *seq, id int32, ev Event) {
	if q.req.MaxTokens == 0 {
		return
	}
	if q.first.IsZero() {
		q.first = time.Now()
	}
	if !q.req.IgnoreEOS && s.e.tok.IsEOG(id) {
		s.finish(q, StopEOS, nil)
		return
	}
	q.toks = append(q.toks, id)
	s.counter.GenTokens++
	text, stopped := q.stop.Feed(q.dec.Add(id))
	ev.Token, ev.Text = id, text
	q.out.put(ev)
	switch {
	case stopped:
		s.finish(q, StopString, nil)
	case q.req.Constraint != nil && q.req.Constraint.Done():
		s.finish(q, StopConstraint, nil)
	case q.req.MaxTokens > 0 && q.generated() >= q.req.MaxTokens:
		s.finish(q, StopLength, nil)
	case len(q.toks) >= s.e.o.Context:
		s.finish(q, StopContext, nil)
	}
}

// finish ends q: its pages go back to the pool and its last event out.
func (s *scheduler) finish(q *seq, reason string, err error) {
	if q.out == nil {
		return
	}
	s.releasePages(q)
	now := time.Now()
	r := &Result{PromptTokens: q.nPrompt, Generated: slices.Clone(q.toks[q.nPrompt:]), StopReason: reason, Err: err,
		PrefixHit: q.hit, Preempted: q.preempted}
	if !q.admitted.IsZero() {
		r.Queued = q.admitted.Sub(q.submitted)
		end := q.first
		if end.IsZero() {
			end = now
		}
		r.PromptTime = end.Sub(q.admitted)
		if !q.first.IsZero() {
			r.GenTime = now.Sub(q.first)
		}
	} else {
		r.Queued = now.Sub(q.submitted)
	}
	// The last event carries the text still held back (an incomplete
	// UTF-8 sequence at the end), if any.
	tail := ""
	if !q.stop.Stopped() {
		tail, _ = q.stop.Feed(q.dec.Flush())
		tail += q.stop.Flush()
	}
	q.out.put(Event{Token: -1, Text: tail, Done: true, Result: r})
	q.out = nil
}

// logprobs returns the log-probability of id and the k most likely tokens
// of a logits row.
func logprobs(row []float32, id int32, k int) (float64, []sample.Candidate) {
	m := math.Inf(-1)
	for _, v := range row {
		m = max(m, float64(v))
	}
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v) - m)
	}
	lse := m + math.Log(sum)
	top := sample.Top(row, k)
	for i := range top {
		top[i].P = float64(top[i].Logit) - lse
	}
	return float64(row[id]) - lse, top
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
