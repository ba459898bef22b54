package quant

import (
	"encoding/binary"
	"math"
)

// BF16: one little-endian bfloat16 per value, 2 bytes, no blocks: the top
// half of a float32 (1 sign, 8 exponent, 7 mantissa bits). Decoding is a
// shift and exact.

// BF16ToF32 converts a bfloat16 to float32 exactly.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 converts a float32 to bfloat16 with round to nearest, ties to
// even, exactly as ggml_compute_fp32_to_bf16: a NaN becomes a quiet NaN
// (its top bits kept, bit 6 set), subnormals round like any other value.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

func dequantBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func dotRefBF16(row []byte, x []float32) float64 {
	var sum float64
	for i := range x {
		sum += float64(BF16ToF32(binary.LittleEndian.Uint16(row[2*i:]))) * float64(x[i])
	}
	return sum
}
