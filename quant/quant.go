// Package quant holds GRETA's weight formats: one file per ggml block format
// (f32.go, f16.go, bf16.go, q8_0.go, q4_0.go, q4_k.go, q5_k.go, q6_k.go,
// q8_k.go), each with its block layout and a size assertion, a reference
// dequantize that reproduces ggml's float32 values bit for bit, and a
// reference dot product against float32 that accumulates in float64.
//
// These are the readable definitions and the test oracles. The fast kernels
// live in backend/cpu and are tested against this package.
//
// A row of a weight matrix is a run of whole blocks: RowBytes(cols) bytes
// holding cols values. Blocks are little-endian, packed without padding.
package quant

import (
	"encoding/binary"
	"fmt"
	"math"

	"greta/gguf"
)

// QK_K is the number of values in a K-quant super-block.
const QK_K = 256

// format is one row of the format table.
type format struct {
	blockSize int // values per block
	typeSize  int // bytes per block
	// dequant writes len(dst) values decoded from src (whole blocks).
	dequant func(dst []float32, src []byte)
	// dot is the reference dot product of one row with x, in float64.
	dot func(row []byte, x []float32) float64
}

// formats is the one table of supported weight formats. The block sizes
// are checked against the gguf type table in quant_test.go.
var formats = map[gguf.Type]format{
	gguf.F32:  {1, 4, dequantF32, dotRefF32},
	gguf.F16:  {1, 2, dequantF16, dotRefF16},
	gguf.BF16: {1, 2, dequantBF16, dotRefBF16},
	gguf.Q8_0: {QK8_0, blockQ8_0Size, dequantQ8_0, dotRefQ8_0},
	gguf.Q4_0: {QK4_0, blockQ4_0Size, dequantQ4_0, dotRefQ4_0},
	gguf.Q4_K: {QK_K, blockQ4_KSize, dequantQ4_K, dotRefQ4_K},
	gguf.Q5_K: {QK_K, blockQ5_KSize, dequantQ5_K, dotRefQ5_K},
	gguf.Q6_K: {QK_K, blockQ6_KSize, dequantQ6_K, dotRefQ6_K},
	gguf.Q8_K: {QK_K, blockQ8_KSize, dequantQ8_K, dotRefQ8_K},
}

// Supported reports whether t can be dequantized and multiplied.
func Supported(t gguf.Type) bool {
	_, ok := formats[t]
	return ok
}

// Dequantize decodes len(dst) values of type t from src. len(dst) must be
// a multiple of t's block size and src must hold at least that many blocks.
func Dequantize(t gguf.Type, dst []float32, src []byte) error {
	f, ok := formats[t]
	if !ok {
		return fmt.Errorf("quant: dequantize: type %s is not supported", t)
	}
	if len(dst)%f.blockSize != 0 {
		return fmt.Errorf("quant: dequantize %s: %d values is not a multiple of the block size %d", t, len(dst), f.blockSize)
	}
	need := len(dst) / f.blockSize * f.typeSize
	if len(src) < need {
		return fmt.Errorf("quant: dequantize %s: %d values need %d bytes, have %d", t, len(dst), need, len(src))
	}
	f.dequant(dst, src[:need])
	return nil
}

// DotRef returns Σ w[i]·x[i] over one row of type t holding len(x) values,
// with each weight dequantized exactly and the sum taken in float64. It
// panics if t is unsupported or the sizes disagree: it is a test oracle.
func DotRef(t gguf.Type, row []byte, x []float32) float64 {
	f, ok := formats[t]
	if !ok {
		panic(fmt.Sprintf("quant: DotRef: type %s is not supported", t))
	}
	if len(x)%f.blockSize != 0 || len(row) < len(x)/f.blockSize*f.typeSize {
		panic(fmt.Sprintf("quant: DotRef %s: row of %d bytes does not hold %d values", t, len(row), len(x)))
	}
	return f.dot(row, x)
}

// dotBlocks is the shared body of the block formats' reference dots: it
// dequantizes one block at a time into buf and accumulates in float64.
func dotBlocks(row []byte, x []float32, bs, ts int, dequant func(dst []float32, src []byte)) float64 {
	var buf [QK_K]float32
	var sum float64
	for i := 0; i < len(x)/bs; i++ {
		dequant(buf[:bs], row[i*ts:(i+1)*ts])
		for j, w := range buf[:bs] {
			sum += float64(w) * float64(x[i*bs+j])
		}
	}
	return sum
}

// Quantize encodes the values of src as type t into dst, which must hold
// t.RowBytes(len(src)) bytes. It supports the formats GRETA writes: F32,
// F16 and BF16 (round to nearest even), Q8_0 and Q4_0 (bit-exact with
// llama.cpp's reference quantizers) and Q8_K (activations).
func Quantize(t gguf.Type, dst []byte, src []float32) error {
	f, ok := formats[t]
	if !ok || t == gguf.Q4_K || t == gguf.Q5_K || t == gguf.Q6_K {
		return fmt.Errorf("quant: quantize: type %s is not supported (F32, F16, BF16, Q8_0, Q4_0, Q8_K are)", t)
	}
	if len(src)%f.blockSize != 0 {
		return fmt.Errorf("quant: quantize %s: %d values is not a multiple of the block size %d", t, len(src), f.blockSize)
	}
	if need := len(src) / f.blockSize * f.typeSize; len(dst) < need {
		return fmt.Errorf("quant: quantize %s: %d values need %d bytes, have %d", t, len(src), need, len(dst))
	}
	switch t {
	case gguf.F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case gguf.F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case gguf.BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case gguf.Q8_0:
		QuantizeQ8_0(dst, src)
	case gguf.Q4_0:
		QuantizeQ4_0(dst, src)
	case gguf.Q8_K:
		QuantizeQ8_K(dst, src)
	}
	return nil
}

// Convert re-encodes n values of type from, held in src, as type to
// (through float32, row by row of at most 4096 values, so no large
// temporary is made). It is how INT8 mode turns F32/F16/BF16 weights into
// Q8_0 at load time. to must be one Quantize supports.
func Convert(to, from gguf.Type, src []byte, n int) ([]byte, error) {
	ff, ok := formats[from]
	if !ok {
		return nil, fmt.Errorf("quant: convert: type %s is not supported", from)
	}
	ft, ok := formats[to]
	if !ok {
		return nil, fmt.Errorf("quant: convert: type %s is not supported", to)
	}
	chunk := 4096 // a multiple of every block size
	if n%ff.blockSize != 0 || n%ft.blockSize != 0 {
		return nil, fmt.Errorf("quant: convert %s to %s: %d values is not a multiple of both block sizes", from, to, n)
	}
	if len(src) < n/ff.blockSize*ff.typeSize {
		return nil, fmt.Errorf("quant: convert %s: %d values need %d bytes, have %d", from, n, n/ff.blockSize*ff.typeSize, len(src))
	}
	dst := make([]byte, n/ft.blockSize*ft.typeSize)
	buf := make([]float32, min(chunk, n))
	for i := 0; i < n; i += chunk {
		m := min(chunk, n-i)
		if err := Dequantize(from, buf[:m], src[i/ff.blockSize*ff.typeSize:]); err != nil {
			return nil, err
		}
		if err := Quantize(to, dst[i/ft.blockSize*ft.typeSize:], buf[:m]); err != nil {
			return nil, err
		}
	}
	return dst, nil
}
