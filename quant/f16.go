package quant

import (
	"encoding/binary"
	"math"
)

// F16: one little-endian IEEE-754 binary16 per value, 2 bytes, no blocks:
// 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. Every binary16
// value is exactly representable in float32, so decoding is exact.

// F16ToF32 converts an IEEE binary16 to float32 exactly. Subnormals become
// normal float32s; infinities and NaNs (payload kept) are preserved.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = man·2^-24. Normalize the mantissa.
		e := uint32(127 - 15 + 1)
		for man&0x400 == 0 {
			man <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// F32ToF16 converts a float32 to IEEE binary16, rounding to nearest with
// ties to even, as the F16C instruction VCVTPS2PH (imm 0) and ggml's
// GGML_FP32_TO_FP16 do. Values beyond the binary16 range become ±Inf;
// those below half the smallest subnormal become ±0. A NaN stays a quiet
// NaN with the top mantissa bits of its payload (as VCVTPS2PH does).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(man>>13)
	}
	e := exp - 127 + 15 // binary16 biased exponent
	if e >= 31 {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Result is subnormal (or zero): in units of 2^-24 the value is
		// m·2^(e-14), m the 24-bit mantissa with its implicit bit.
		if e < -10 {
			return sign
		}
		m := man | 0x800000
		s := uint32(14 - e)
		r := m >> s
		rem := m & (1<<s - 1)
		half := uint32(1) << (s - 1)
		if rem > half || rem == half && r&1 == 1 {
			r++ // may carry into the smallest normal: still the right bits
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && r&1 == 1 {
		r++ // a carry out of the mantissa bumps the exponent; 0x7bff+1 is Inf
	}
	return sign | uint16(r)
}

func dequantF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func dotRefF16(row []byte, x []float32) float64 {
	var sum float64
	for i := range x {
		sum += float64(F16ToF32(binary.LittleEndian.Uint16(row[2*i:]))) * float64(x[i])
	}
	return sum
}
