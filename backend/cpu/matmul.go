package cpu

import (
	"fmt"

	"greta/gguf"
	"greta/quant"
)

// Matrix is a weight matrix in one of quant's formats. In GGUF order its
// shape is [Cols, Rows]: Rows rows of Cols values, each row stored
// contiguously as Type.RowBytes(Cols) bytes.
type Matrix struct {
	Type gguf.Type
	Cols int
	Rows int
	Data []byte
}

// Activations chooses how MatMul feeds activations to quantized weights.
type Activations int

const (
	// ActAuto, with the SIMD kernels, uses 15-bit activations for a
	// single vector (decode) times K-quant weights (error close to float32,
	// ~1.5× faster than float32 there; with the VNNI assembly, at the
	// memory bandwidth), float32 for a single vector times other types, and
	// 8-bit activations for batches (prefill), the fastest. The pure-Go build keeps float32 everywhere: its integer
	// kernels are not faster than its float ones.
	ActAuto Activations = iota
	// ActF32 keeps float32 activations: each weight is dequantized exactly
	// and multiplied in float32. Most accurate; compute-bound on quantized
	// weights.
	ActF32
	// ActQ8 quantizes activations to 8 bits (Q8_K-like blocks of 256 for
	// K-quants, blocks of 32 with a float32 scale for Q4_0/Q8_0) and uses
	// integer dot products, as llama.cpp does. About 2-3× faster per
	// weight, at an NMSE cost reported in docs/QUANT.md.
	ActQ8
	// ActQ15 quantizes the activations of K-quant weights (Q4_K, Q5_K,
	// Q6_K) to 15-bit integers held in two int8 planes and runs the integer
	// kernels twice: error close to float32 (NMSE ≈ 1e-9 per product), at
	// about 1.4× the work of ActQ8. Other types keep float32.
	ActQ15
)

func (a Activations) String() string {
	switch a {
	case ActAuto:
		return "auto"
	case ActF32:
		return "f32"
	case ActQ8:
		return "q8"
	case ActQ15:
		return "q15"
	}
	return fmt.Sprintf("Activations(%d)", int(a))
}

// actMode is what MatMul does with the activations of one call.
type actMode int

const (
	modeF32 actMode = iota
	modeQ8
	modeQ15
)

// mode returns how MatMul treats the activations for weights of type t and
// n vectors, with SIMD kernels or not. F32, F16 and BF16 weights always
// take float32 activations; ActQ15 applies to the K-quants only (Q8_0 and
// Q4_0 keep float32 under it).
func (a Activations) mode(t gguf.Type, n int, simd bool) actMode {
	kquant := t == gguf.Q4_K || t == gguf.Q5_K || t == gguf.Q6_K
	switch t {
	case gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
	default:
		return modeF32
	}
	switch a {
	case ActQ8:
		return modeQ8
	case ActQ15:
		if kquant {
			return modeQ15
		}
		return modeF32
	case ActAuto:
		switch {
		case !simd:
			return modeF32
		case n > 1:
			return modeQ8
		case kquant:
			return modeQ15
		}
	}
	return modeF32
}

// Check returns an error if m is not a matrix MatMul can multiply.
func (m *Matrix) Check() error {
	if !quant.Supported(m.Type) || m.Type == gguf.Q8_K {
		return fmt.Errorf("matrix type %s is not supported by the CPU matmul", m.Type)
	}
	if m.Rows <= 0 || m.Cols <= 0 || m.Cols%m.Type.BlockSize() != 0 {
		return fmt.Errorf("matrix %s [%d, %d]: columns must be a positive multiple of %d", m.Type, m.Cols, m.Rows, m.Type.BlockSize())
	}
	if need := m.Rows * m.Type.RowBytes(m.Cols); len(m.Data) < need {
		return fmt.Errorf("matrix %s [%d, %d]: %d bytes of data, need %d", m.Type, m.Cols, m.Rows, len(m.Data), need)
	}
	return nil
}

// ToQ8_0 returns m re-encoded as Q8_0 (INT8 mode: half the bytes of F16 or
// BF16 and a quarter of F32 per token, at ≈ 2⁻⁹ relative error per weight).
// Matrices of other types, and those whose rows are not a multiple of 32,
// are returned unchanged with converted false.
func ToQ8_0(m *Matrix) (q *Matrix, converted bool, err error) {
	switch m.Type {
	case gguf.F32, gguf.F16, gguf.BF16:
	default:
		return m, false, nil
	}
	if m.Cols%quant.QK8_0 != 0 {
		return m, false, nil
	}
	data, err := quant.Convert(gguf.Q8_0, m.Type, m.Data, m.Rows*m.Cols)
	if err != nil {
		return nil, false, err
	}
	return &Matrix{Type: gguf.Q8_0, Cols: m.Cols, Rows: m.Rows, Data: data}, true, nil
}

// MatMul computes y = x·Wᵀ for n vectors: x is [n][w.Cols] and y is
// [n][w.Rows], both row-major float32. It splits the rows of w into tiles
// run in parallel on the pool and does not allocate once its scratch has
// grown to the largest shape seen. It panics if the shapes disagree (call
// w.Check once at load time for a friendly error).
func (p *Pool) MatMul(y []float32, w *Matrix, x []float32, n int) {
	if n <= 0 {
		return
	}
	rb := w.Type.RowBytes(w.Cols)
	if len(x) < n*w.Cols || len(y) < n*w.Rows || len(w.Data) < w.Rows*rb || w.Cols%w.Type.BlockSize() != 0 {
		panic(fmt.Sprintf("cpu.MatMul: %s [%d, %d] with %d bytes, x %d, y %d, n %d", w.Type, w.Cols, w.Rows, len(w.Data), len(x), len(y), n))
	}
	p.mm.matmul(p, y, w, x, n, p.Act.mode(w.Type, n, p.simd()))
}

// simd reports whether MatMul runs the SIMD kernels.
func (p *Pool) simd() bool { return simdKernels != nil && !p.Generic }
