package quant

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Q8_K: super-blocks of 256 values, 292 bytes: a float32 scale, 256 int8
// quants and the sums of each run of 16 quants. ggml uses it only for
// activations (the other operand of K-quant integer dot products); GRETA's
// CPU batch kernels do the same. value = d·q.
type blockQ8_K struct {
	d     float32   // scale (float32, not binary16)
	qs    [256]int8 // quants
	bsums [16]int16 // bsums[j] = Σ qs[16j..16j+15]
}

const blockQ8_KSize = 292

var _ = [1]struct{}{}[unsafe.Sizeof(blockQ8_K{})-blockQ8_KSize]

// Byte offsets inside a Q8_K block.
const (
	Q8_KOffQs    = int(unsafe.Offsetof(blockQ8_K{}.qs))
	Q8_KOffBsums = int(unsafe.Offsetof(blockQ8_K{}.bsums))
)

func dequantQ8_K(dst []float32, src []byte) {
	for i := 0; i < len(dst)/QK_K; i++ {
		b := src[i*blockQ8_KSize : (i+1)*blockQ8_KSize]
		d := math.Float32frombits(binary.LittleEndian.Uint32(b))
		for j := range QK_K {
			dst[i*QK_K+j] = d * float32(int8(b[Q8_KOffQs+j]))
		}
	}
}

func dotRefQ8_K(row []byte, x []float32) float64 {
	return dotBlocks(row, x, QK_K, blockQ8_KSize, dequantQ8_K)
}

// QuantizeQ8_K writes len(src)/256 Q8_K blocks to dst as ggml's
// quantize_row_q8_K_ref does: iscale = −127/max (max the value of largest
// magnitude), q = min(127, round-half-even(iscale·x)), d = 1/iscale.
func QuantizeQ8_K(dst []byte, src []float32) {
	if len(src)%QK_K != 0 || len(dst) < len(src)/QK_K*blockQ8_KSize {
		panic("quant: QuantizeQ8_K: bad sizes")
	}
	for i := 0; i < len(src)/QK_K; i++ {
		x := src[i*QK_K : (i+1)*QK_K]
		b := dst[i*blockQ8_KSize : (i+1)*blockQ8_KSize]
		var amax, mx float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, mx = a, v
			}
		}
		if amax == 0 {
			clear(b)
			continue
		}
		iscale := -127 / mx
		for j, v := range x {
			b[Q8_KOffQs+j] = byte(int8(min(127, int(math.RoundToEven(float64(float32(iscale*v)))))))
		}
		for j := range 16 {
			s := 0
			for _, q := range b[Q8_KOffQs+16*j : Q8_KOffQs+16*j+16] {
				s += int(int8(q))
			}
			binary.LittleEndian.PutUint16(b[Q8_KOffBsums+2*j:], uint16(int16(s)))
		}
		binary.LittleEndian.PutUint32(b, math.Float32bits(1/iscale))
	}
}
