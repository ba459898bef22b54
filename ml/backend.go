// Package ml holds what the model code and the backends share: the Backend
// interface, a small coarse op set in the manner of llama2.c's forward(),
// and the parameters of rope and attention.
//
// Shapes: an activation Tensor holds Rows vectors of Cols values, each
// vector contiguous (GGUF order [Cols, Rows], innermost first). Rows is the
// number of tokens in flight, from any number of sequences (a Batch).
// A weight matrix of GGUF shape [cols, rows] maps a vector of cols values
// to one of rows values.
package ml

import (
	"fmt"

	"greta/gguf"
)

// Tensor is an activation buffer on a backend: float32 on cpu and cuda,
// float64 on ref. Its row count can shrink and grow up to the capacity it
// was made with, so one preallocated buffer serves prefill and decode.
// Its rows are the rows of the current Batch (see Backend.Begin), or the
// Batch's Out rows for the tensors after the final gather.
type Tensor interface {
	Cols() int
	Rows() int
	SetRows(n int) // 0 < n ≤ the capacity given to NewTensor
}

// Weight is a model tensor as the backend holds it (quantized as in the
// file, unless the backend chose otherwise at load).
type Weight interface {
	Type() gguf.Type
	Shape() []int64 // innermost first
}

// WeightData is a model tensor as read from the file.
type WeightData struct {
	Name  string
	Type  gguf.Type
	Shape []int64 // innermost first
	Data  []byte  // raw blocks, usually memory-mapped
}

// KVCache is a pool of pages holding the keys and values of every layer
// (KVSpec). Which page belongs to which sequence is the engine's business;
// a Batch names the pages of its sequences.
type KVCache interface {
	Spec() KVSpec
}

// Backend runs the ops of a forward pass. Each op works on all rows of its
// tensors; shapes must agree, and a backend may panic on a mismatch, which is
// a bug in the model code, never a property of the input file.
type Backend interface {
	Name() string   // "cpu", "ref", "cuda"
	Device() string // e.g. "NVIDIA H100 80GB HBM3"
	DType() string  // activation dtype: "f32" or "f64"

	LoadWeight(w WeightData) (Weight, error)
	NewTensor(cols, rows int) Tensor
	NewKVCache(spec KVSpec) (KVCache, error)

	// Begin describes the rows of the ops that follow, until the next
	// Begin: their positions, sequences, pages and roles. b stays valid and
	// unchanged until then.
	Begin(b *Batch)

	// Embed writes row i of dst = row tokens[i] of table (dequantized).
	Embed(dst Tensor, table Weight, tokens []int32)
	// RMSNorm writes dst = x / sqrt(mean(x²) + eps) ⊙ w, row by row. When w
	// is shorter than a row (Qwen3's and Gemma 3's per-head norms of q and
	// k), each of the row's len(w)-long segments is normalized on its own.
	// dst may be x.
	RMSNorm(dst, x Tensor, w Weight, eps float32)
	// RMSNormAdd adds RMSNorm(x)·w to resid, row by row: Gemma's norms after
	// the attention and the feed-forward, fused with the residual add they
	// feed.
	RMSNormAdd(resid, x Tensor, w Weight, eps float32)
	// MatMul writes dst[r] = W · x[r] for every row r.
	MatMul(dst, x Tensor, w Weight)
	// MatMulAdd writes dst[r] = W · x[r] and then adds it to resid[r]:
	// the output projections, fused with the residual add they feed.
	MatMulAdd(dst, resid, x Tensor, w Weight)
	// AddBias adds the vector b to every row of x (Qwen2's q, k and v
	// biases).
	AddBias(x Tensor, b Weight)
	// GateUp writes dst[r] = silu(Wgate · x[r]) ⊙ (Wup · x[r]): SwiGLU.
	GateUp(dst, x Tensor, gate, up Weight)
	// GeGLU writes dst[r] = gelu(Wgate · x[r]) ⊙ (Wup · x[r]), with the tanh
	// approximation of GELU (Gemma's feed-forward).
	GeGLU(dst, x Tensor, gate, up Weight)
	// Scale multiplies x by s and then, when softcap > 0, caps it softly:
	// x = softcap·tanh(x/softcap) (Gemma's embedding scale and final logit
	// softcapping).
	Scale(x Tensor, s, softcap float32)
	// Rope rotates the heads of x in place, row i at the batch's Pos[i].
	Rope(x Tensor, r *Rope)
	// Attention stores row i of k and v at the batch's position of row i
	// in layer's pages, then writes into dst causal grouped-query attention
	// of q's row i over positions 0..Pos[i] of its sequence (only the last
	// a.Window of them with a sliding window).
	Attention(dst, q, k, v Tensor, cache KVCache, layer int, a *Attn)
	// Gather writes row i of dst = row rows[i] of src.
	Gather(dst, src Tensor, rows []int32)
	// Argmax writes the index of each row's largest value (the first on ties).
	Argmax(x Tensor, dst []int32)
	// TopK selects, for every row t.Rows[i] of x, its t.K[i] largest values
	// and reads the columns t.Gather[i], all rows in one pass and one copy
	// to the host, so that sampling a step's rows needs no copy of their
	// logits (see TopK).
	TopK(x Tensor, t *TopK)
	// Read copies x to the host as float32, row-major.
	Read(x Tensor, dst []float32)
	Close() error
}

