package quant

import (
	"encoding/binary"
	"math"
)

// F32: one little-endian IEEE-754 binary32 per value, 4 bytes, no blocks.

func dequantF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dotRefF32(row []byte, x []float32) float64 {
	var sum float64
	for i := range x {
		w := math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))
		sum += float64(w) * float64(x[i])
	}
	return sum
}
