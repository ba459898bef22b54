package quant

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Q8_0: blocks of 32 values, 34 bytes. Value j of a block is qs[j]·d.
type blockQ8_0 struct {
	d  uint16   // scale, binary16
	qs [32]int8 // quants
}

const (
	QK8_0         = 32
	blockQ8_0Size = 34
)

// Compile-time size assertion: the index is out of range (too big) or the
// constant overflows (too small) unless the struct is exactly 34 bytes.
var _ = [1]struct{}{}[unsafe.Sizeof(blockQ8_0{})-blockQ8_0Size]

func dequantQ8_0(dst []float32, src []byte) {
	for i := 0; i < len(dst)/QK8_0; i++ {
		b := src[i*blockQ8_0Size : (i+1)*blockQ8_0Size]
		d := F16ToF32(binary.LittleEndian.Uint16(b))
		y := dst[i*QK8_0 : (i+1)*QK8_0]
		for j := range y {
			y[j] = float32(int8(b[2+j])) * d
		}
	}
}

func dotRefQ8_0(row []byte, x []float32) float64 {
	return dotBlocks(row, x, QK8_0, blockQ8_0Size, dequantQ8_0)
}

// QuantizeQ8_0 writes len(src)/32 Q8_0 blocks to dst, bit-exact with
// ggml's quantize_row_q8_0_ref (which llama-quantize uses for Q8_0):
// d = amax/127 rounded to binary16, q = roundf(x·(1/d)) with the float32
// d before rounding, ties away from zero. len(src) must be a multiple of 32.
func QuantizeQ8_0(dst []byte, src []float32) {
	if len(src)%QK8_0 != 0 || len(dst) < len(src)/QK8_0*blockQ8_0Size {
		panic("quant: QuantizeQ8_0: bad sizes")
	}
	for i := 0; i < len(src)/QK8_0; i++ {
		x := src[i*QK8_0 : (i+1)*QK8_0]
		b := dst[i*blockQ8_0Size : (i+1)*blockQ8_0Size]
		var amax float32
		for _, v := range x {
			a := float32(math.Abs(float64(v)))
			if !(amax > a) { // C: MAX(amax, fabsf(v))
				amax = a
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(b, F32ToF16(d))
		for j, v := range x {
			b[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
		}
	}
}
