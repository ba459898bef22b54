package quant

import (
	"encoding/binary"
	"unsafe"
)

// Q4_K: super-blocks of 256 values, 144 bytes, as 8 sub-blocks of 32. Each
// sub-block j has a 6-bit scale sc[j] and a 6-bit min m[j], packed into 12
// bytes (see ScaleMinK4). The 128 qs bytes hold 4 groups of 32 bytes; group
// g covers values 64g..64g+63: byte l holds value 64g+l in its low nibble
// (sub-block 2g) and value 64g+32+l in its high nibble (sub-block 2g+1).
// value = (d·sc[j])·q − (dmin·m[j]), each product rounded to float32.
type blockQ4_K struct {
	d      uint16     // super-block scale for the scales, binary16
	dmin   uint16     // super-block scale for the mins, binary16
	scales [12]uint8  // 8 scales and 8 mins, 6 bits each
	qs     [128]uint8 // nibbles
}

const blockQ4_KSize = 144

var _ = [1]struct{}{}[unsafe.Sizeof(blockQ4_K{})-blockQ4_KSize]

// Byte offsets inside a Q4_K block.
const (
	Q4_KOffScales = int(unsafe.Offsetof(blockQ4_K{}.scales))
	Q4_KOffQs     = int(unsafe.Offsetof(blockQ4_K{}.qs))
)

// ScaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) from
// the 12 packed bytes q of a Q4_K or Q5_K block (ggml's get_scale_min_k4).
// Bytes 0-3 hold sc[0..3] in their low 6 bits, bytes 4-7 m[0..3]; bytes
// 8-11 hold the low 4 bits of sc[4..7] (low nibble) and m[4..7] (high
// nibble), whose top 2 bits sit in the top 2 bits of bytes 0-3 and 4-7.
func ScaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

func dequantQ4_K(dst []float32, src []byte) {
	for i := 0; i < len(dst)/QK_K; i++ {
		b := src[i*blockQ4_KSize : (i+1)*blockQ4_KSize]
		d := F16ToF32(binary.LittleEndian.Uint16(b[0:]))
		dmin := F16ToF32(binary.LittleEndian.Uint16(b[2:]))
		scales := b[Q4_KOffScales : Q4_KOffScales+12]
		y := dst[i*QK_K : (i+1)*QK_K]
		for g := 0; g < 4; g++ {
			q := b[Q4_KOffQs+32*g : Q4_KOffQs+32*g+32]
			sc, m := ScaleMinK4(2*g, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = ScaleMinK4(2*g+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			for l := 0; l < 32; l++ {
				// float32() forbids fusing into an FMA: ggml rounds twice.
				y[64*g+l] = float32(d1*float32(q[l]&0xf)) - m1
				y[64*g+32+l] = float32(d2*float32(q[l]>>4)) - m2
			}
		}
	}
}

func dotRefQ4_K(row []byte, x []float32) float64 {
	return dotBlocks(row, x, QK_K, blockQ4_KSize, dequantQ4_K)
}
