package quant

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Q4_0: blocks of 32 values, 18 bytes. Byte j of qs holds value j in its
// low nibble and value j+16 in its high nibble; value = (nibble-8)·d.
type blockQ4_0 struct {
	d  uint16    // scale, binary16
	qs [16]uint8 // nibbles
}

const (
	QK4_0         = 32
	blockQ4_0Size = 18
)

var _ = [1]struct{}{}[unsafe.Sizeof(blockQ4_0{})-blockQ4_0Size]

func dequantQ4_0(dst []float32, src []byte) {
	for i := 0; i < len(dst)/QK4_0; i++ {
		b := src[i*blockQ4_0Size : (i+1)*blockQ4_0Size]
		d := F16ToF32(binary.LittleEndian.Uint16(b))
		y := dst[i*QK4_0 : (i+1)*QK4_0]
		for j := 0; j < 16; j++ {
			q := b[2+j]
			y[j] = float32(int(q&0xf)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
	}
}

func dotRefQ4_0(row []byte, x []float32) float64 {
	return dotBlocks(row, x, QK4_0, blockQ4_0Size, dequantQ4_0)
}

// QuantizeQ4_0 writes len(src)/32 Q4_0 blocks to dst, bit-exact with
// ggml's quantize_row_q4_0_ref (llama-quantize's Q4_0 without an importance
// matrix): d = max/-8 where max is the value of largest magnitude (the first
// one on ties), q = min(15, trunc(x·(1/d) + 8.5)). len(src) must be a
// multiple of 32.
func QuantizeQ4_0(dst []byte, src []float32) {
	if len(src)%QK4_0 != 0 || len(dst) < len(src)/QK4_0*blockQ4_0Size {
		panic("quant: QuantizeQ4_0: bad sizes")
	}
	for i := 0; i < len(src)/QK4_0; i++ {
		x := src[i*QK4_0 : (i+1)*QK4_0]
		b := dst[i*blockQ4_0Size : (i+1)*blockQ4_0Size]
		var amax, mx float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); amax < a {
				amax, mx = a, v
			}
		}
		d := mx / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(b, F32ToF16(d))
		for j := 0; j < 16; j++ {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			// C converts float to int8_t, truncating toward zero.
			xi0 := uint8(min(15, int(int8(float32(x0+8.5)))))
			xi1 := uint8(min(15, int(int8(float32(x1+8.5)))))
			b[2+j] = xi0 | xi1<<4
		}
	}
}
