package llama

import (
	"fmt"

	"greta/ml"
)

// State is the run state of one sequence (llama2.c's RunState): every
// activation buffer and the KV cache, allocated once so that decoding makes
// no allocations. Buffers hold up to MaxBatch rows (tokens).
type State struct {
	MaxBatch int
	Context  int
	Pos      int // tokens in the KV cache

	x      ml.Tensor // [dim, n]        residual stream
	xb     ml.Tensor // [dim, n]        normed input of a sublayer
	xb2    ml.Tensor // [dim, n]        sublayer output before the residual add
	q      ml.Tensor // [n_heads·head_dim, n]
	k      ml.Tensor // [n_kv_heads·head_dim, n]
	v      ml.Tensor // [n_kv_heads·head_dim, n]
	att    ml.Tensor // [n_heads·head_dim, n] attention output before wo
	hb     ml.Tensor // [hidden_dim, n] silu(gate)·up
	last   ml.Tensor // [dim, 1 or n]   final-normed rows that get logits
	Logits ml.Tensor // [vocab, 1 or n]
	cache  ml.KVCache

	allLogits bool
}

// NewState allocates the run state for a context of ctx tokens, processing
// up to maxBatch tokens per forward call. With allLogits, Forward computes
// logits for every row instead of only the last.
func (m *Model) NewState(ctx, maxBatch int, allLogits bool) (*State, error) {
	c, b := m.Config, m.Backend
	if err := m.checkState(ctx, max(maxBatch, 1), allLogits); err != nil {
		return nil, err
	}
	maxBatch = max(1, min(maxBatch, ctx))
	cache, err := b.NewKVCache(c.NLayers, ctx, c.KVDim())
	if err != nil {
		return nil, err
	}
	s := &State{MaxBatch: maxBatch, Context: ctx, cache: cache, allLogits: allLogits}
	qd := c.NHeads * c.HeadDim
	s.x = b.NewTensor(c.Dim, maxBatch)
	s.xb = b.NewTensor(c.Dim, maxBatch)
	s.xb2 = b.NewTensor(c.Dim, maxBatch)
	s.q = b.NewTensor(qd, maxBatch)
	s.k = b.NewTensor(c.KVDim(), maxBatch)
	s.v = b.NewTensor(c.KVDim(), maxBatch)
	s.att = b.NewTensor(qd, maxBatch)
	s.hb = b.NewTensor(c.HiddenDim, maxBatch)
	lr := 1
	if allLogits {
		lr = maxBatch
	}
	s.last = b.NewTensor(c.Dim, lr)
	s.Logits = b.NewTensor(c.VocabSize, lr)
	return s, nil
}

func (s *State) setRows(n int) {
	for _, t := range []ml.Tensor{s.x, s.xb, s.xb2, s.q, s.k, s.v, s.att, s.hb} {
		t.SetRows(n)
	}
	if s.allLogits {
		s.last.SetRows(n)
		s.Logits.SetRows(n)
	}
}

// Forward runs the model over tokens at positions s.Pos, s.Pos+1, ... and
// appends them to the KV cache. It leaves in s.Logits the logits after the
// last token (or after every token, with allLogits). len(tokens) must be at
// most s.MaxBatch and fit in the context.
func (m *Model) Forward(s *State, tokens []int32) error {
	n := len(tokens)
	if n == 0 || n > s.MaxBatch {
		return fmt.Errorf("forward: %d tokens, expected 1..%d", n, s.MaxBatch)
	}
	if s.Pos+n > s.Context {
		return fmt.Errorf("context is full: %d tokens + %d new > context size %d", s.Pos, n, s.Context)
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= m.Config.VocabSize {
			return fmt.Errorf("token id %d is outside the vocabulary (0..%d)", t, m.Config.VocabSize-1)
		}
	}
	c, b, pos := m.Config, m.Backend, s.Pos
	eps := float32(c.NormEps)
	s.setRows(n)
	if m.Trace != nil {
		m.Trace.BeginStep(pos, n)
	}

	b.Embed(s.x, m.TokEmbd, tokens)
	for l := range m.Layers {
		w := &m.Layers[l]
		m.trace(l, "x", s.x)

		// Attention: rmsnorm, q/k/v projections, rope, attention over the
		// cache, output projection added to the residual stream.
		b.RMSNorm(s.xb, s.x, w.AttnNorm, eps)
		m.trace(l, "norm_out", s.xb)
		b.MatMul(s.q, s.xb, w.Wq)
		b.MatMul(s.k, s.xb, w.Wk)
		b.MatMul(s.v, s.xb, w.Wv)
		b.Rope(s.q, pos, &m.Rope)
		b.Rope(s.k, pos, &m.Rope)
		m.trace(l, "q", s.q)
		m.trace(l, "k", s.k)
		m.trace(l, "v", s.v)
		b.Attention(s.att, s.q, s.k, s.v, s.cache, l, pos, &m.Attn)
		m.trace(l, "kqv_out", s.att)
		b.MatMulAdd(s.xb2, s.x, s.att, w.Wo)
		m.trace(l, "attn_out", s.xb2)

		// Feed-forward: rmsnorm, SwiGLU, down projection added to the
		// residual stream.
		b.RMSNorm(s.xb, s.x, w.FFNNorm, eps)
		m.trace(l, "ffn_norm", s.xb)
		b.GateUp(s.hb, s.xb, w.Gate, w.Up)
		b.MatMulAdd(s.xb2, s.x, s.hb, w.Down)
		m.trace(l, "mlp_out", s.xb2)
		m.trace(l, "x_out", s.x)
	}

	b.RMSNorm(s.xb, s.x, m.OutputNorm, eps)
	m.trace(-1, "final_norm", s.xb)
	if s.allLogits {
		b.CopyRows(s.last, s.xb, 0)
	} else {
		b.CopyRows(s.last, s.xb, n-1)
	}
	b.MatMul(s.Logits, s.last, m.Output)
	m.trace(-1, "logits", s.Logits)
	s.Pos += n
	return nil
}

// trace records a trace point when tracing is on; otherwise it costs a nil
// check.
func (m *Model) trace(layer int, point string, t ml.Tensor) {
	if m.Trace != nil {
		m.Trace.Record(layer, point, t)
	}
}
