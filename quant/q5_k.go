package quant

import (
	"encoding/binary"
	"unsafe"
)

// Q5_K: super-blocks of 256 values, 176 bytes: Q4_K's layout plus a fifth
// bit per value. scales are packed as in Q4_K (ScaleMinK4). For group g
// (values 64g..64g+63), qs byte 32g+l gives the low 4 bits of values 64g+l
// (low nibble) and 64g+32+l (high nibble); their fifth bits are bits 2g
// and 2g+1 of qh[l].
// value = (d·sc[j])·q − (dmin·m[j]) with q in 0..31.
type blockQ5_K struct {
	d      uint16     // super-block scale for the scales, binary16
	dmin   uint16     // super-block scale for the mins, binary16
	scales [12]uint8  // 8 scales and 8 mins, 6 bits each
	qh     [32]uint8  // fifth bits
	qs     [128]uint8 // low nibbles
}

const blockQ5_KSize = 176

var _ = [1]struct{}{}[unsafe.Sizeof(blockQ5_K{})-blockQ5_KSize]

// Byte offsets inside a Q5_K block.
const (
	Q5_KOffScales = int(unsafe.Offsetof(blockQ5_K{}.scales))
	Q5_KOffQh     = int(unsafe.Offsetof(blockQ5_K{}.qh))
	Q5_KOffQs     = int(unsafe.Offsetof(blockQ5_K{}.qs))
)

func dequantQ5_K(dst []float32, src []byte) {
	for i := 0; i < len(dst)/QK_K; i++ {
		b := src[i*blockQ5_KSize : (i+1)*blockQ5_KSize]
		d := F16ToF32(binary.LittleEndian.Uint16(b[0:]))
		dmin := F16ToF32(binary.LittleEndian.Uint16(b[2:]))
		scales := b[Q5_KOffScales : Q5_KOffScales+12]
		qh := b[Q5_KOffQh : Q5_KOffQh+32]
		y := dst[i*QK_K : (i+1)*QK_K]
		for g := 0; g < 4; g++ {
			ql := b[Q5_KOffQs+32*g : Q5_KOffQs+32*g+32]
			sc, m := ScaleMinK4(2*g, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = ScaleMinK4(2*g+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			for l := 0; l < 32; l++ {
				q1 := ql[l]&0xf | (qh[l]>>(2*g)&1)<<4
				q2 := ql[l]>>4 | (qh[l]>>(2*g+1)&1)<<4
				y[64*g+l] = float32(d1*float32(q1)) - m1
				y[64*g+32+l] = float32(d2*float32(q2)) - m2
			}
		}
	}
}

func dotRefQ5_K(row []byte, x []float32) float64 {
	return dotBlocks(row, x, QK_K, blockQ5_KSize, dequantQ5_K)
}
