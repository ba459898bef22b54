package quant

import (
	"encoding/binary"
	"unsafe"
)

// Q6_K: super-blocks of 256 values, 210 bytes, as 16 sub-blocks of 16 with
// a signed 8-bit scale each. Each half h (values 128h..128h+127) uses
// ql[64h..64h+63], qh[32h..32h+31] and scales[8h..8h+7]. For l in 0..31:
//
//	value 128h+l    : low nibble of ql[64h+l]    | bits 0-1 of qh[32h+l] << 4
//	value 128h+32+l : low nibble of ql[64h+32+l] | bits 2-3 of qh[32h+l] << 4
//	value 128h+64+l : high nibble of ql[64h+l]   | bits 4-5 of qh[32h+l] << 4
//	value 128h+96+l : high nibble of ql[64h+32+l]| bits 6-7 of qh[32h+l] << 4
//
// value = (d·scale[v/16])·(q−32), each product rounded to float32.
type blockQ6_K struct {
	ql     [128]uint8 // low 4 bits
	qh     [64]uint8  // high 2 bits
	scales [16]int8   // sub-block scales
	d      uint16     // super-block scale, binary16
}

const blockQ6_KSize = 210

var _ = [1]struct{}{}[unsafe.Sizeof(blockQ6_K{})-blockQ6_KSize]

// Byte offsets inside a Q6_K block.
const (
	Q6_KOffQl     = int(unsafe.Offsetof(blockQ6_K{}.ql))
	Q6_KOffQh     = int(unsafe.Offsetof(blockQ6_K{}.qh))
	Q6_KOffScales = int(unsafe.Offsetof(blockQ6_K{}.scales))
	Q6_KOffD      = int(unsafe.Offsetof(blockQ6_K{}.d))
)

func dequantQ6_K(dst []float32, src []byte) {
	for i := 0; i < len(dst)/QK_K; i++ {
		b := src[i*blockQ6_KSize : (i+1)*blockQ6_KSize]
		d := F16ToF32(binary.LittleEndian.Uint16(b[Q6_KOffD:]))
		y := dst[i*QK_K : (i+1)*QK_K]
		for h := 0; h < 2; h++ {
			ql := b[Q6_KOffQl+64*h : Q6_KOffQl+64*h+64]
			qh := b[Q6_KOffQh+32*h : Q6_KOffQh+32*h+32]
			sc := b[Q6_KOffScales+8*h : Q6_KOffScales+8*h+8]
			yh := y[128*h : 128*h+128]
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				yh[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				yh[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				yh[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				yh[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
}

func dotRefQ6_K(row []byte, x []float32) float64 {
	return dotBlocks(row, x, QK_K, blockQ6_KSize, dequantQ6_K)
}