// Rope holds everything rope needs, computed once from the config.
// Pair i of a head at position p rotates by the angle p·PosScale·Freqs[i].
// In ggml's normal mode (Llama) pair i is values 2i and 2i+1; in NEOX mode
// (Qwen, Gemma, Phi-3) it is values i and i+len(Freqs). Dimensions past
// 2·len(Freqs) are left as they are (partial rotary: rope_dim < head_dim).
type Rope struct {
	HeadDim  int
	Freqs    []float64 // per pair: base^(−2i/rope_dim) / freq_factor[i]
	PosScale float64   // 1, or 1/factor for linear scaling
	Neox     bool      // NEOX mode: pairs (i, i+rope_dim/2)
}

// Attn holds the head layout of attention and what shapes its scores.
type Attn struct {
	NHeads, NKVHeads, HeadDim int
	Scale                     float64 // score = Scale·q·k, usually 1/sqrt(HeadDim)
	// Window, when > 0, lets the query at position p see only positions
	// p−Window+1..p (llama.cpp's standard sliding window, n_swa).
	Window int
	// Softcap, when > 0, caps every score softly before the softmax:
	// Softcap·tanh(score/Softcap) (Gemma 2).
	Softcap float64
}

// TopK asks Backend.TopK for candidates from some rows of a tensor: what a
// sampler needs of a step's logits rows instead of the rows themselves.
//
// Row i's entries start at entry Σ_{j<i} (K[j] + len(Gather[j])) of IDs
// and Vals: first its K[i] largest values with their columns, largest
// first and the lower column first on ties (exactly TopKHost's order),
// then the values at the columns Gather[i], in that order (IDs repeats
// the columns). The gathered values let a sampler penalize tokens that
// may lie outside the selected ones (sample.Sampler.Want says why).
type TopK struct {
	Rows   []int32   // rows of x
	K      []int32   // per row: 1 ≤ K[i] ≤ Cols
	Gather [][]int32 // per row, columns to read as well (nil or empty: none)

	// The results, resized by Backend.TopK to Len() (their capacity is
	// reused from call to call).
	IDs  []int32
	Vals []float32
}

// Len is the number of entries the request returns.
func (t *TopK) Len() int {
	n := 0
	for i, k := range t.K {
		n += int(k)
		if i < len(t.Gather) {
			n += len(t.Gather[i])
		}
	}
	return n
}

// Gathered is the columns gathered for row i (nil when none).
func (t *TopK) Gathered(i int) []int32 {
	if i < len(t.Gather) {
		return t.Gather[i]
	}
	return nil
}

// Check panics unless t fits a tensor of rows×cols (the shape errors the
// backends report), and sizes IDs and Vals to Len().
func (t *TopK) Check(rows, cols int) {
	if len(t.K) != len(t.Rows) || len(t.Gather) > len(t.Rows) {
		panic(fmt.Sprintf("TopK: %d rows, %d counts, %d gather lists", len(t.Rows), len(t.K), len(t.Gather)))
	}
	for i, r := range t.Rows {
		if r < 0 || int(r) >= rows || t.K[i] < 1 || int(t.K[i]) > cols {
			panic(fmt.Sprintf("TopK: k %d of row %d of a [%d,%d] tensor", t.K[i], r, cols, rows))
		}
		for _, c := range t.Gathered(i) {
			if c < 0 || int(c) >= cols {
				panic(fmt.Sprintf("TopK: gather column %d of a row of %d", c, cols))
			}
		}
	}
	n := t.Len()
	if cap(t.IDs) < n {
		t.IDs, t.Vals = make([]int32, n), make([]float32, n)
	}
	t.IDs, t.Vals = t.IDs[:n], t.Vals[:n]
}

// TopKRows is Backend.TopK over rows held on the host (row(r) returns row
// r of the tensor): TopKHost a row. Backends whose rows live in host
// memory use it.
func TopKRows(t *TopK, rows, cols int, row func(r int) []float32) {
	t.Check(rows, cols)
	e := 0
	for i, r := range t.Rows {
		x, k := row(int(r)), int(t.K[i])
		TopKHost(x, k, t.IDs[e:e+k], t.Vals[e:e+k])
		e += k
		for _, c := range t.Gathered(i) {
			t.IDs[e], t.Vals[e] = c, x[c]
			e++
		}
	}
}

// TopKHost is TopK over a row held on the host: a heap of k entries,
// O(n log k). Backends whose rows live in host memory use it.
func TopKHost(row []float32, k int, ids []int32, vals []float32) {
	k = min(k, len(row))
	n := 0                         // heap of the n best so far, worst at the root
	worse := func(i, j int) bool { // entry i ranks below entry j
		if vals[i] != vals[j] {
			return vals[i] < vals[j]
		}
		return ids[i] > ids[j]
	}
	down := func(i int) {
		for {
			l, m := 2*i+1, i
			if l < n && worse(l, m) {
				m = l
			}
			if r := l + 1; r < n && worse(r, m) {
				m = r
			}
			if m == i {
				return
			}
			ids[i], ids[m], vals[i], vals[m] = ids[m], ids[i], vals[m], vals[i]
			i = m
		}
	}
	for c, v := range row {
		if n < k {
			ids[n], vals[n] = int32(c), v
			n++
			for i := n - 1; i > 0; {
				p := (i - 1) / 2
				if !worse(i, p) {
					break
				}
				ids[i], ids[p], vals[i], vals[p] = ids[p], ids[i], vals[p], vals[i]
				i = p
			}
			continue
		}
		if v > vals[0] { // ids only grow, so an equal value never displaces
			ids[0], vals[0] = int32(c), v
			down(0)
		}
	}
	// Pop the worst to the end: the slice ends sorted best first.
	for n > 1 {
		n--
		ids[0], ids[n], vals[0], vals[n] = ids[n], ids[0], vals[n], vals[0]
		down(0)
	}
}
