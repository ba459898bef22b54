package llama

import (
	"fmt"

	"greta/ml"
)

// State is the run state of a forward pass (llama2.c's RunState): every
// activation buffer, allocated once so that decoding makes no allocations.
// Buffers hold up to MaxBatch rows (tokens, from any number of sequences).
//
// A State made by NewState also owns a KV cache for one sequence of Context
// tokens (pages 0, 1, 2, ... in order) and Forward appends to it: the
// single-sequence run of the CLI and the tests. The engine makes its State
// with NewBatchState and passes its own cache and batch to ForwardBatch.
type State struct {
	MaxBatch int
	Context  int // the own sequence's capacity (NewState)
	Pos      int // tokens in the own sequence's cache (NewState)

	x      ml.Tensor // [dim, n]        residual stream
	xb     ml.Tensor // [dim, n]        normed input of a sublayer
	xb2    ml.Tensor // [dim, n]        sublayer output before the residual add
	q      ml.Tensor // [n_heads·head_dim, n]
	k      ml.Tensor // [n_kv_heads·head_dim, n]
	v      ml.Tensor // [n_kv_heads·head_dim, n]
	att    ml.Tensor // [n_heads·head_dim, n] attention output before wo
	hb     ml.Tensor // [hidden_dim, n] silu(gate)·up
	last   ml.Tensor // [dim, n_out]    final-normed rows that get logits
	Logits ml.Tensor // [vocab, n_out]  one row per Batch.Out row

	cache     ml.KVCache // NewState's own cache
	allLogits bool
	maxOut    int
	own       ml.Batch // Forward's batch, reused
}

// NewState allocates the run state of one sequence with its own KV cache
// for a context of ctx tokens, processing up to maxBatch tokens per forward
// call. With allLogits, Forward computes logits for every row instead of
// only the last.
func (m *Model) NewState(ctx, maxBatch int, allLogits bool) (*State, error) {
	c, b := m.Config, m.Backend
	if err := m.checkState(ctx, max(maxBatch, 1), allLogits); err != nil {
		return nil, err
	}
	maxBatch = max(1, min(maxBatch, ctx))
	cache, err := b.NewKVCache(ml.KVSpec{Layers: c.NLayers, KVDim: c.KVDim(), Pages: (ctx + ml.PageSize - 1) / ml.PageSize, DType: m.CacheType})
	if err != nil {
		return nil, err
	}
	maxOut := 1
	if allLogits {
		maxOut = maxBatch
	}
	s := m.NewBatchState(maxBatch, maxOut)
	s.Context, s.cache, s.allLogits = ctx, cache, allLogits
	return s, nil
}

// NewBatchState allocates activations for forward calls of up to maxBatch
// rows, of which up to maxOut get logits.
func (m *Model) NewBatchState(maxBatch, maxOut int) *State {
	c, b := m.Config, m.Backend
	maxBatch = max(1, maxBatch)
	maxOut = max(1, min(maxOut, maxBatch))
	s := &State{MaxBatch: maxBatch, maxOut: maxOut}
	qd := c.QDim()
	s.x = b.NewTensor(c.Dim, maxBatch)
	s.xb = b.NewTensor(c.Dim, maxBatch)
	s.xb2 = b.NewTensor(c.Dim, maxBatch)
	s.q = b.NewTensor(qd, maxBatch)
	s.k = b.NewTensor(c.KVDim(), maxBatch)
	s.v = b.NewTensor(c.KVDim(), maxBatch)
	s.att = b.NewTensor(qd, maxBatch)
	s.hb = b.NewTensor(c.HiddenDim, maxBatch)
	s.last = b.NewTensor(c.Dim, maxOut)
	s.Logits = b.NewTensor(c.VocabSize, maxOut)
	return s
}

func (s *State) setRows(n, nOut int) {
	for _, t := range []ml.Tensor{s.x, s.xb, s.xb2, s.q, s.k, s.v, s.att, s.hb} {
		t.SetRows(n)
	}
	if nOut > 0 {
		s.last.SetRows(nOut)
		s.Logits.SetRows(nOut)
	}
}

// Forward runs the model over tokens at positions s.Pos, s.Pos+1, ... of
// the State's own sequence (NewState) and appends them to its KV cache. It
// leaves in s.Logits the logits after the last token (or after every
// token, with allLogits). len(tokens) must be at most s.MaxBatch and fit in
// the context.
func (m *Model) Forward(s *State, tokens []int32) error {
	n := len(tokens)
	if s.cache == nil {
		return fmt.Errorf("forward: this state has no cache of its own (use ForwardBatch)")
	}
	if n == 0 || n > s.MaxBatch {
		return fmt.Errorf("forward: %d tokens, expected 1..%d", n, s.MaxBatch)
	}
	if s.Pos+n > s.Context {
		return fmt.Errorf("context is full: %d tokens + %d new > context size %d", s.Pos, n, s.Context)
	}
	if err := m.ForwardBatch(s, s.cache, tokens, s.ownBatch(n)); err != nil {
		return err
	}
	s.Pos += n
	return nil
}

// ownBatch describes the next n tokens of the own sequence: pages in pool
// order, logits for the last row (or every row), and the roles of today's
// single-sequence run: one token is a generated one, more are a prompt.
func (s *State) ownBatch(n int) *ml.Batch {
	b := &s.own
	if b.Pages == nil {
		pages := make([]int32, s.cache.Spec().Pages)
		for j := range pages {
			pages[j] = int32(j)
		}
		b.Pages = [][]int32{pages}
		b.Pos, b.Seq = make([]int32, 0, s.MaxBatch), make([]int32, s.MaxBatch)
		b.Out = make([]int32, 0, s.MaxBatch)
		b.Gen = make([]bool, 0, s.MaxBatch)
	}
	b.Pos, b.Seq, b.Out, b.Gen = b.Pos[:0], b.Seq[:n], b.Out[:0], b.Gen[:0]
	for i := range n {
		b.Pos = append(b.Pos, int32(s.Pos+i))
		b.Gen = append(b.Gen, n == 1)
		if s.allLogits || i == n-1 {
			b.Out = append(b.Out, int32(i))
		}
	}
	return b
}

// ForwardBatch runs the model over the rows of batch (tokens[i] is row i's
// token), storing their keys and values in cache's pages, and leaves in
// s.Logits one row of logits for each of batch.Out (none may be wanted). Every row's result
// depends only on its own sequence's tokens and its role, never on the
// other rows (see docs/ENGINE.md).
func (m *Model) ForwardBatch(s *State, cache ml.KVCache, tokens []int32, batch *ml.Batch) error {
	n, nOut := len(tokens), len(batch.Out)
	if n == 0 || n > s.MaxBatch || batch.Rows() != n {
		return fmt.Errorf("forward: %d tokens for %d rows, expected 1..%d", n, batch.Rows(), s.MaxBatch)
	}
	if nOut > s.maxOut {
		return fmt.Errorf("forward: %d output rows, expected at most %d", nOut, s.maxOut)
	}
	if err := batch.Check(cache.Spec().Pages); err != nil {
		return err
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= m.Config.VocabSize {
			return fmt.Errorf("token id %d is outside the vocabulary (0..%d)", t, m.Config.VocabSize-1)
		}
	}
	b := m.Backend
	s.setRows(n, nOut)
	b.Begin(batch)
	if m.Trace != nil {
		m.Trace.BeginStep(int(batch.Pos[0]), n)
	}

	m.fam.forward(m, s, cache, tokens, batch)
	return nil
}

// head is every family's output: the final RMSNorm, the rows that want
// logits (batch.Out), the output projection, Qwen2's optional output bias
// and Gemma 2's final softcap. A batch whose rows want no logits (a
// prompt chunk) stops before it.
func (m *Model) head(s *State, batch *ml.Batch) {
	if len(batch.Out) == 0 {
		return
	}
	b := m.Backend
	b.RMSNorm(s.xb, s.x, m.OutputNorm, float32(m.Config.NormEps))
	m.trace(-1, "final_norm", s.xb)
	b.Gather(s.last, s.xb, batch.Out)
	b.MatMul(s.Logits, s.last, m.Output)
	if m.OutputBias != nil {
		b.AddBias(s.Logits, m.OutputBias)
	}
	if c := m.Config.FinalSoftcap; c > 0 {
		b.Scale(s.Logits, 1, float32(c))
	}
	m.trace(-1, "logits", s.Logits)
}

// trace records a trace point when tracing is on; otherwise it costs a nil
// check.
func (m *Model) trace(layer int, point string, t ml.Tensor) {
	if m.Trace != nil {
		m.Trace.Record(layer, point, t)
	}
}
